//! Carrying out one command. `Ok(Err(reason))` is a failed step the core
//! decides about; `Err` is the runner itself failing (its own disk).

use nusa_ota_core::release::IMAGE_FILE;
use nusa_ota_core::{Command, Event, ReleaseInfo, Sha256Digest, State, Step};
use nusa_ota_tuf::TufError;

use super::{slots_slot, unix_now, Fail, RunError, Runner};
use crate::slotdev::SlotDevice;

type Done = Result<Result<(), Fail>, RunError>;

impl Runner {
    /// Records a state that changes the box in nusad's audit log (over its
    /// admin socket); other states, or nusad not answering, record nothing.
    async fn audit(&self, state: &State) {
        let Some(socket) = self.setup.audit_socket.as_deref().filter(|s| s.exists()) else {
            return;
        };
        let (action, version, error) = match state {
            State::Staged { release, .. } => ("update.download", &release.version, None),
            State::Rebooting { release, .. } => ("update.apply", &release.version, None),
            State::Good { release, .. } => ("update.mark_good", &release.version, None),
            // Failed once the new slot booted (or should have): the box is
            // back on the previous slot, a rollback. Before: nothing
            // changed on the box but the download.
            State::Failed {
                release: Some(release),
                reason,
                step,
                ..
            } => (
                match step {
                    Step::Boot | Step::Health | Step::MarkGood | Step::Rollback => {
                        "update.rollback"
                    }
                    _ => "update.fail",
                },
                &release.version,
                Some(format!("{step:?}: {reason}")),
            ),
            _ => return,
        };
        let body = nusa_admin::AuditAppend {
            action: action.into(),
            target: format!("release {version}"),
            error,
            detail: serde_json::json!({ "state": state.name() }),
        };
        let client = nusa_admin::Client::new(socket, std::time::Duration::from_secs(5));
        if let Err(e) = client
            .post::<_, serde_json::Value>(nusa_admin::AUDIT, &body)
            .await
        {
            tracing::warn!(%action, error = %e, "recording the update step in nusad's audit log");
        }
    }

    /// `Command::Persist`: the state on disk, in the audit log when it is
    /// a step that changes the box, and in the progress file.
    pub(super) async fn record_state(&mut self, state: &State) -> Result<(), RunError> {
        self.setup.store.save_state(state)?;
        self.audit(state).await;
        self.write_metrics(&format!(
            "# HELP nusa_update_state The updater's state (1 for the current one).\n# TYPE nusa_update_state gauge\nnusa_update_state{{state=\"{}\"}} 1\n",
            state.name()
        ));
        Ok(())
    }

