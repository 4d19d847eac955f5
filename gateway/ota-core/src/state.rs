//! The update state machine, in the shape of quinn-proto: the driver feeds
//! [`Event`]s with the time to [`Updater::handle`] and carries out the
//! [`Command`]s it returns, in order, stopping at the first that fails and
//! reporting it as [`Event::Error`]. After a restart or a power cut,
//! [`Updater::resume`] reconciles the persisted [`State`] with what the
//! bootloader says ([`BootFacts`]) and returns the commands that continue.
//!
//! The state is persisted before it is acted on: a command list that
//! changes the state starts with [`Command::Persist`], so a power cut
//! between persisting and acting leaves a state whose resume repeats the
//! action (every action is idempotent: arming an armed slot, switching to
//! the current target, re-running a health gate).
//!
//! **Invariants** (tested over every state and every boot situation):
//! - The running slot is never a write target: `InvalidateSlot`,
//!   `WriteSlot`, `VerifyImage` and `ArmSlot` name the other slot.
//! - The boot target is switched to a new slot only after its written image
//!   hashed to the signed `image_sha256` and the slot was armed.
//! - A release recorded bad is not installed again unless an operator
//!   forces it; failures before the new system booted (download, write,
//!   verify) are not held against the release.
//! - The version floor: only a newer release is installed automatically;
//!   an older one (or the other slot's older system) needs `force`.
//! - A release whose `min_version` is above the running version, or built
//!   for another variant, is refused even when forced.
//! - A boot is confirmed to the bootloader ([`Command::ConfirmBoot`]) only
//!   for the running slot, and never while a new release on it is on
//!   trial, a reboot is pending, or it runs a release that failed.
//! - The fleet brake ([`crate::brake`]): a release it holds (paused,
//!   yanked) is not started, and a written slot is armed only after a
//!   brake check since the last resume cleared its release
//!   ([`Command::CheckBrake`], answered by [`Event::BrakeChecked`]).

use serde::{Deserialize, Serialize};

use crate::brake::{Brake, BrakeCheck};
use crate::chunk::{ByteRange, ChunkBitmap, Plan};
use crate::digest::Sha256Digest;
use crate::history::History;
use crate::release::{Refusal, ReleaseInfo, Running};
use crate::version::Version;
use crate::UnixSecs;

pub use self::accept::BootVerdict;
pub use self::machine::Updater;
pub use crate::step::Step;

mod accept;
mod boot;
mod brake;
mod machine;
mod resume;
mod transfer;

/// One of the two root filesystem slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Slot {
    A,
    B,
}

impl Slot {
    pub fn other(self) -> Slot {
        match self {
            Slot::A => Slot::B,
            Slot::B => Slot::A,
        }
    }
}

impl std::fmt::Display for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Slot::A => "A",
            Slot::B => "B",
        })
    }
}

/// What the bootloader backend and the running system report at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BootFacts {
    /// The slot the running system booted from (the active slot).
    pub booted: Slot,
    pub running: Running,
    /// The slot the bootloader boots next.
    pub next_boot: Slot,
    /// The booted slot is marked good (no longer counting boot tries).
    pub booted_good: bool,
    /// Boot tries left on the other slot; `None` when it is not armed.
    pub inactive_tries_left: Option<u8>,
    /// The other slot holds a system the bootloader would boot.
    pub inactive_bootable: bool,
}

/// Settings of the updater; see [`UpdaterConfig::default`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdaterConfig {
    /// This appliance's stable rollout seed ([`crate::seed_from_machine_id`]).
    pub seed: u32,
    /// Boot tries a new slot is armed with before the bootloader falls back.
    pub boot_tries: u8,
    /// How long the health gate has after the new system booted.
    pub health_timeout_secs: u64,
    /// The largest coalesced HTTP range.
    pub max_range_bytes: u64,
    /// Download failures retried (with backoff) before the attempt fails.
    pub download_retries: u32,
    /// The first retry's delay; each further one doubles it (up to 1 h).
    pub retry_backoff_secs: u64,
}

impl Default for UpdaterConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            boot_tries: 3,
            health_timeout_secs: 300,
            max_range_bytes: 8 << 20,
            download_retries: 5,
            retry_backoff_secs: 30,
        }
    }
}

