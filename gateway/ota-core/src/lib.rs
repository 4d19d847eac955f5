//! The core of the OTA updater: no I/O and no clock.
//!
//! **Invariant:** nothing here reads a file, the network or a clock. Time
//! comes in as unix seconds (or, for [`Progress`], a `Duration` from the
//! driver's monotonic origin), randomness as the appliance's rollout seed.
//! The driver (TUF client, HTTP, block devices, bootloader backends) owns
//! all of that and carries out the [`Command`]s the [`Updater`] returns.
//!
//! The parts, in the order an update meets them:
//! - [`release`]: the release metadata, admission (variant, `min_version`,
//!   bad releases, the version floor) and the staged rollout's waves.
//! - [`chunk`]: the chunk index, the delta [`Plan`] against the active
//!   slot, per-chunk verification and the resume bitmap.
//! - [`state`]: the [`Updater`] state machine, its resume after a power
//!   cut, and whether a boot is accepted ([`BootVerdict`]).
//! - [`progress`]: rate and ETA for the CLI and metrics.
//! - [`history`]: attempts, beside the bad-release set ([`bad`]) that
//!   admission reads; both name the failed [`Step`].
//! - [`brake`]: the fleet brake (paused and yanked releases), signed in
//!   the repository; checked when a release is found and again before a
//!   written slot is armed.
//!
//! # Driving it
//!
//! The driver's loop: feed an event with the time, carry out the commands
//! in order (persisting the state first, as the list says), stop at the
//! first command that fails and report it as [`Event::Error`].
//!
//! ```
//! use nusa_ota_core::{
//!     BootFacts, Command, Event, History, Running, Slot, State, Updater, UpdaterConfig,
//!     Variant,
//! };
//!
//! let facts = BootFacts {
//!     booted: Slot::A,
//!     running: Running {
//!         version: "1.4.2".parse().unwrap(),
//!         variant: Variant::new(Variant::X86_64_RTX).unwrap(),
//!     },
//!     next_boot: Slot::A,
//!     booted_good: true,
//!     inactive_tries_left: None,
//!     inactive_bootable: true,
//! };
//! // At start: resume whatever was persisted (here, nothing: Idle).
//! let (mut updater, commands) = Updater::resume(
//!     UpdaterConfig::default(),
//!     State::Idle,
//!     facts,
//!     History::new(),
//!     1_700_000_000,
//! );
//! assert!(commands.is_empty());
//!
//! let commands = updater.handle(Event::CheckRequested, 1_700_000_000).unwrap();
//! assert_eq!(commands, [Command::Persist(State::Checking), Command::FetchMetadata]);
//! // ... the TUF client answers:
//! let commands = updater.handle(Event::NoUpdate, 1_700_000_005).unwrap();
//! assert_eq!(commands, [Command::Persist(State::Idle)]);
//! ```
#![forbid(unsafe_code)]

pub mod bad;
pub mod brake;
pub mod chunk;
mod digest;
pub mod history;
pub mod progress;
pub mod release;
pub mod state;
mod step;
#[cfg(test)]
mod testutil;
mod version;

pub use bad::{BadRelease, BadReleases};
pub use brake::{Brake, BrakeCheck, BrakeEntry, BrakeError, BrakeKind};
pub use chunk::{
    plan, ByteRange, ChunkBitmap, ChunkError, ChunkIndex, ChunkVerifier, IndexBuilder, IndexError,
    LocalChunks, Plan,
};
pub use digest::{DigestParseError, Sha256Digest, Sha256Hasher};
pub use history::{Attempt, History, Outcome};
pub use progress::Progress;
pub use release::{
    admit, eligible, seed_from_machine_id, Eligibility, Refusal, ReleaseError, ReleaseInfo,
    Running, Variant, Wave, Waves,
};
pub use state::{
    BootFacts, BootVerdict, Command, Event, EventError, FetchProgress, Rollback, Slot, State,
    Updater, UpdaterConfig,
};
pub use step::Step;
pub use version::{Version, VersionError};

/// Seconds since the unix epoch, as the driver's wall clock says.
pub type UnixSecs = u64;
