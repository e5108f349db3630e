//! Drawing one code from a row of logits: temperature, top-k and top-p (nucleus)
//! filtering, then an inverse-CDF draw from a uniform number the caller supplies, so
//! the caller's seeded generator decides every draw.

use crate::settings::Sampling;

/// The code drawn from `logits` by `s` with the uniform number `u` in `[0, 1)`.
pub fn pick(s: &Sampling, logits: &[f32], u: f64) -> u32 {
    let argmax = || {
        let best =
            logits.iter().enumerate().fold((0, f32::NEG_INFINITY), |b, (i, &v)| if v > b.1 { (i, v) } else { b });
        u32::try_from(best.0).unwrap_or(0)
    };
    if s.temperature == 0.0 || logits.len() < 2 {
        return argmax();
    }
    // Candidates, likeliest first; ties broken by index so the order is total. Codes
    // below a billionth of the likeliest's probability are left out first (together they
    // hold at most n·1e-9 of the mass).
    let max = logits.iter().copied().filter(|v| v.is_finite()).fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return 0;
    }
    let floor = f64::from(max) - s.temperature * 1e9f64.ln();
    let mut order: Vec<usize> =
        (0..logits.len()).filter(|&i| logits[i].is_finite() && f64::from(logits[i]) >= floor).collect();
    let likelier = |a: &usize, b: &usize| logits[*b].total_cmp(&logits[*a]).then(a.cmp(b));
    if s.top_k > 0 && s.top_k < order.len() {
        order.select_nth_unstable_by(s.top_k - 1, likelier);
        order.truncate(s.top_k);
    }
    let top = f64::from(max);
    let weight = |i: usize| ((f64::from(logits[i]) - top) / s.temperature).exp();
    if s.top_p < 1.0 {
        // The nucleus, likeliest first: only as much of the order is sorted as it takes
        // to reach top-p (sorted blocks of growing size, each the likeliest of the rest).
        let total: f64 = order.iter().map(|&i| weight(i)).sum();
        let (mut acc, mut done, mut block) = (0.0, 0, 16);
        let mut keep = order.len();
        'nucleus: while done < order.len() {
            let n = block.min(order.len() - done);
            let rest = &mut order[done..];
            if rest.len() > n {
                rest.select_nth_unstable_by(n - 1, likelier);
            }
            rest[..n].sort_unstable_by(likelier);
            for (j, &code) in order.iter().enumerate().skip(done).take(n) {
                acc += weight(code) / total;
                if acc >= s.top_p {
                    keep = j + 1;
                    break 'nucleus;
                }
            }
            done += n;
            block *= 2;
        }
        order.truncate(keep);
    } else {
        order.sort_unstable_by(likelier);
    }
    let probs: Vec<f64> = order.iter().map(|&i| weight(i)).collect();
    let total: f64 = probs.iter().sum();
    let mut target = u.clamp(0.0, 1.0) * total;
    for (n, p) in probs.iter().enumerate() {
        if target < *p {
            return u32::try_from(order[n]).unwrap_or(0);
        }
        target -= p;
    }
    u32::try_from(order[order.len() - 1]).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Sampling {
        Sampling { temperature: 1.0, top_k: 0, top_p: 1.0 }
    }

    #[test]
    fn zero_temperature_is_greedy() {
        let s = Sampling { temperature: 0.0, ..plain() };
        assert_eq!(pick(&s, &[0.1, 3.0, 2.9], 0.99), 1);
    }

    #[test]
    fn top_k_and_top_p_cut_the_tail() {
        let logits = [0.0f32, 2.0, 1.0, -1.0];
        // top-k 2 keeps codes 1 and 2: no draw reaches 0 or 3.
        let k = Sampling { top_k: 2, ..plain() };
        for i in 0..100 {
            let c = pick(&k, &logits, f64::from(i) / 100.0);
            assert!(c == 1 || c == 2, "{c}");
        }
        // softmax: 1 → 0.644, 2 → 0.237: top-p 0.6 keeps code 1 alone.
        let p = Sampling { top_p: 0.6, ..plain() };
        for i in 0..100 {
            assert_eq!(pick(&p, &logits, f64::from(i) / 100.0), 1);
        }
    }

    #[test]
    fn draws_follow_the_softmax() {
        let logits = [0.0f32, (3.0f32).ln()];
        let s = plain();
        // p = [0.25, 0.75], code 1 first in the order: u < 0.75 draws it.
        assert_eq!(pick(&s, &logits, 0.74), 1);
        assert_eq!(pick(&s, &logits, 0.76), 0);
        let hot = Sampling { temperature: 1e6, ..plain() };
        assert_eq!(pick(&hot, &logits, 0.49), 1);
        assert_eq!(pick(&hot, &logits, 0.51), 0);
    }

    /// The definition: sort every candidate, cut to top-k, then to top-p, then draw.
    fn by_full_sort(s: &Sampling, logits: &[f32], u: f64) -> u32 {
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
        if s.top_k > 0 {
            order.truncate(s.top_k);
        }
        let top = f64::from(logits[order[0]]);
        let mut probs: Vec<f64> = order.iter().map(|&i| ((f64::from(logits[i]) - top) / s.temperature).exp()).collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        let mut acc = 0.0;
        let keep = probs.iter().position(|p| {
            acc += p;
            acc >= s.top_p
        });
        let keep = keep.map_or(probs.len(), |k| k + 1);
        let mut target = u * probs[..keep].iter().sum::<f64>();
        for n in 0..keep {
            if target < probs[n] {
                return order[n] as u32;
            }
            target -= probs[n];
        }
        order[keep - 1] as u32
    }

    #[test]
    fn partial_sorting_draws_what_a_full_sort_draws() {
        // A xorshift generator: uniform numbers in [0, 1).
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let mut uniform = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64
        };
        let mut differ = 0;
        for case in 0..3000 {
            let n = [3, 40, 2048][case % 3];
            let spread = [0.5, 3.0, 8.0][(case / 3) % 3];
            let logits: Vec<f32> = (0..n).map(|_| (uniform() * spread * 2.0 - spread) as f32).collect();
            let s = Sampling {
                temperature: [1.0, 0.7, 0.4][case % 3],
                top_k: [0, 0, 5, 300][case % 4],
                top_p: [0.9, 1.0, 0.5, 0.97][(case / 2) % 4],
            };
            let u = uniform();
            if pick(&s, &logits, u) != by_full_sort(&s, &logits, u) {
                differ += 1;
            }
        }
        // The sums run in another order, so a draw on the very edge of a code's share
        // may land on its neighbour; nothing else may differ.
        assert!(differ <= 1, "{differ} of 3000 draws differ");
    }

    #[test]
    fn bad_settings_are_refused() {
        assert!(Sampling { temperature: -1.0, ..Sampling::default() }.validate().is_err());
        assert!(Sampling { top_p: 0.0, ..Sampling::default() }.validate().is_err());
        assert!(Sampling { top_p: f64::NAN, ..Sampling::default() }.validate().is_err());
        assert!(Sampling::default().validate().is_ok());
    }
}