/// Where an update stands. Persisted by the driver after every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state")]
pub enum State {
    Idle,
    Checking,
    /// Fetching the chunks the active slot lacks into a download file on
    /// the data partition. `fetch` is `None` until the plan is known.
    Downloading {
        release: ReleaseInfo,
        bytes_done: u64,
        bytes_total: u64,
        fetch: Option<FetchProgress>,
        retries: u32,
    },
    /// Writing the inactive slot (local chunks and downloaded ones). Not
    /// resumed: a power cut restarts the write from the first byte.
    Writing {
        release: ReleaseInfo,
        bytes_written: u64,
    },
    /// The slot verified; checking the fleet brake, then arming it.
    Staged {
        release: ReleaseInfo,
        slot: Slot,
    },
    /// The slot armed; switching the boot target to it and rebooting.
    Rebooting {
        release: ReleaseInfo,
        slot: Slot,
    },
    /// Booted into the new slot; the health gate runs until `deadline`.
    PendingHealth {
        release: ReleaseInfo,
        slot: Slot,
        deadline: UnixSecs,
    },
    Good {
        release: ReleaseInfo,
        slot: Slot,
    },
    Failed {
        release: Option<ReleaseInfo>,
        reason: String,
        step: Step,
        /// A rollback reboot in progress.
        rollback: Option<Rollback>,
    },
}

impl State {
    /// No update under way: a check, an install or an operator rollback
    /// may start from here.
    pub fn update_may_start(&self) -> bool {
        matches!(
            self,
            State::Idle | State::Good { .. } | State::Failed { rollback: None, .. }
        )
    }

    pub fn name(&self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Checking => "Checking",
            State::Downloading { .. } => "Downloading",
            State::Writing { .. } => "Writing",
            State::Staged { .. } => "Staged",
            State::Rebooting { .. } => "Rebooting",
            State::PendingHealth { .. } => "PendingHealth",
            State::Good { .. } => "Good",
            State::Failed { .. } => "Failed",
        }
    }
}

/// Which chunks the download wants and which are fetched and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchProgress {
    pub chunk_size: u32,
    pub image_len: u64,
    pub want: ChunkBitmap,
    pub have: ChunkBitmap,
}

/// Going back to the slot `to`; `reboots` bounds the tries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollback {
    pub to: Slot,
    pub reboots: u8,
}

/// What happened, as the driver reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    CheckRequested,
    /// The time asked for by [`Command::WakeAt`] has come.
    Wake,
    /// The newest release, and the fleet brake from the same verified
    /// metadata (empty when the repository publishes none).
    ReleaseFound {
        release: ReleaseInfo,
        brake: Brake,
    },
    NoUpdate,
    /// An operator's install of a given release; `force` lifts the version
    /// floor, the bad-release record and the waves.
    InstallRequested {
        release: ReleaseInfo,
        force: bool,
    },
    /// The answer to [`Command::PrepareDownload`].
    DownloadPlanned(Plan),
    /// Chunks `first..first + count` are in the download file, verified.
    DownloadProgress {
        first: u32,
        count: u32,
    },
    DownloadDone,
    WriteProgress {
        bytes_written: u64,
    },
    /// The hash of the slot read back after the write (and an fsync).
    WriteVerified {
        sha256: Sha256Digest,
    },
    /// The answer to [`Command::CheckBrake`].
    BrakeChecked(BrakeCheck),
    SlotArmed,
    RebootIssued,
    /// Normally derived by [`Updater::resume`] from [`BootFacts`].
    BootedInto {
        slot: Slot,
        tries_left: Option<u8>,
    },
    HealthPassed,
    HealthFailed(String),
    HealthDeadlinePassed,
    SlotMarkedGood,
    Error {
        step: Step,
        reason: String,
    },
    Abandon,
    /// Operator: accept the new system without (or despite) the gate.
    MarkGood,
    /// Operator: go back to the other slot's system.
    Rollback {
        force: bool,
    },
    /// At boot (`nusactl update boot`), before anything the resume queued
    /// runs: a transfer a power cut interrupted is not the boot's to run.
    BootStarted,
    /// At boot, once what the resume queued ran (the health gate of a slot
    /// on trial, a rollback) without asking for a reboot: is this boot
    /// accepted?
    BootSettled,
    /// The answer to [`Command::ConfirmBoot`]: whether the bootloader had
    /// to be told.
    BootConfirmed {
        wrote: bool,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::CheckRequested => "CheckRequested",
            Event::Wake => "Wake",
            Event::ReleaseFound { .. } => "ReleaseFound",
            Event::NoUpdate => "NoUpdate",
            Event::InstallRequested { .. } => "InstallRequested",
            Event::DownloadPlanned(_) => "DownloadPlanned",
            Event::DownloadProgress { .. } => "DownloadProgress",
            Event::DownloadDone => "DownloadDone",
            Event::WriteProgress { .. } => "WriteProgress",
            Event::WriteVerified { .. } => "WriteVerified",
            Event::BrakeChecked(_) => "BrakeChecked",
            Event::SlotArmed => "SlotArmed",
            Event::RebootIssued => "RebootIssued",
            Event::BootedInto { .. } => "BootedInto",
            Event::HealthPassed => "HealthPassed",
            Event::HealthFailed(_) => "HealthFailed",
            Event::HealthDeadlinePassed => "HealthDeadlinePassed",
            Event::SlotMarkedGood => "SlotMarkedGood",
            Event::Error { .. } => "Error",
            Event::Abandon => "Abandon",
            Event::MarkGood => "MarkGood",
            Event::Rollback { .. } => "Rollback",
            Event::BootStarted => "BootStarted",
            Event::BootSettled => "BootSettled",
            Event::BootConfirmed { .. } => "BootConfirmed",
        }
    }
}

