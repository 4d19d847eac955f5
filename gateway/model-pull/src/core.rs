//! What the puller does next, decided from facts alone: no I/O, no clock
//! (the driver passes the local minute of the day, the free bytes, what
//! is published and installed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// A daily window in the box's local time, `HH:MM-HH:MM`; it may wrap
/// midnight (`22:00-04:00`). Start included, end excluded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    start: u16,
    end: u16,
}

pub const MINUTES_PER_DAY: u16 = 24 * 60;

impl Window {
    pub fn contains(&self, minute: u16) -> bool {
        if self.start <= self.end {
            (self.start..self.end).contains(&minute)
        } else {
            minute >= self.start || minute < self.end
        }
    }

    /// Minutes from `minute` until the window opens (0 when open).
    pub fn minutes_until_open(&self, minute: u16) -> u16 {
        if self.contains(minute) {
            0
        } else {
            (self.start + MINUTES_PER_DAY - minute) % MINUTES_PER_DAY
        }
    }
}

impl FromStr for Window {
    type Err = String;

    fn from_str(s: &str) -> Result<Window, String> {
        let bad = || format!("{s:?} is not a window like \"01:00-05:00\" (local time, 24 h)");
        let (a, b) = s.trim().split_once('-').ok_or_else(bad)?;
        let minute = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && t.trim().len() == 5).then_some(h * 60 + m)
        };
        let (start, end) = (minute(a).ok_or_else(bad)?, minute(b).ok_or_else(bad)?);
        if start == end {
            return Err(format!("{s:?}: an empty window (start equals end)"));
        }
        Ok(Window { start, end })
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hm = |m: u16| format!("{:02}:{:02}", m / 60, m % 60);
        write!(f, "{}-{}", hm(self.start), hm(self.end))
    }
}

/// The operator's rules for pulling.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// When scheduled pulls may run; `None`: any time. Pulls asked for by
    /// an operator (`nusactl models pull`) run at once.
    pub window: Option<Window>,
    /// Installed versions kept per model (at least 1); older ones are
    /// removed once a newer one is installed, never the serving or pinned.
    pub keep_versions: usize,
    /// Free bytes the data partition keeps: a pull that would leave less
    /// waits (and says so).
    pub reserve_bytes: u64,
    /// Models to pull; empty: every published model.
    pub models: BTreeSet<String>,
}

/// A published version: model, version, bytes to install.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    pub model: String,
    pub version: u64,
    pub bytes: u64,
}

/// What the driver knows now.
#[derive(Clone, Debug, Default)]
pub struct Facts {
    /// Local time of day, minutes since midnight.
    pub minute: u16,
    pub free_bytes: u64,
    /// Installed versions per model.
    pub installed: BTreeMap<String, BTreeSet<u64>>,
    /// Versions that must stay (serving or pinned), per model.
    pub keep: BTreeMap<String, BTreeSet<u64>>,
    /// Versions an operator asked for, to pull now.
    pub requested: BTreeSet<(String, u64)>,
    /// Installed encrypted versions without a wrapping of their data key for
    /// this box's key, where the repository now has one (the fleet key was
    /// rotated by re-wrapping): fetched again, which adds the wrapping.
    pub stale_keys: BTreeSet<(String, u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Pull {
        model: String,
        version: u64,
        bytes: u64,
        requested: bool,
    },
    Prune {
        model: String,
        version: u64,
    },
    /// A pull that waits, and why (outside the window, not enough room).
    Wait {
        model: String,
        version: u64,
        why: String,
    },
}

/// The steps for now: pulls (the newest published version of each model
/// not installed yet, and every requested one), then prunes.
pub fn plan(policy: &Policy, published: &[Published], facts: &Facts) -> Vec<Step> {
    let wanted = |m: &str| policy.models.is_empty() || policy.models.contains(m);
    let mut newest: BTreeMap<&str, &Published> = BTreeMap::new();
    for p in published.iter().filter(|p| wanted(&p.model)) {
        let e = newest.entry(p.model.as_str()).or_insert(p);
        if p.version > e.version {
            *e = p;
        }
    }
    let installed = |m: &str, v: u64| facts.installed.get(m).is_some_and(|s| s.contains(&v));
    let mut candidates: Vec<(&Published, bool)> = published
        .iter()
        .filter(|p| facts.requested.contains(&(p.model.clone(), p.version)))
        .map(|p| (p, true))
        .collect();
    candidates.extend(
        newest
            .values()
            .filter(|p| !facts.requested.contains(&(p.model.clone(), p.version)))
            .map(|p| (*p, false)),
    );
    let mut steps = Vec::new();
    let mut free = facts.free_bytes;
    for (p, requested) in candidates {
        if installed(&p.model, p.version) {
            continue;
        }
        let wait = |why: String| Step::Wait {
            model: p.model.clone(),
            version: p.version,
            why,
        };
        if let (Some(w), false) = (policy.window, requested) {
            if !w.contains(facts.minute) {
                let m = w.minutes_until_open(facts.minute);
                steps.push(wait(format!(
                    "outside the pull window {w} (opens in {} h {:02} min)",
                    m / 60,
                    m % 60
                )));
                continue;
            }
        }
        if free < p.bytes.saturating_add(policy.reserve_bytes) {
            steps.push(wait(format!(
                "{} bytes would leave less than the {} reserved on the data partition ({} free)",
                p.bytes, policy.reserve_bytes, free
            )));
            continue;
        }
        free -= p.bytes;
        steps.push(Step::Pull {
            model: p.model.clone(),
            version: p.version,
            bytes: p.bytes,
            requested,
        });
    }
    // A new wrapping is a few hundred bytes: fetched whatever the window.
    for (model, version) in &facts.stale_keys {
        if installed(model, *version) && wanted(model) {
            steps.push(Step::Pull {
                model: model.clone(),
                version: *version,
                bytes: 0,
                requested: false,
            });
        }
    }
    let keep_n = policy.keep_versions.max(1);
    for (model, versions) in &facts.installed {
        if versions.len() <= keep_n {
            continue;
        }
        let must = facts.keep.get(model);
        let mut extra = versions.len() - keep_n;
        for v in versions {
            if extra == 0 {
                break;
            }
            if must.is_some_and(|k| k.contains(v)) {
                continue;
            }
            steps.push(Step::Prune {
                model: model.clone(),
                version: *v,
            });
            extra -= 1;
        }
    }
    steps
}

/// Where a pull stands: `done` of `total` bytes in place after
/// `elapsed_ms`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    pub percent: f64,
    /// Bytes per second so far.
    pub rate: f64,
    /// Seconds left at that rate; `None` before any byte came.
    pub eta_s: Option<u64>,
}

