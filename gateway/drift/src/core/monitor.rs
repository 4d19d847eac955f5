//! One model version's monitor: learns a baseline, then judges windows.

use nusa_tensor::Tensor;

use super::baseline::{Baseline, BaselineError, Frozen, Kind};
use super::config::{Settings, MAX_CLASSES, MAX_TENSORS, WARMUP_PER_SAMPLE, WARMUP_VALUES};
use super::decode::{argmax, decode_prefix, is_float};
use super::psi::{proportions, psi};
use super::report::{Phase, Report, Source, TensorReport, WindowStatus};
use super::summary::{Edges, Summary};

/// The drift monitor of one model version. No clock: [`Monitor::poll`]
/// is given the time and closes what is due.
#[derive(Debug)]
pub struct Monitor {
    model: String,
    version: u64,
    settings: Settings,
    source: Source,
    state: State,
    samples: u64,
    baseline_samples: u64,
    windows: u64,
    ignored: u64,
    tracks: Vec<Track>,
    /// Reused for each tensor's decoded values.
    scratch: Vec<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum State {
    Learning { until_ms: u64 },
    Watching { window_end_ms: u64 },
}

/// What [`Monitor::poll`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Poll {
    Idle,
    /// The baseline was fixed; watching begins.
    BaselineFixed,
    /// A window closed and was judged.
    WindowClosed,
}

#[derive(Debug)]
struct Track {
    name: String,
    kind: Kind,
    /// Numeric tensors; `None` during warm-up.
    edges: Option<Edges>,
    /// Warm-up values, until the edges are fixed.
    warm: Vec<f64>,
    /// The baseline being learned (emptied once frozen).
    learning: Summary,
    frozen: Option<Frozen>,
    current: Summary,
    status: WindowStatus,
    last_mean: Option<f64>,
    last_std: Option<f64>,
    last_samples: u64,
    last_values: u64,
    psi: Option<f64>,
    worst: Option<f64>,
}

impl Track {
    fn new(name: &str, kind: Kind) -> Track {
        Track {
            name: name.to_string(),
            kind,
            edges: None,
            warm: Vec::new(),
            learning: Summary::default(),
            frozen: None,
            current: Summary::default(),
            status: WindowStatus::Pending,
            last_mean: None,
            last_std: None,
            last_samples: 0,
            last_values: 0,
            psi: None,
            worst: None,
        }
    }

    /// Fixes the edges from the warm-up values and counts those values.
    fn fix_edges(&mut self) {
        let edges = Edges::learn(&self.warm);
        self.learning.counts = vec![0; edges.buckets() + 1];
        for &x in &self.warm {
            self.learning.count_value(&edges, x);
        }
        self.edges = Some(edges);
        self.warm = Vec::new();
    }

    fn learn_values(&mut self, values: &[f64]) {
        self.learning.samples += 1;
        for &x in values {
            self.learning.moments.push(x);
        }
        match &self.edges {
            Some(edges) => {
                for &x in values {
                    self.learning.count_value(edges, x);
                }
            }
            None => {
                // An even stride over the request's values, so a large
                // tensor's first rows do not stand for all of it.
                let room = WARMUP_VALUES.saturating_sub(self.warm.len());
                let take = room.min(WARMUP_PER_SAMPLE);
                let step = (values.len() / take.max(1)).max(1);
                self.warm
                    .extend(values.iter().step_by(step).take(take).copied());
                if self.warm.len() >= WARMUP_VALUES {
                    self.fix_edges();
                }
            }
        }
    }

    fn watch_values(&mut self, values: &[f64]) {
        let Some(Frozen {
            edges: Some(edges), ..
        }) = &self.frozen
        else {
            return;
        };
        self.current.samples += 1;
        for &x in values {
            self.current.moments.push(x);
            self.current.count_value(edges, x);
        }
    }

    fn classes(&mut self, watching: bool, rows: impl Iterator<Item = usize>, kept: usize) {
        let s = if watching {
            &mut self.current
        } else {
            &mut self.learning
        };
        if s.counts.is_empty() {
            s.counts = vec![0; kept + 1];
        }
        s.samples += 1;
        for class in rows {
            s.count_class(class);
        }
    }

