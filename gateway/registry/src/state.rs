//! What the model repository keeps across restarts and OS updates, on the
//! data partition: each model's pinned serving version (`pins.json`), the
//! versions in a canary rollout and those rolled back (`rollouts.json`),
//! and the history of loads, swaps, unloads, pins, rollouts and refusals
//! (`history.jsonl`, bounded).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `pins.json` and `rollouts.json` are small maps; anything larger is not
/// ours.
const MAX_PINS_BYTES: u64 = 1 << 20;
/// The history file is cut to its newer half past this size.
const MAX_HISTORY_BYTES: u64 = 4 << 20;
/// At most this many events are read back for one answer.
pub const MAX_HISTORY_EVENTS: usize = 10_000;

/// One thing that happened to a model (the admin API's type is the file's
/// line format too).
pub use nusa_admin::HistoryEvent as Event;

#[derive(Debug, Default, Serialize, Deserialize)]
struct PinsFile {
    pins: BTreeMap<String, u64>,
}

/// The registry's side of canary rollouts (the rollout's own progress is
/// `nusa-canary`'s): which version each model is rolling out beside its
/// serving one, and which versions were rolled back on this box, with why.
/// A rolled-back version is never served again by itself: it is neither
/// "latest" nor loaded by the version policy, until an operator pins it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    #[serde(default)]
    pub canary: BTreeMap<String, u64>,
    /// The version serving when each rollout started: it keeps serving
    /// requests without a version until the rollout ends, whatever else
    /// lands on disk meanwhile.
    #[serde(default)]
    pub stable: BTreeMap<String, u64>,
    #[serde(default)]
    pub bad: BTreeMap<String, BTreeMap<u64, String>>,
    /// Versions published with a rollout policy (`rollout.toml`) that
    /// passed their rollout here: only these of them are ever "latest".
    #[serde(default)]
    pub promoted: BTreeMap<String, std::collections::BTreeSet<u64>>,
}

/// What the marks say of one model, for building its snapshot.
#[derive(Clone, Debug, Default)]
pub(crate) struct ModelMarks {
    pub canary: Option<u64>,
    pub stable: Option<u64>,
    pub bad: Vec<u64>,
    pub promoted: Vec<u64>,
}

impl Marks {
    pub(crate) fn of(&self, model: &str) -> ModelMarks {
        ModelMarks {
            canary: self.canary.get(model).copied(),
            stable: self.stable.get(model).copied(),
            bad: self.bad_versions(model),
            promoted: self.promoted_versions(model),
        }
    }

    pub fn promoted_versions(&self, model: &str) -> Vec<u64> {
        self.promoted
            .get(model)
            .map(|b| b.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn bad_versions(&self, model: &str) -> Vec<u64> {
        self.bad
            .get(model)
            .map(|b| b.keys().copied().collect())
            .unwrap_or_default()
    }
}

/// The state folder (`<data_dir>/models`), or none (tests, tools): then
/// pins and history live in memory only.
pub struct StateDir {
    dir: Option<PathBuf>,
    memory: Vec<Event>,
    marks: Marks,
}

impl StateDir {
    pub fn new(dir: Option<PathBuf>) -> Result<StateDir, String> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d).map_err(|e| format!("creating {}: {e}", d.display()))?;
        }
        Ok(StateDir {
            dir,
            memory: Vec::new(),
            marks: Marks::default(),
        })
    }

    pub fn pins(&self) -> Result<BTreeMap<String, u64>, String> {
        Ok(self.read_json::<PinsFile>("pins.json")?.pins)
    }

    pub fn save_pins(&self, pins: &BTreeMap<String, u64>) -> Result<(), String> {
        self.write_json("pins.json", &PinsFile { pins: pins.clone() })
    }

    /// Canary and rolled-back versions (in memory without a folder).
    pub fn marks(&self) -> Result<Marks, String> {
        if self.dir.is_none() {
            return Ok(self.marks.clone());
        }
        self.read_json("rollouts.json")
    }

    pub fn save_marks(&mut self, marks: &Marks) -> Result<(), String> {
        if self.dir.is_none() {
            self.marks = marks.clone();
            return Ok(());
        }
        self.write_json("rollouts.json", marks)
    }

    fn read_json<T: Default + serde::de::DeserializeOwned>(&self, name: &str) -> Result<T, String> {
        match &self.dir {
            Some(d) => read_json_file(d, name, MAX_PINS_BYTES),
            None => Ok(T::default()),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), String> {
        match &self.dir {
            Some(d) => write_json_file(d, name, value),
            None => Ok(()),
        }
    }

    /// Appends an event; a history that cannot be written is logged, never
    /// a reason to refuse the change it records.
    pub fn record(&mut self, event: Event) {
        tracing::info!(model = %event.model, version = ?event.version, event = %event.event, detail = %event.detail, "model history");
        let Some(dir) = &self.dir else {
            self.memory.push(event);
            if self.memory.len() > MAX_HISTORY_EVENTS {
                self.memory.drain(..MAX_HISTORY_EVENTS / 2);
            }
            return;
        };
        let path = dir.join("history.jsonl");
        if let Err(e) = append(&path, &event) {
            tracing::warn!(path = %path.display(), error = %e, "writing the model history");
        }
    }

    /// The newest `limit` events (oldest first), of one model or of all.
    pub fn history(&self, model: Option<&str>, limit: usize) -> Result<Vec<Event>, String> {
        let limit = limit.min(MAX_HISTORY_EVENTS);
        let all: Vec<Event> = match &self.dir {
            None => self.memory.clone(),
            Some(dir) => {
                let path = dir.join("history.jsonl");
                match read_head(&path, MAX_HISTORY_BYTES) {
                    Ok(text) => text
                        .lines()
                        .filter_map(|l| serde_json::from_str(l).ok())
                        .collect(),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
                    Err(e) => return Err(format!("reading {}: {e}", path.display())),
                }
            }
        };
        let mut picked: Vec<Event> = all
            .into_iter()
            .filter(|e| model.is_none_or(|m| e.model == m))
            .collect();
        let skip = picked.len().saturating_sub(limit);
        picked.drain(..skip);
        Ok(picked)
    }
}