pub fn progress(done: u64, total: u64, elapsed_ms: u64) -> Progress {
    let done = done.min(total);
    let percent = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let rate = if elapsed_ms == 0 {
        0.0
    } else {
        done as f64 * 1000.0 / elapsed_ms as f64
    };
    let eta_s = (rate > 0.0).then(|| ((total - done) as f64 / rate).ceil() as u64);
    Progress {
        percent,
        rate,
        eta_s,
    }
}

/// Waits between failed attempts: doubling from `first` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first_s: u64,
    pub max_s: u64,
    failures: u32,
}

impl Backoff {
    pub fn new(first_s: u64, max_s: u64) -> Backoff {
        Backoff {
            first_s,
            max_s,
            failures: 0,
        }
    }

    /// Records a failure; returns the seconds to wait before the next try.
    pub fn failed(&mut self) -> u64 {
        let wait = self
            .first_s
            .saturating_mul(1u64 << self.failures.min(20))
            .min(self.max_s);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    pub fn succeeded(&mut self) {
        self.failures = 0;
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(s: &str) -> Window {
        s.parse().unwrap()
    }

    #[test]
    fn windows_parse_wrap_midnight_and_say_when_they_open() {
        let night = w("01:00-05:00");
        assert!(!night.contains(59) && night.contains(60) && night.contains(299));
        assert!(!night.contains(300));
        assert_eq!(night.minutes_until_open(23 * 60), 120);
        assert_eq!(night.minutes_until_open(120), 0);
        assert_eq!(night.minutes_until_open(300), 20 * 60);
        let wrap = w("22:30-04:00");
        assert!(wrap.contains(23 * 60) && wrap.contains(0) && wrap.contains(239));
        assert!(!wrap.contains(240) && !wrap.contains(22 * 60));
        assert_eq!(wrap.to_string(), "22:30-04:00");
        for bad in [
            "1:00-5:00",
            "01:00",
            "25:00-01:00",
            "01:00-01:00",
            "01:60-02:00",
            "a-b",
        ] {
            assert!(bad.parse::<Window>().is_err(), "{bad}");
        }
    }

    fn published(list: &[(&str, u64, u64)]) -> Vec<Published> {
        list.iter()
            .map(|&(m, v, b)| Published {
                model: m.into(),
                version: v,
                bytes: b,
            })
            .collect()
    }

    fn policy() -> Policy {
        Policy {
            window: Some(w("01:00-05:00")),
            keep_versions: 2,
            reserve_bytes: 1000,
            models: BTreeSet::new(),
        }
    }

    fn facts(minute: u16, free: u64) -> Facts {
        Facts {
            minute,
            free_bytes: free,
            ..Facts::default()
        }
    }

    #[test]
    fn an_installed_version_missing_this_boxs_wrapping_is_fetched_again_at_any_hour() {
        let p = published(&[("a", 1, 10), ("a", 2, 20)]);
        let mut f = facts(12 * 60, 1 << 20);
        f.installed.insert("a".into(), BTreeSet::from([1, 2]));
        assert!(plan(&policy(), &p, &f).is_empty());
        f.stale_keys.insert(("a".into(), 1));
        // Not installed here: nothing to refresh.
        f.stale_keys.insert(("b".into(), 7));
        assert_eq!(
            plan(&policy(), &p, &f),
            vec![Step::Pull {
                model: "a".into(),
                version: 1,
                bytes: 0,
                requested: false
            }]
        );
    }

    #[test]
    fn the_newest_version_is_pulled_in_the_window_only() {
        let p = published(&[("a", 1, 10), ("a", 3, 30), ("a", 2, 20), ("b", 1, 5)]);
        let pulls = plan(&policy(), &p, &facts(120, 1 << 20));
        assert_eq!(
            pulls,
            vec![
                Step::Pull {
                    model: "a".into(),
                    version: 3,
                    bytes: 30,
                    requested: false
                },
                Step::Pull {
                    model: "b".into(),
                    version: 1,
                    bytes: 5,
                    requested: false
                },
            ]
        );
        let outside = plan(&policy(), &p, &facts(12 * 60, 1 << 20));
        assert!(
            matches!(&outside[0], Step::Wait { version: 3, why, .. } if why.contains("opens in 13 h 00 min")),
            "{outside:?}"
        );
        // Asked for by an operator: at once, whatever the hour.
        let mut f = facts(12 * 60, 1 << 20);
        f.requested.insert(("a".into(), 1));
        let steps = plan(&policy(), &p, &f);
        assert_eq!(
            steps[0],
            Step::Pull {
                model: "a".into(),
                version: 1,
                bytes: 10,
                requested: true
            }
        );
        assert!(matches!(steps[1], Step::Wait { version: 3, .. }));
    }

    #[test]
    fn the_reserve_is_never_used_and_installed_versions_are_not_pulled_again() {
        let p = published(&[("a", 1, 600), ("b", 1, 600)]);
        let steps = plan(&policy(), &p, &facts(120, 2000));
        assert!(matches!(&steps[0], Step::Pull { model, .. } if model == "a"));
        assert!(
            matches!(&steps[1], Step::Wait { model, why, .. } if model == "b" && why.contains("reserved")),
            "{steps:?}"
        );
        let mut f = facts(120, 1 << 20);
        f.installed.insert("a".into(), BTreeSet::from([1]));
        f.installed.insert("b".into(), BTreeSet::from([1]));
        assert!(plan(&policy(), &p, &f).is_empty());
    }

    #[test]
    fn old_versions_are_pruned_but_never_the_serving_or_pinned() {
        let mut f = facts(120, 1 << 20);
        f.installed.insert("a".into(), BTreeSet::from([1, 2, 3, 4]));
        f.keep.insert("a".into(), BTreeSet::from([1]));
        let steps = plan(&policy(), &published(&[("a", 4, 1)]), &f);
        assert_eq!(
            steps,
            vec![
                Step::Prune {
                    model: "a".into(),
                    version: 2
                },
                Step::Prune {
                    model: "a".into(),
                    version: 3
                },
            ]
        );
    }

    #[test]
    fn only_the_configured_models_are_pulled() {
        let mut pol = policy();
        pol.models.insert("b".into());
        let steps = plan(
            &pol,
            &published(&[("a", 1, 1), ("b", 2, 1)]),
            &facts(120, 1 << 20),
        );
        assert_eq!(steps.len(), 1);
        assert!(matches!(&steps[0], Step::Pull { model, .. } if model == "b"));
    }

    #[test]
    fn progress_says_how_far_how_fast_and_how_long() {
        let p = progress(25, 100, 5_000);
        assert_eq!((p.percent, p.rate, p.eta_s), (25.0, 5.0, Some(15)));
        assert_eq!(progress(0, 100, 3_000).eta_s, None);
        assert_eq!(progress(150, 100, 1_000).percent, 100.0);
        assert_eq!(progress(0, 0, 0).percent, 100.0);
    }

    #[test]
    fn backoff_doubles_to_its_cap_and_resets() {
        let mut b = Backoff::new(5, 60);
        let waits: Vec<u64> = (0..6).map(|_| b.failed()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 60, 60]);
        b.succeeded();
        assert_eq!(b.failed(), 5);
    }
}