    pub(super) async fn exec(&mut self, cmd: Command) -> Done {
        let backend = self.setup.backend.name();
        let slots = |source| RunError::Slots { backend, source };
        match cmd {
            Command::Persist(state) => self.record_state(&state).await?,
            Command::PersistHistory(h) => self.setup.store.save_history(&h)?,
            Command::Refused(r) => {
                tracing::info!(refusal = %r, "release not taken");
                self.setup
                    .store
                    .write_atomic("refusal.txt", r.to_string().as_bytes())?;
            }
            Command::RecordBadRelease { version, reason } => {
                tracing::error!(%version, %reason, "release recorded bad: it will not be installed again automatically");
            }
            Command::FetchMetadata => {
                // A fresh client each check: metadata is refreshed and
                // verified from the trusted root and the datastore.
                self.tuf = None;
                let event = match self.latest().await {
                    Ok(Some(release)) => match self.read_brake().await? {
                        Ok(brake) => Event::ReleaseFound { release, brake },
                        Err(e) => return Ok(Err(e)),
                    },
                    Ok(None) => Event::NoUpdate,
                    Err(e) => return Ok(Err(e)),
                };
                self.setup.store.save_wake_at(None)?;
                self.feed(event)?;
            }
            Command::CheckBrake => {
                let check = self.check_brake().await?;
                self.feed(Event::BrakeChecked(check))?;
            }
            Command::PrepareDownload { release } => match self.prepare(&release).await? {
                Ok(plan) => self.feed(Event::DownloadPlanned(plan))?,
                Err(e) => return Ok(Err(e)),
            },
            Command::Download { ranges } => return self.download(ranges).await,
            Command::DiscardDownload => {
                self.index = None;
                self.setup.store.discard_download()?;
            }
            Command::InvalidateSlot { slot } => {
                if let Err(e) = self.setup.backend.disarm(slots_slot(slot)) {
                    return Ok(Err(format!("disarming slot {slot}: {e}")));
                }
            }
            Command::WriteSlot { slot, release } => return self.write_slot(slot, &release).await,
            Command::VerifyImage { slot } => {
                let State::Writing { release, .. } = self.updater.state() else {
                    return Ok(Err("verify outside Writing".into()));
                };
                let len = release.image_len;
                let path = self.setup.slots[slot_index(slot)].clone();
                let hashed =
                    tokio::task::spawn_blocking(move || -> Result<Sha256Digest, String> {
                        let dev = SlotDevice::open_read(&path).map_err(|e| e.to_string())?;
                        dev.hash_prefix(len).map_err(|e| e.to_string())
                    })
                    .await
                    .map_err(|e| e.to_string());
                match hashed.and_then(|r| r) {
                    Ok(sha256) => self.feed(Event::WriteVerified { sha256 })?,
                    Err(e) => return Ok(Err(format!("reading slot {slot} back: {e}"))),
                }
            }
            Command::ArmSlot { slot, tries } => {
                let version = match self.updater.state() {
                    State::Staged { release, .. } | State::Rebooting { release, .. } => {
                        release.version.to_string()
                    }
                    _ => String::new(),
                };
                if let Err(e) = self.install_boot_files(slot, &version).await {
                    return Ok(Err(e));
                }
                match self
                    .setup
                    .backend
                    .arm(slots_slot(slot), u32::from(tries), &version)
                {
                    Ok(()) => self.feed(Event::SlotArmed)?,
                    Err(e) => return Ok(Err(format!("arming slot {slot}: {e}"))),
                }
            }
            Command::SwitchBootTarget { slot } => {
                let status = self.setup.backend.status().map_err(slots)?;
                if status.next != slots_slot(slot) {
                    if let Err(e) = self.setup.backend.prefer(slots_slot(slot)) {
                        return Ok(Err(format!("booting slot {slot} next: {e}")));
                    }
                }
            }
            Command::RunHealthGate { deadline } => {
                let now = unix_now();
                if now >= deadline {
                    self.feed(Event::HealthDeadlinePassed)?;
                } else {
                    let within = std::time::Duration::from_secs(deadline - now);
                    match self.setup.gate.check(within).await {
                        Ok(()) => self.feed(Event::HealthPassed)?,
                        Err(why) => self.feed(Event::HealthFailed(why))?,
                    }
                }
            }
            Command::MarkSlotGood { slot } => {
                match self.setup.backend.mark_good(slots_slot(slot)) {
                    Ok(()) => self.feed(Event::SlotMarkedGood)?,
                    Err(e) => return Ok(Err(format!("marking slot {slot} good: {e}"))),
                }
            }
            Command::ConfirmBoot { slot } => {
                let slot = slots_slot(slot);
                let wrote = self.setup.backend.confirm_boot(slot).map_err(slots)?;
                if wrote {
                    tracing::info!(%slot, backend, "boot confirmed to the bootloader");
                }
                self.feed(Event::BootConfirmed { wrote })?;
            }
            Command::Reboot | Command::WakeAt(_) | Command::EndBoot(_) => {}
        }
        Ok(Ok(()))
    }

    /// The release's boot files (kernel, initrd) into the slot's folder on
    /// the boot partition, each verified by TUF, written atomically.
    async fn install_boot_files(
        &mut self,
        slot: nusa_ota_core::Slot,
        version: &str,
    ) -> Result<(), Fail> {
        let Some(bf) = self.setup.boot_files.clone() else {
            return Ok(());
        };
        let dir = std::path::PathBuf::from(bf.dir.replace("{slot}", slots_slot(slot).as_str()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let variant = self.setup.variant.as_str().to_string();
        for file in &bf.files {
            let name = nusa_ota_tuf::target_name(&variant, version, file);
            let bytes = self
                .tuf()
                .await?
                .read_target(&name)
                .await
                .map_err(|e| format!("boot file {name}: {e}"))?;
            crate::store::write_atomic(&dir.join(file), &bytes).map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    /// The newest release for this variant, checked against its signed
    /// targets; `None` when the repository has none for the variant.
    pub(crate) async fn latest(&mut self) -> Result<Option<ReleaseInfo>, Fail> {
        let variant = self.setup.variant.as_str().to_string();
        let tuf = self.tuf().await?;
        let target = match tuf.latest_release(&variant) {
            Ok(t) => t,
            Err(TufError::UnknownVariant { .. }) => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let image = target
            .files
            .iter()
            .find(|f| f.file == IMAGE_FILE)
            .ok_or_else(|| format!("release {} has no {IMAGE_FILE}", target.version))?;
        let release: ReleaseInfo =
            serde_json::from_value(serde_json::Value::Object(image.custom.clone()))
                .map_err(|e| format!("release {} metadata: {e}", target.version))?;
        // The metadata repeats what TUF signed for the image; they must agree.
        if release.image_target != image.info.name
            || release.image_len != image.info.length
            || release.image_sha256.as_bytes() != &image.info.sha256
            || release.version.to_string() != target.version.to_string()
        {
            return Err(format!(
                "release {} metadata disagrees with its signed image target",
                target.version
            ));
        }
        Ok(Some(release))
    }
}

pub(super) fn slot_index(slot: nusa_ota_core::Slot) -> usize {
    match slot {
        nusa_ota_core::Slot::A => 0,
        nusa_ota_core::Slot::B => 1,
    }
}
