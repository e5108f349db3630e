//! The studio's queue of runs, as plain data: jobs waiting, running and done, the X/Y
//! grids some of them fill, and the operations the queue panel asks for (reorder,
//! duplicate, cancel). The studio saves it as JSON on every change (`queue.json` in the
//! library folder), so that a crash or a quit loses no job.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::RunSettings;

/// Where a job stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JobStatus {
    Waiting,
    /// Being run; a job found running when the studio starts was cut short, and goes on
    /// from its autosave when the queue continues.
    Running,
    /// Finished; its run is in `folder`.
    Done,
    /// Stopped before the end (its run, as far as it got, is in `folder`).
    Stopped,
    /// Refused or failed, with the one-line reason.
    Failed {
        reason: String,
    },
}

impl JobStatus {
    /// Whether the job has ended, one way or another.
    pub fn ended(&self) -> bool {
        matches!(self, Self::Done | Self::Stopped | Self::Failed { .. })
    }
}

/// One run in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedJob {
    pub id: u64,
    pub settings: RunSettings,
    pub status: JobStatus,
    /// Its run's folder in the library, once it has started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<PathBuf>,
    /// Its cell of an X/Y grid: the grid's id, column and row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cell: Option<(u64, usize, usize)>,
}

impl QueuedJob {
    /// A short line for the queue panel: the first prompt and the seed.
    pub fn label(&self) -> String {
        format!("{} - seed {}", self.prompt_words(), self.settings.seed)
    }

    fn prompt_words(&self) -> String {
        let prompt =
            self.settings.prompts.first().map_or("(no text prompt)", |p| p.rsplit_once(':').map_or(p, |(t, _)| t));
        let mut words: String = prompt.chars().take(40).collect();
        if prompt.chars().count() > 40 {
            words.push_str("...");
        }
        words
    }
}

/// An X/Y grid whose cells are jobs of the queue; its contact sheet is drawn when the
/// last of them ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedGrid {
    pub id: u64,
    pub x_key: String,
    pub x_labels: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<(String, Vec<String>)>,
    /// Where the contact sheet goes (`grid.png` in it).
    pub folder: PathBuf,
    /// The sheet is drawn.
    #[serde(default)]
    pub drawn: bool,
}

/// The queue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Queue {
    pub jobs: Vec<QueuedJob>,
    pub grids: Vec<QueuedGrid>,
    /// No new job starts while paused (the one running goes on).
    pub paused: bool,
    /// "Generate forever": when the queue runs dry, the last job comes again with a new
    /// seed.
    pub forever: bool,
    next_id: u64,
}

impl Queue {
    fn fresh_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Adds a waiting job at the end; returns its id.
    pub fn push(&mut self, settings: RunSettings) -> u64 {
        let id = self.fresh_id();
        self.jobs.push(QueuedJob { id, settings, status: JobStatus::Waiting, folder: None, cell: None });
        id
    }

    /// Adds an X/Y grid's cells, `(settings, column, row)`, and the grid; returns its id.
    pub fn push_grid(&mut self, mut grid: QueuedGrid, cells: Vec<(RunSettings, usize, usize)>) -> u64 {
        let gid = self.fresh_id();
        grid.id = gid;
        for (settings, col, row) in cells {
            let id = self.fresh_id();
            self.jobs.push(QueuedJob {
                id,
                settings,
                status: JobStatus::Waiting,
                folder: None,
                cell: Some((gid, col, row)),
            });
        }
        self.grids.push(grid);
        gid
    }

