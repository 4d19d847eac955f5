//! A whole updater on files: a signed repository built with the publishing
//! API, slot A and B as image files, the file-backed bootloader (its
//! `simulate_boot` is the power-on), and a health gate test double.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nusa_ota::health::{GateFuture, HealthGate};
use nusa_ota::runner::{Repository, Runner, Setup};
use nusa_ota::store::Store;
use nusa_ota_core::{UpdaterConfig, Variant, Version, Waves};
use nusa_ota_publish::{add_release, NewRelease};
use nusa_ota_slots::{FileBackend, SlotBackend};
use nusa_ota_tuf::{Expiries, KeyCounts, SigningKeys, Thresholds};

pub const SLOT_BYTES: u64 = 8 << 20;
pub const IMAGE_BYTES: usize = 3 << 20;
pub const CHUNK: u32 = 64 << 10;

/// Test double of the health gate: passes or fails as told.
pub struct Gate(pub Arc<AtomicBool>);

impl HealthGate for Gate {
    fn check(&self, _within: Duration) -> GateFuture<'_> {
        let ok = self.0.load(Ordering::SeqCst);
        Box::pin(async move {
            if ok {
                Ok(())
            } else {
                Err("/v2/health/ready answered 503 Service Unavailable".into())
            }
        })
    }
}

/// A root filesystem image: a header naming its version (what "the
/// running system" reads), then content where `changed` bytes at `at`
/// depend on the version.
pub fn image(version: &str, at: usize, changed: usize) -> Vec<u8> {
    let mut img: Vec<u8> = (0..IMAGE_BYTES)
        .map(|i| ((i as u64 * 2654435761) >> 13) as u8)
        .collect();
    let header = format!("NUSAIMG {version}\n");
    img[..header.len()].copy_from_slice(header.as_bytes());
    let salt = version
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    for (k, b) in img[at..at + changed].iter_mut().enumerate() {
        *b = (k as u8).wrapping_mul(salt) ^ salt;
    }
    img
}

pub struct Rig {
    pub dir: tempfile::TempDir,
    pub repo: PathBuf,
    pub keys: SigningKeys,
    pub slots: [PathBuf; 2],
    pub boot: PathBuf,
    pub state: PathBuf,
    pub healthy: Arc<AtomicBool>,
    pub repository: Option<Repository>,
}

impl Rig {
    /// Slot A holds 1.0.0 and is booted and good; slot B is empty.
    pub async fn new() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("repo");
        let keys =
            nusa_ota_tuf::create_keys(&dir.path().join("keys"), KeyCounts::default()).unwrap();
        let one = std::num::NonZeroU64::MIN;
        nusa_ota_tuf::init_repo(
            &repo,
            &keys,
            &Thresholds {
                root: one,
                targets: one,
                snapshot: one,
                timestamp: one,
            },
            &Expiries::standard(),
        )
        .await
        .unwrap();
        let slots = [dir.path().join("slot-a.img"), dir.path().join("slot-b.img")];
        let mut a = image("1.0.0", 0, 0);
        a.resize(SLOT_BYTES as usize, 0);
        std::fs::write(&slots[0], &a).unwrap();
        std::fs::write(&slots[1], vec![0u8; SLOT_BYTES as usize]).unwrap();
        std::fs::create_dir_all(dir.path().join("boot")).unwrap();
        Rig {
            boot: dir.path().join("boot"),
            state: dir.path().join("state"),
            repo,
            keys,
            slots,
            healthy: Arc::new(AtomicBool::new(true)),
            repository: None,
            dir,
        }
    }

    /// Publishes `version` whose image differs from 1.0.0's in `changed`
    /// bytes at `at`. Returns the image.
    pub async fn publish(&self, version: &str, at: usize, changed: usize) -> Vec<u8> {
        let img = image(version, at, changed);
        let path = self.dir.path().join(format!("{version}.img"));
        std::fs::write(&path, &img).unwrap();
        add_release(
            &self.repo,
            &self.keys,
            NewRelease {
                variant: "x86_64-rtx",
                version,
                image: &path,
                min_version: None,
                waves: Waves::default(),
                chunk_size: CHUNK,
                extra_files: Vec::new(),
            },
            &Expiries::standard(),
        )
        .await
        .unwrap();
        img
    }

    pub fn backend(&self) -> FileBackend {
        FileBackend::new(&self.boot).unwrap()
    }

    /// The version in the booted slot's image header.
    pub fn running(&self) -> Version {
        let booted = self.backend().status().unwrap().booted;
        let slot = &self.slots[if booted == nusa_ota_slots::Slot::A {
            0
        } else {
            1
        }];
        let head = std::fs::read(slot).unwrap();
        let line = String::from_utf8_lossy(&head[..32]).to_string();
        let v = line
            .strip_prefix("NUSAIMG ")
            .and_then(|l| l.split('\n').next())
            .unwrap_or("0.0.0");
        v.parse().unwrap()
    }

    pub fn setup(&self) -> Setup {
        Setup {
            variant: Variant::new("x86_64-rtx").unwrap(),
            running: self.running(),
            store: Store::open(&self.state).unwrap(),
            trusted_root: self.repo.join("metadata/1.root.json"),
            repository: self
                .repository
                .clone()
                .unwrap_or_else(|| Repository::Dir(self.repo.clone())),
            slots: self.slots.clone(),
            backend: Box::new(self.backend()),
            gate: Box::new(Gate(self.healthy.clone())),
            config: UpdaterConfig {
                seed: 1,
                boot_tries: 3,
                health_timeout_secs: 30,
                max_range_bytes: 1 << 20,
                download_retries: 3,
                retry_backoff_secs: 0,
            },
            max_wait: Duration::from_secs(5),
            on_progress: None,
            boot_files: None,
            metrics_file: Some(self.state.join("metrics.prom")),
            cut_write_at: None,
            audit_socket: None,
            cut_after_commands: None,
            checkpoint_bytes: 32 << 20,
        }
    }

    pub fn runner(&self) -> Runner {
        Runner::open(self.setup()).unwrap()
    }

    /// Power on: the bootloader picks a slot.
    pub fn boot(&self) -> nusa_ota_slots::Slot {
        self.backend().simulate_boot().unwrap()
    }

    pub fn slot_bytes(&self, slot: nusa_ota_slots::Slot, len: usize) -> Vec<u8> {
        let i = if slot == nusa_ota_slots::Slot::A {
            0
        } else {
            1
        };
        std::fs::read(&self.slots[i]).unwrap()[..len].to_vec()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}