    /// Freezes the learned baseline; `false` when there is nothing to
    /// compare with (no value was counted).
    fn freeze(&mut self) -> bool {
        if self.kind != Kind::Argmax && self.edges.is_none() {
            self.fix_edges();
        }
        let Some(expected) = proportions(&self.learning.counts) else {
            return false;
        };
        let learned = std::mem::take(&mut self.learning);
        self.current = Summary {
            counts: vec![0; expected.len()],
            ..Summary::default()
        };
        self.frozen = Some(Frozen {
            edges: self.edges.take(),
            expected,
            mean: learned.moments.mean(),
            std: learned.moments.std(),
            samples: learned.samples,
        });
        true
    }

    fn close(&mut self, settings: &Settings) {
        let Some(frozen) = &self.frozen else {
            return;
        };
        let c = &self.current;
        self.last_mean = c.moments.mean();
        self.last_std = c.moments.std();
        self.last_samples = c.samples;
        self.last_values = c.values();
        let actual = (c.samples >= settings.min_window_samples)
            .then(|| proportions(&c.counts))
            .flatten();
        match actual {
            Some(actual) => {
                let v = psi(&frozen.expected, &actual);
                self.psi = Some(v);
                self.worst = Some(self.worst.map_or(v, |w| w.max(v)));
                self.status = WindowStatus::Judged;
            }
            None => self.status = WindowStatus::InsufficientSamples,
        }
        self.current.reset();
    }

    fn report(&self, settings: &Settings) -> TensorReport {
        let (baseline_mean, baseline_std) = match &self.frozen {
            Some(f) => (f.mean, f.std),
            None => (self.learning.moments.mean(), self.learning.moments.std()),
        };
        TensorReport {
            name: self.name.clone(),
            kind: self.kind,
            baseline_mean,
            baseline_std,
            current_mean: self.last_mean,
            current_std: self.last_std,
            psi: self.psi,
            worst_psi: self.worst,
            samples: self.last_samples,
            values: self.last_values,
            threshold: settings.threshold,
            drifted: self.psi.is_some_and(|p| p > settings.threshold),
            status: self.status,
        }
    }
}

