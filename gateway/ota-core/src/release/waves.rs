//! Staged rollout in waves, after Bottlerocket: each appliance has a stable
//! seed, the release lists (start time, fraction of the fleet) steps, and an
//! appliance takes the release once the wave in force covers its seed.
//!
//! The seed is a `u32` read as the point `seed / 2^32` in `[0, 1)`; a wave
//! with fraction `f` covers the seeds below `f * 2^32`. Bottlerocket's seeds
//! are `0..2048`, which quantises fractions to 1/2048; the wider seed costs
//! nothing and lets a canary be 0.01 % of the fleet.

use serde::{Deserialize, Serialize};

use crate::{Sha256Digest, UnixSecs};

/// At most this many waves in one release; a rollout plan is a handful.
pub const MAX_WAVES: usize = 64;

/// From `start` (unix seconds) on, `fraction` of the fleet takes the release.
///
/// Written as `{"start": .., "fraction_ppm": ..}`, parts per million: TUF
/// signs canonical JSON, which has no floating point numbers.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(from = "RawWave", into = "RawWave")]
pub struct Wave {
    pub start: UnixSecs,
    pub fraction: f64,
}

#[derive(Serialize, Deserialize)]
struct RawWave {
    start: UnixSecs,
    fraction_ppm: u32,
}

impl From<RawWave> for Wave {
    fn from(w: RawWave) -> Wave {
        Wave {
            start: w.start,
            fraction: f64::from(w.fraction_ppm) / 1e6,
        }
    }
}

impl From<Wave> for RawWave {
    fn from(w: Wave) -> RawWave {
        RawWave {
            start: w.start,
            // Waves::new keeps fractions in 0..=1, so this fits a u32.
            fraction_ppm: (w.fraction.clamp(0.0, 1.0) * 1e6).round() as u32,
        }
    }
}

/// The waves of a release: starts strictly increasing, fractions in
/// `0.0..=1.0` and never decreasing (a rollout does not take a release back
/// from appliances that already have it). No waves: everyone, at once.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<Wave>", into = "Vec<Wave>")]
pub struct Waves(Vec<Wave>);

impl Waves {
    pub fn new(waves: Vec<Wave>) -> Result<Self, WavesError> {
        if waves.len() > MAX_WAVES {
            return Err(WavesError::TooMany(waves.len()));
        }
        for (i, w) in waves.iter().enumerate() {
            if !(0.0..=1.0).contains(&w.fraction) {
                return Err(WavesError::Fraction {
                    wave: i,
                    fraction: w.fraction,
                });
            }
            if let Some(prev) = i.checked_sub(1).map(|p| waves[p]) {
                if w.start <= prev.start {
                    return Err(WavesError::StartOrder { wave: i });
                }
                if w.fraction < prev.fraction {
                    return Err(WavesError::FractionOrder { wave: i });
                }
            }
        }
        Ok(Self(waves))
    }

    pub fn as_slice(&self) -> &[Wave] {
        &self.0
    }

    /// The share of the fleet the rollout covers at `now`.
    pub fn fraction_at(&self, now: UnixSecs) -> f64 {
        if self.0.is_empty() {
            return 1.0;
        }
        self.0
            .iter()
            .take_while(|w| w.start <= now)
            .last()
            .map_or(0.0, |w| w.fraction)
    }
}

impl TryFrom<Vec<Wave>> for Waves {
    type Error = WavesError;

    fn try_from(waves: Vec<Wave>) -> Result<Self, WavesError> {
        Self::new(waves)
    }
}

impl From<Waves> for Vec<Wave> {
    fn from(w: Waves) -> Vec<Wave> {
        w.0
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WavesError {
    #[error("a release has at most {MAX_WAVES} waves, this one has {0}")]
    TooMany(usize),
    #[error("wave {wave}: fraction {fraction} is outside 0.0..=1.0")]
    Fraction { wave: usize, fraction: f64 },
    #[error("wave {wave}: start is not after the previous wave's")]
    StartOrder { wave: usize },
    #[error("wave {wave}: fraction is below the previous wave's (a rollout never shrinks)")]
    FractionOrder { wave: usize },
}

/// When an appliance takes a release.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Eligibility {
    Now,
    /// The first wave that covers this appliance starts then.
    NotBefore(UnixSecs),
    /// No wave of this release covers this appliance.
    Never,
}

/// Whether the appliance with `seed` takes a release with `waves` at `now`.
/// The same seed, waves and time always give the same answer, and a box
/// once covered stays covered (fractions never decrease).
pub fn eligible(seed: u32, waves: &Waves, now: UnixSecs) -> Eligibility {
    let point = f64::from(seed) / 4_294_967_296.0;
    if point < waves.fraction_at(now) {
        return Eligibility::Now;
    }
    waves
        .as_slice()
        .iter()
        .find(|w| w.start > now && point < w.fraction)
        .map_or(Eligibility::Never, |w| Eligibility::NotBefore(w.start))
}

/// A stable, evenly spread seed from the appliance's machine id. Domain
/// separated so it is not a prefix of any other hash of the same id.
pub fn seed_from_machine_id(machine_id: &[u8]) -> u32 {
    let mut input = b"nusa-ota-wave-seed\0".to_vec();
    input.extend_from_slice(machine_id);
    let d = Sha256Digest::of(&input);
    let b = d.as_bytes();
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}
