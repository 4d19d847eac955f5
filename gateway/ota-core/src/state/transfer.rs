//! The download and write half of the updater: admission and waves,
//! the plan, the resumable download, the slot write and its verification.

use super::machine::{Handled, Updater};
use super::{Command, Event, EventError, FetchProgress, State, Step};
use crate::brake::Brake;
use crate::chunk::{chunk_range, coalesce, ByteRange, Plan};
use crate::release::{admit, eligible, Eligibility, Refusal, ReleaseInfo};
use crate::UnixSecs;

impl Updater {
    pub(super) fn downloading(
        &mut self,
        event: Event,
        now: UnixSecs,
        unexpected: EventError,
    ) -> Handled {
        let State::Downloading {
            release,
            bytes_done,
            bytes_total,
            fetch,
            retries,
        } = &mut self.state
        else {
            return Err(unexpected);
        };
        match event {
            Event::DownloadPlanned(plan) => {
                if plan.image_len() != release.image_len
                    || plan.image_sha256() != release.image_sha256
                {
                    let reason = format!(
                        "the chunk index describes a {}-byte image {}, the signed release a {}-byte image {}",
                        plan.image_len(),
                        plan.image_sha256(),
                        release.image_len,
                        release.image_sha256
                    );
                    let cmds = vec![Command::DiscardDownload];
                    return Ok(self.fail(Step::Download, &reason, false, cmds, now));
                }
                let have = match fetch.take() {
                    Some(f)
                        if f.chunk_size == plan.chunk_size()
                            && f.have.len() == plan.chunk_count() =>
                    {
                        f.have
                    }
                    _ => plan.fetch_chunks().cleared(),
                };
                let progress = FetchProgress {
                    chunk_size: plan.chunk_size(),
                    image_len: plan.image_len(),
                    want: plan.fetch_chunks().clone(),
                    have,
                };
                *bytes_total = plan.bytes_to_fetch();
                *bytes_done = fetched_bytes(&progress);
                let ranges = missing_ranges(&progress, &plan);
                *fetch = Some(progress);
                if ranges.is_empty() {
                    return Ok(self.downloaded());
                }
                Ok(self.persist(vec![Command::Download { ranges }]))
            }
            Event::DownloadProgress { first, count } => {
                let f = fetch.as_mut().ok_or(unexpected)?;
                let end = u64::from(first) + u64::from(count);
                if end > u64::from(f.have.len()) {
                    return Err(EventError::ChunkOutOfRange {
                        first,
                        end,
                        count: f.have.len(),
                    });
                }
                for i in first..first + count {
                    // In range: checked above.
                    let fresh = f.have.set(i).unwrap_or(false);
                    if fresh && f.want.get(i) {
                        *bytes_done +=
                            chunk_range(i, f.chunk_size, f.image_len).map_or(0, |r| r.len());
                    }
                }
                // Progress ends a run of failures: retries count in a row.
                *retries = 0;
                Ok(self.persist(Vec::new()))
            }
            Event::DownloadDone => {
                let f = fetch.as_ref().ok_or(unexpected)?;
                let missing: Vec<u32> = f.have.missing(&f.want).collect();
                if missing.is_empty() {
                    return Ok(self.downloaded());
                }
                let max = self.config.max_range_bytes;
                let ranges = coalesce(missing, f.chunk_size, f.image_len, max);
                Ok(vec![Command::Download { ranges }])
            }
            Event::Wake => Ok(vec![Command::PrepareDownload {
                release: release.clone(),
            }]),
            Event::Error { step, reason } => {
                *retries += 1;
                if *retries > self.config.download_retries {
                    let reason = format!("{reason} (after {} retries)", *retries - 1);
                    let cmds = vec![Command::DiscardDownload];
                    return Ok(self.fail(step, &reason, false, cmds, now));
                }
                let shift = (*retries - 1).min(16);
                let delay = self
                    .config
                    .retry_backoff_secs
                    .saturating_mul(1 << shift)
                    .min(3600);
                Ok(self.persist(vec![Command::WakeAt(now.saturating_add(delay))]))
            }
            Event::Abandon => Ok(self.abandon(vec![Command::DiscardDownload], now)),
            _ => Err(unexpected),
        }
    }

