//! The coarse-to-fine schedule as data (see `engine::coarse` for what it does to a run):
//! `FACTOR:UNTIL[,FACTOR:UNTIL…]` — "4:40,2:80" moves 4×4 token blocks for iterations
//! 0–39, 2×2 blocks for 40–79 and single tokens after.

use serde::{Deserialize, Serialize};

/// One stage of the schedule: blocks of `factor × factor` tokens before iteration `until`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoarseStage {
    pub factor: usize,
    pub until: usize,
}

/// Parses "4:40,2:80" (an empty string or "none" is no schedule).
pub fn parse_schedule(text: &str) -> Result<Vec<CoarseStage>, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("none") {
        return Ok(Vec::new());
    }
    let stages = text
        .split(',')
        .map(|part| {
            let bad = || format!("coarse stage {:?} is not FACTOR:UNTIL (e.g. 4:40)", part.trim());
            let (f, u) = part.trim().split_once(':').ok_or_else(bad)?;
            let factor = f.trim().parse::<usize>().map_err(|_| bad())?;
            let until = u.trim().parse::<usize>().map_err(|_| bad())?;
            Ok(CoarseStage { factor, until })
        })
        .collect::<Result<Vec<_>, String>>()?;
    validate_schedule(&stages)?;
    Ok(stages)
}

/// Writes a schedule the way [`parse_schedule`] reads it.
pub fn format_schedule(stages: &[CoarseStage]) -> String {
    stages.iter().map(|s| format!("{}:{}", s.factor, s.until)).collect::<Vec<_>>().join(",")
}

/// Factors from 1 to 64; stage ends strictly increasing.
pub fn validate_schedule(stages: &[CoarseStage]) -> Result<(), String> {
    let mut last = 0;
    for s in stages {
        if !(1..=64).contains(&s.factor) {
            return Err(format!("coarse factor {} is out of range (1 to 64 tokens)", s.factor));
        }
        if s.until <= last {
            return Err(format!(
                "coarse stages must end at increasing iterations above 0 (got {} after {last})",
                s.until
            ));
        }
        last = s.until;
    }
    Ok(())
}

/// The block size at iteration `it` (1 when no stage covers it).
pub fn factor_at(stages: &[CoarseStage], it: usize) -> usize {
    stages.iter().find(|s| it < s.until).map_or(1, |s| s.factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_format_and_refuse_nonsense() {
        let s = parse_schedule("4:40, 2:80").unwrap();
        assert_eq!(s, vec![CoarseStage { factor: 4, until: 40 }, CoarseStage { factor: 2, until: 80 }]);
        assert_eq!(format_schedule(&s), "4:40,2:80");
        assert!(parse_schedule("none").unwrap().is_empty());
        assert!(parse_schedule("").unwrap().is_empty());
        for bad in ["4", "4:x", "0:10", "65:10", "4:40,2:40", "4:0", "4:40;2:80"] {
            let e = parse_schedule(bad).unwrap_err();
            assert!(!e.contains('\n') && !e.is_empty(), "{bad}: {e}");
        }
        assert_eq!(factor_at(&s, 0), 4);
        assert_eq!(factor_at(&s, 39), 4);
        assert_eq!(factor_at(&s, 40), 2);
        assert_eq!(factor_at(&s, 79), 2);
        assert_eq!(factor_at(&s, 80), 1);
        assert_eq!(factor_at(&[], 0), 1);
    }
}