impl Monitor {
    /// A monitor that learns its baseline from `now_ms` (the version's
    /// first sampled request) for `baseline_ms`, and from at least
    /// `baseline_min_samples` sampled requests.
    pub fn new(model: &str, version: u64, settings: Settings, now_ms: u64) -> Monitor {
        Monitor {
            model: model.to_string(),
            version,
            settings,
            source: Source::Learned,
            state: State::Learning {
                until_ms: now_ms.saturating_add(settings.baseline_ms),
            },
            samples: 0,
            baseline_samples: 0,
            windows: 0,
            ignored: 0,
            tracks: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// A monitor with a published baseline: it watches from `now_ms`.
    /// Tensors the baseline does not name are not tracked.
    pub fn with_baseline(
        model: &str,
        version: u64,
        settings: Settings,
        baseline: &Baseline,
        now_ms: u64,
    ) -> Result<Monitor, BaselineError> {
        if baseline.tensors.len() > MAX_TENSORS {
            return Err(BaselineError::TooManyTensors {
                count: baseline.tensors.len(),
            });
        }
        let mut tracks: Vec<Track> = Vec::with_capacity(baseline.tensors.len());
        for t in &baseline.tensors {
            if tracks.iter().any(|k| k.name == t.name && k.kind == t.kind) {
                return Err(BaselineError::Tensor {
                    name: t.name.clone(),
                    kind: t.kind,
                    reason: "named twice",
                });
            }
            let frozen = Frozen::from_published(t)?;
            let mut track = Track::new(&t.name, t.kind);
            track.current.counts = vec![0; frozen.expected.len()];
            track.frozen = Some(frozen);
            tracks.push(track);
        }
        let mut m = Monitor::new(model, version, settings, now_ms);
        m.source = Source::Published;
        m.tracks = tracks;
        m.state = State::Watching {
            window_end_ms: now_ms.saturating_add(settings.window_ms),
        };
        Ok(m)
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Watching { .. } => Phase::Watching,
            State::Learning { .. } => {
                let warming = self.tracks.is_empty()
                    || self
                        .tracks
                        .iter()
                        .any(|t| t.kind != Kind::Argmax && t.edges.is_none());
                if warming {
                    Phase::Warmup
                } else {
                    Phase::Baseline
                }
            }
        }
    }

    /// Folds one sampled request in: the first `max_elements` elements of
    /// each tensor (BYTES tensors are skipped) and, for each classifier
    /// output, the argmax of its whole rows among those elements.
    pub fn observe(&mut self, inputs: &[Tensor], outputs: &[Tensor]) {
        self.samples += 1;
        if matches!(self.state, State::Learning { .. }) {
            self.baseline_samples += 1;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        for t in inputs {
            self.tensor(t, Kind::Input, &mut scratch);
        }
        for t in outputs {
            self.tensor(t, Kind::Output, &mut scratch);
        }
        self.scratch = scratch;
    }

    fn tensor(&mut self, t: &Tensor, kind: Kind, values: &mut Vec<f64>) {
        if !decode_prefix(t, self.settings.max_elements, values) {
            return;
        }
        let watching = matches!(self.state, State::Watching { .. });
        if let Some(track) = self.track(&t.name, kind) {
            if watching {
                track.watch_values(values);
            } else {
                track.learn_values(values);
            }
        }
        let classes = match t.shape.as_slice() {
            [batch, classes] if *classes >= 2 && is_float(t.datatype) => usize::try_from(*classes)
                .ok()
                .zip(usize::try_from(*batch).ok()),
            _ => None,
        };
        if let Some((classes, batch)) = classes {
            let rows = batch.min(values.len() / classes);
            if kind == Kind::Output && rows > 0 {
                if let Some(track) = self.track(&t.name, Kind::Argmax) {
                    let picks = values[..rows * classes]
                        .chunks_exact(classes)
                        .filter_map(argmax);
                    track.classes(watching, picks, classes.min(MAX_CLASSES));
                }
            }
        }
    }

    /// The tensor's track; made while learning if there is room.
    fn track(&mut self, name: &str, kind: Kind) -> Option<&mut Track> {
        let found = self
            .tracks
            .iter()
            .position(|t| t.kind == kind && t.name == name);
        let i = match found {
            Some(i) => i,
            None if matches!(self.state, State::Learning { .. })
                && self.tracks.len() < MAX_TENSORS =>
            {
                self.tracks.push(Track::new(name, kind));
                self.tracks.len() - 1
            }
            None => {
                self.ignored = self.ignored.saturating_add(1);
                return None;
            }
        };
        self.tracks.get_mut(i)
    }

    /// Fixes the baseline once `baseline_ms` passed and enough requests
    /// were sampled; closes and judges the window when its time is up
    /// (windows that passed with no call in between are skipped).
    pub fn poll(&mut self, now_ms: u64) -> Poll {
        match self.state {
            State::Learning { until_ms } => {
                if now_ms < until_ms || self.baseline_samples < self.settings.baseline_min_samples {
                    return Poll::Idle;
                }
                self.tracks.retain_mut(Track::freeze);
                self.state = State::Watching {
                    window_end_ms: now_ms.saturating_add(self.settings.window_ms),
                };
                Poll::BaselineFixed
            }
            State::Watching { window_end_ms } => {
                if now_ms < window_end_ms {
                    return Poll::Idle;
                }
                let settings = self.settings;
                for t in &mut self.tracks {
                    t.close(&settings);
                }
                self.windows += 1;
                let w = settings.window_ms.max(1);
                let behind = (now_ms - window_end_ms) / w + 1;
                self.state = State::Watching {
                    window_end_ms: window_end_ms.saturating_add(behind.saturating_mul(w)),
                };
                Poll::WindowClosed
            }
        }
    }

    pub fn report(&self) -> Report {
        Report {
            model: self.model.clone(),
            version: self.version,
            phase: self.phase(),
            source: self.source,
            baseline_samples: self.baseline_samples,
            samples: self.samples,
            window_s: self.settings.window_ms / 1000,
            windows: self.windows,
            ignored_tensors: self.ignored,
            tensors: self
                .tracks
                .iter()
                .map(|t| t.report(&self.settings))
                .collect(),
        }
    }

    /// The baseline compared with, once fixed: publish it with the version
    /// so that another box watches from its first request.
    pub fn baseline(&self) -> Option<Baseline> {
        if !matches!(self.state, State::Watching { .. }) {
            return None;
        }
        Some(Baseline {
            tensors: self
                .tracks
                .iter()
                .filter_map(|t| Some(t.frozen.as_ref()?.published(&t.name, t.kind)))
                .collect(),
        })
    }
}