fn append(path: &Path, event: &Event) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(event)?;
    line.push(b'\n');
    if std::fs::metadata(path).is_ok_and(|m| m.len() + line.len() as u64 > MAX_HISTORY_BYTES) {
        // Keep the newer half, from a line start.
        let text = read_head(path, MAX_HISTORY_BYTES)?;
        let half = text.len() / 2;
        let cut = text[half..].find('\n').map_or(text.len(), |i| half + i + 1);
        let tmp = path.with_extension("jsonl.tmp");
        std::fs::write(&tmp, &text.as_bytes()[cut..])?;
        std::fs::rename(&tmp, path)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(&line)
}

/// A small JSON file of the state folder, read bounded to `max` bytes; a
/// missing one is the default. (Also `nusa-canary`'s `canary.json`.)
pub fn read_json_file<T: Default + serde::de::DeserializeOwned>(
    dir: &Path,
    name: &str,
    max: u64,
) -> Result<T, String> {
    let path = dir.join(name);
    let text = match nusa_fsutil::read_to_string_bounded(&path, max) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => return Ok(T::default()),
        Err(e) => return Err(format!("reading {}: {}", path.display(), e.detail())),
    };
    serde_json::from_str::<T>(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes a small JSON file of the state folder atomically (temporary
/// file, fsync, rename, fsync of the folder): a power cut leaves the old
/// file or the new one.
pub fn write_json_file<T: Serialize>(dir: &Path, name: &str, value: &T) -> Result<(), String> {
    let body = serde_json::to_vec_pretty(value).map_err(|e| e.to_string())?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&body)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()
    };
    write().map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The first `max` bytes of the history, which `append` keeps under `max`:
/// a longer file is read up to the bound, not refused, so that a history
/// that overgrew it is still shown and still halved.
fn read_head(path: &Path, max: u64) -> std::io::Result<String> {
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(max)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// Seconds since the Unix epoch, for history events.
pub fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(model: &str, n: u64) -> Event {
        Event {
            at: n,
            model: model.into(),
            version: Some(n),
            event: "load".into(),
            detail: String::new(),
        }
    }

    #[test]
    fn pins_and_history_survive_a_new_state_dir() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateDir::new(Some(d.path().join("models"))).unwrap();
        assert!(s.pins().unwrap().is_empty());
        s.save_pins(&BTreeMap::from([("a".to_string(), 3)]))
            .unwrap();
        for n in 0..5 {
            s.record(event(if n % 2 == 0 { "a" } else { "b" }, n));
        }
        let s = StateDir::new(Some(d.path().join("models"))).unwrap();
        assert_eq!(s.pins().unwrap(), BTreeMap::from([("a".to_string(), 3)]));
        let a: Vec<u64> = s
            .history(Some("a"), 100)
            .unwrap()
            .iter()
            .map(|e| e.at)
            .collect();
        assert_eq!(a, vec![0, 2, 4]);
        let newest: Vec<u64> = s.history(None, 2).unwrap().iter().map(|e| e.at).collect();
        assert_eq!(newest, vec![3, 4]);
    }

    #[test]
    fn rollout_marks_survive_a_new_state_dir_and_live_in_memory_without_one() {
        let d = tempfile::tempdir().unwrap();
        let mut s = StateDir::new(Some(d.path().join("models"))).unwrap();
        assert_eq!(s.marks().unwrap(), Marks::default());
        let mut m = Marks::default();
        m.canary.insert("a".into(), 3);
        m.stable.insert("a".into(), 2);
        m.bad
            .entry("b".into())
            .or_default()
            .insert(7, "error rate".into());
        m.promoted.entry("b".into()).or_default().insert(6);
        s.save_marks(&m).unwrap();
        let s = StateDir::new(Some(d.path().join("models"))).unwrap();
        let back = s.marks().unwrap();
        assert_eq!(back, m);
        let of_a = back.of("a");
        assert_eq!((of_a.canary, of_a.stable), (Some(3), Some(2)));
        assert_eq!(
            (back.of("b").bad, back.of("b").promoted),
            (vec![7], vec![6])
        );
        let mut mem = StateDir::new(None).unwrap();
        mem.save_marks(&m).unwrap();
        assert_eq!(mem.marks().unwrap(), m);
    }

    #[test]
    fn a_damaged_pins_file_is_an_error_naming_it() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pins.json"), b"{not json").unwrap();
        let s = StateDir::new(Some(d.path().to_path_buf())).unwrap();
        let e = s.pins().unwrap_err();
        assert!(e.contains("pins.json"), "{e}");
    }
}