    pub fn get(&self, id: u64) -> Option<&QueuedJob> {
        self.jobs.iter().find(|j| j.id == id)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut QueuedJob> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    /// A job's line for the queue panel: a grid cell's axis values, else its seed.
    pub fn job_label(&self, job: &QueuedJob) -> String {
        let Some((gid, col, row)) = job.cell else { return job.label() };
        let Some(g) = self.grids.iter().find(|g| g.id == gid) else { return job.label() };
        let mut values = format!("{} {}", g.x_key, g.x_labels.get(col).map_or("?", String::as_str));
        if let Some((key, labels)) = &g.y {
            values.push_str(&format!(", {key} {}", labels.get(row).map_or("?", String::as_str)));
        }
        format!("{} - {values}", job.prompt_words())
    }

    /// The job running, if any.
    pub fn running(&self) -> Option<&QueuedJob> {
        self.jobs.iter().find(|j| j.status == JobStatus::Running)
    }

    /// The next job to start: the first waiting one.
    pub fn next_waiting(&self) -> Option<u64> {
        self.jobs.iter().find(|j| j.status == JobStatus::Waiting).map(|j| j.id)
    }

    /// Jobs waiting or running.
    pub fn pending(&self) -> usize {
        self.jobs.iter().filter(|j| !j.status.ended()).count()
    }

    /// Moves a job one place up (`-1`) or down (`+1`) among the others.
    pub fn shift(&mut self, id: u64, by: isize) {
        let Some(i) = self.jobs.iter().position(|j| j.id == id) else { return };
        let Some(to) = i.checked_add_signed(by).filter(|&t| t < self.jobs.len()) else { return };
        self.jobs.swap(i, to);
    }

    /// A copy of a job, waiting, right after it (out of any grid); returns its id.
    pub fn duplicate(&mut self, id: u64) -> Option<u64> {
        let i = self.jobs.iter().position(|j| j.id == id)?;
        let settings = self.jobs[i].settings.clone();
        let new = self.fresh_id();
        self.jobs.insert(i + 1, QueuedJob { id: new, settings, status: JobStatus::Waiting, folder: None, cell: None });
        Some(new)
    }

    /// Takes a job out of the queue (the studio stops it first if it runs).
    pub fn remove(&mut self, id: u64) -> Option<QueuedJob> {
        let i = self.jobs.iter().position(|j| j.id == id)?;
        Some(self.jobs.remove(i))
    }

    /// Takes the ended jobs out (their runs stay in the library), and the grids with no
    /// job left. The cells of a grid whose sheet is not drawn yet stay: the sheet needs
    /// their runs.
    pub fn clear_ended(&mut self) {
        let undrawn: Vec<u64> = self.grids.iter().filter(|g| !g.drawn).map(|g| g.id).collect();
        self.jobs.retain(|j| !j.status.ended() || j.cell.is_some_and(|(id, _, _)| undrawn.contains(&id)));
        let jobs = &self.jobs;
        self.grids.retain(|g| jobs.iter().any(|j| j.cell.is_some_and(|(id, _, _)| id == g.id)));
    }

    /// Grids whose every cell has ended and whose sheet is not drawn yet, with their
    /// cells' run folders (`None` where a cell has no run), `cells[row][col]`.
    pub fn grids_to_draw(&self) -> Vec<(QueuedGrid, Vec<Vec<Option<PathBuf>>>)> {
        self.grids
            .iter()
            .filter(|g| !g.drawn)
            .filter_map(|g| {
                let cells: Vec<&QueuedJob> =
                    self.jobs.iter().filter(|j| j.cell.is_some_and(|(id, _, _)| id == g.id)).collect();
                if cells.is_empty() || cells.iter().any(|j| !j.status.ended()) {
                    return None;
                }
                let rows = g.y.as_ref().map_or(1, |(_, l)| l.len());
                let mut grid = vec![vec![None; g.x_labels.len()]; rows];
                for j in cells {
                    let Some((_, col, row)) = j.cell else { continue };
                    if let Some(slot) = grid.get_mut(row).and_then(|r| r.get_mut(col)) {
                        *slot = j.folder.clone().filter(|_| j.status != JobStatus::Waiting);
                    }
                }
                Some((g.clone(), grid))
            })
            .collect()
    }

    /// The queue as JSON.
    pub fn to_json(&self) -> Result<String, String> {
        serde_json::to_string_pretty(self).map_err(|e| format!("the queue could not be written: {e}"))
    }

    /// A queue saved by [`Self::to_json`].
    pub fn from_json(text: &str) -> Result<Self, String> {
        serde_json::from_str(text).map_err(|e| format!("the saved queue cannot be read: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(seed: u64) -> RunSettings {
        RunSettings {
            seed,
            prompts: vec!["a red barn in the snow at dusk, oil on canvas:1".into()],
            ..RunSettings::default()
        }
    }

    #[test]
    fn jobs_are_reordered_duplicated_and_removed() {
        let mut q = Queue::default();
        let a = q.push(settings(1));
        let b = q.push(settings(2));
        q.shift(b, -1);
        assert_eq!(q.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [b, a]);
        q.shift(b, -1);
        q.shift(a, 1);
        assert_eq!(q.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [b, a], "no move past the ends");
        let c = q.duplicate(b).unwrap();
        assert_eq!(q.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), [b, c, a]);
        assert_eq!(q.get(c).unwrap().settings, settings(2));
        assert_eq!(q.remove(b).unwrap().id, b);
        assert_eq!(q.next_waiting(), Some(c));
        assert_eq!(q.pending(), 2);
        assert_eq!(q.get(c).unwrap().label(), "a red barn in the snow at dusk, oil on c... - seed 2");
    }

    #[test]
    fn a_grid_is_drawn_once_every_cell_has_ended() {
        let mut q = Queue::default();
        let grid = QueuedGrid {
            id: 0,
            x_key: "seed".into(),
            x_labels: vec!["1".into(), "2".into()],
            y: None,
            folder: PathBuf::from("g"),
            drawn: false,
        };
        let g = q.push_grid(grid, vec![(settings(1), 0, 0), (settings(2), 1, 0)]);
        assert!(q.grids_to_draw().is_empty());
        for (n, j) in q.jobs.iter_mut().enumerate() {
            j.status = if n == 0 { JobStatus::Done } else { JobStatus::Failed { reason: "x".into() } };
            j.folder = (n == 0).then(|| PathBuf::from("run-1"));
        }
        assert_eq!(q.job_label(&q.jobs[1]), "a red barn in the snow at dusk, oil on c... - seed 2");
        let todo = q.grids_to_draw();
        assert_eq!(todo.len(), 1);
        assert_eq!(todo[0].0.id, g);
        assert_eq!(todo[0].1, vec![vec![Some(PathBuf::from("run-1")), None]]);
        let back = Queue::from_json(&q.to_json().unwrap()).unwrap();
        assert_eq!(back, q, "the queue survives its file");
        q.clear_ended();
        assert_eq!(q.jobs.len(), 2, "an undrawn grid keeps its cells");
        q.grids[0].drawn = true;
        q.clear_ended();
        assert!(q.jobs.is_empty() && q.grids.is_empty());
    }
}