    pub(super) fn writing(
        &mut self,
        event: Event,
        now: UnixSecs,
        unexpected: EventError,
    ) -> Handled {
        let slot = self.inactive();
        let State::Writing {
            release,
            bytes_written,
        } = &mut self.state
        else {
            return Err(unexpected);
        };
        match event {
            Event::WriteProgress { bytes_written: n } => {
                if n > release.image_len {
                    return Err(EventError::WriteOverrun {
                        bytes_written: n,
                        image_len: release.image_len,
                    });
                }
                *bytes_written = n;
                // Not persisted: a power cut restarts the write anyway.
                Ok(if n == release.image_len {
                    vec![Command::VerifyImage { slot }]
                } else {
                    Vec::new()
                })
            }
            Event::WriteVerified { sha256 } => {
                if *bytes_written != release.image_len {
                    let reason = format!(
                        "slot {slot} verified after {} of {} bytes were written",
                        bytes_written, release.image_len
                    );
                    return Ok(self.fail(
                        Step::Verify,
                        &reason,
                        false,
                        vec![Command::DiscardDownload],
                        now,
                    ));
                }
                if sha256 != release.image_sha256 {
                    let reason = format!(
                        "slot {slot} hashes to {sha256}, the signed image is {}",
                        release.image_sha256
                    );
                    return Ok(self.fail(
                        Step::Verify,
                        &reason,
                        false,
                        vec![Command::DiscardDownload],
                        now,
                    ));
                }
                let release = release.clone();
                // The brake before arming: a release paused while it
                // downloaded is not applied.
                let cmds = vec![Command::DiscardDownload, Command::CheckBrake];
                Ok(self.set(State::Staged { release, slot }, cmds))
            }
            Event::Error { step, reason } => {
                Ok(self.fail(step, &reason, false, vec![Command::DiscardDownload], now))
            }
            Event::Abandon => Ok(self.abandon(vec![Command::DiscardDownload], now)),
            _ => Err(unexpected),
        }
    }

    /// A release from the metadata: admitted, not held by the brake, in
    /// this appliance's wave?
    pub(super) fn found(
        &mut self,
        release: ReleaseInfo,
        brake: &Brake,
        now: UnixSecs,
    ) -> Vec<Command> {
        if let Err(refusal) = admit(&release, &self.facts.running, self.history.bad_set(), false) {
            return self.set(State::Idle, vec![Command::Refused(refusal)]);
        }
        if let Some(refusal) = brake.holds(release.version, &release.variant) {
            return self.set(State::Idle, vec![Command::Refused(refusal)]);
        }
        let version = release.version;
        match eligible(self.config.seed, &release.waves, now) {
            Eligibility::Now => self.start(release, false, now),
            Eligibility::NotBefore(at) => {
                let refusal = Refusal::NotYet {
                    version,
                    not_before: at,
                };
                self.set(
                    State::Idle,
                    vec![Command::Refused(refusal), Command::WakeAt(at)],
                )
            }
            Eligibility::Never => {
                let refusal = Refusal::OutsideRollout { version };
                self.set(State::Idle, vec![Command::Refused(refusal)])
            }
        }
    }

    pub(super) fn start(
        &mut self,
        release: ReleaseInfo,
        forced: bool,
        now: UnixSecs,
    ) -> Vec<Command> {
        self.history.begin(release.version, forced, now);
        let cmds = vec![
            Command::PersistHistory(self.history.clone()),
            Command::PrepareDownload {
                release: release.clone(),
            },
        ];
        let state = State::Downloading {
            bytes_done: 0,
            bytes_total: release.image_len,
            release,
            fetch: None,
            retries: 0,
        };
        self.set(state, cmds)
    }

    pub(super) fn downloaded(&mut self) -> Vec<Command> {
        let State::Downloading { release, .. } = &self.state else {
            return Vec::new();
        };
        let release = release.clone();
        self.start_writing(release)
    }

    pub(super) fn start_writing(&mut self, release: ReleaseInfo) -> Vec<Command> {
        let slot = self.inactive();
        let cmds = vec![
            Command::InvalidateSlot { slot },
            Command::WriteSlot {
                slot,
                release: release.clone(),
            },
        ];
        let state = State::Writing {
            release,
            bytes_written: 0,
        };
        self.set(state, cmds)
    }
}

fn fetched_bytes(f: &FetchProgress) -> u64 {
    f.want
        .ones()
        .filter(|&i| f.have.get(i))
        .filter_map(|i| chunk_range(i, f.chunk_size, f.image_len))
        .map(|r| r.len())
        .sum()
}

fn missing_ranges(f: &FetchProgress, plan: &Plan) -> Vec<ByteRange> {
    // Lengths agree: `have` was made for this plan's chunk count.
    plan.remaining(&f.have).unwrap_or_default()
}

#[cfg(test)]
mod tests;