/// What the driver must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Write the state to the data partition (atomically: temp, fsync,
    /// rename) before carrying out the commands after it.
    Persist(State),
    /// Write [`Updater::history`] likewise.
    PersistHistory(History),
    /// Refresh the TUF metadata and answer `ReleaseFound` (with the
    /// brake) or `NoUpdate`.
    FetchMetadata,
    /// Refresh the TUF metadata (offline: the last verified) and answer
    /// [`Event::BrakeChecked`]; asked for before a written slot is armed.
    CheckBrake,
    /// Send [`Event::Wake`] at this time.
    WakeAt(UnixSecs),
    /// A release was not taken; for logs and `nusactl`.
    Refused(Refusal),
    /// Fetch the chunk index target, hash the active slot with its chunk
    /// size, build the plan and answer [`Event::DownloadPlanned`].
    PrepareDownload {
        release: ReleaseInfo,
    },
    /// Fetch these ranges of the image into the download file, verifying
    /// each chunk; report [`Event::DownloadProgress`], then `DownloadDone`.
    Download {
        ranges: Vec<ByteRange>,
    },
    DiscardDownload,
    /// Mark the slot unbootable (clear its good flag and tries).
    InvalidateSlot {
        slot: Slot,
    },
    /// Write the image into the slot from local and downloaded chunks,
    /// each verified; report `WriteProgress`.
    WriteSlot {
        slot: Slot,
        release: ReleaseInfo,
    },
    /// Read the slot back and report `WriteVerified`.
    VerifyImage {
        slot: Slot,
    },
    ArmSlot {
        slot: Slot,
        tries: u8,
    },
    SwitchBootTarget {
        slot: Slot,
    },
    Reboot,
    /// Run the health checks and report before `deadline`.
    RunHealthGate {
        deadline: UnixSecs,
    },
    MarkSlotGood {
        slot: Slot,
    },
    /// A release was recorded bad; for logs, metrics and alerts.
    RecordBadRelease {
        version: Version,
        reason: String,
    },
    /// Tell a bootloader that counts every boot (Jetson's UEFI) that this
    /// boot of `slot`, the running one, is accepted, or a working slot runs
    /// out of retries; answer [`Event::BootConfirmed`]. A no-op for one
    /// that counts only the boots of a slot on trial (systemd-boot).
    ConfirmBoot {
        slot: Slot,
    },
    /// The boot's verdict: the boot-time run ends here and reports it.
    EndBoot(BootVerdict),
}

/// An event the updater did not act on; the state is unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EventError {
    #[error("{event} is not expected in state {state}")]
    Unexpected {
        event: &'static str,
        state: &'static str,
    },
    #[error("install refused: {0}")]
    Refused(Refusal),
    #[error("rolling back to slot {to} installs the older system there; repeat with force")]
    RollbackNeedsForce { to: Slot },
    #[error("slot {to} holds no bootable system to roll back to")]
    NothingToRollBackTo { to: Slot },
    #[error("chunks {first}..{end} are outside the download's {count} chunks")]
    ChunkOutOfRange { first: u32, end: u64, count: u32 },
    #[error("wrote {bytes_written} bytes, the image is {image_len}")]
    WriteOverrun { bytes_written: u64, image_len: u64 },
    #[error("the health deadline {deadline} has not passed (now {now})")]
    DeadlineNotReached { deadline: UnixSecs, now: UnixSecs },
    #[error("booted into slot {reported}, but the boot facts say slot {facts}")]
    BootContradiction { reported: Slot, facts: Slot },
}

#[cfg(test)]
mod invariants;
#[cfg(test)]
mod tests;
