//! Publishing and the client against real repositories built on disk in
//! temporary folders. `Fixture` (here) builds them with the crate's
//! publishing API: a repository, its keys, a device's shipped root and
//! datastore, all in one temporary folder. `forge` plays the attacker,
//! rewriting files with tough directly.

mod attacks;
mod forge;
mod publish;
mod rotation;
mod target_attacks;
mod trust;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use nusa_ota_tuf::{
    add_release, create_keys, init_repo, local_urls, Client, Expiries, FilesystemTransport,
    KeyCounts, Limits, SigningKeys, Thresholds, Transport, TufError, METADATA_DIR, TARGETS_DIR,
};
use tempfile::TempDir;

pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);

pub struct Fixture {
    pub dir: TempDir,
    pub repo: PathBuf,
    pub keys: SigningKeys,
    /// The root.json a device image would ship: version 1.
    pub shipped_root: PathBuf,
    /// The device's data partition.
    pub datastore: PathBuf,
}

impl Fixture {
    /// One key per role, thresholds 1, standard expiries.
    pub async fn new() -> Self {
        Self::with(KeyCounts::default(), Thresholds::default()).await
    }

    pub async fn with(counts: KeyCounts, thresholds: Thresholds) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let keys = create_keys(&dir.path().join("keys"), counts).expect("create keys");
        let repo = dir.path().join("repo");
        init_repo(&repo, &keys, &thresholds, &Expiries::standard())
            .await
            .expect("init repo");
        let shipped_root = dir.path().join("shipped-root.json");
        std::fs::copy(repo.join(METADATA_DIR).join("root.json"), &shipped_root).expect("ship root");
        let datastore = dir.path().join("data/tuf");
        Self {
            dir,
            repo,
            keys,
            shipped_root,
            datastore,
        }
    }

    pub fn metadata(&self) -> PathBuf {
        self.repo.join(METADATA_DIR)
    }

    pub fn targets(&self) -> PathBuf {
        self.repo.join(TARGETS_DIR)
    }

    /// Writes a release's source file outside the repository (under a
    /// number, not its name, which a test may make hostile).
    pub fn source(&self, bytes: &[u8]) -> PathBuf {
        let dir = self.dir.path().join("src");
        std::fs::create_dir_all(&dir).expect("src dir");
        let path = dir.join(unique().to_string());
        std::fs::write(&path, bytes).expect("write source");
        path
    }

    /// Publishes a release with the fixture's keys and standard expiries.
    pub async fn release(&self, variant: &str, version: &str, files: &[(&str, &[u8])]) {
        self.release_with(variant, version, files, &self.keys, &Expiries::standard())
            .await
            .expect("publish release");
    }

    pub async fn release_with(
        &self,
        variant: &str,
        version: &str,
        files: &[(&str, &[u8])],
        keys: &SigningKeys,
        expiries: &Expiries,
    ) -> Result<Vec<String>, nusa_ota_tuf::PublishError> {
        let paths: Vec<(&str, PathBuf)> = files
            .iter()
            .map(|(name, bytes)| (*name, self.source(bytes)))
            .collect();
        let files: Vec<(&str, &Path)> = paths.iter().map(|(n, p)| (*n, p.as_path())).collect();
        let mut custom = serde_json::Map::new();
        custom.insert("variant".into(), variant.into());
        add_release(
            &self.repo, keys, variant, version, &files, &custom, expiries,
        )
        .await
    }

    /// A device check: a new `Client` (as after a reboot) over the
    /// filesystem transport, with the persistent datastore.
    pub async fn client(&self) -> Result<Client, TufError> {
        self.client_via(FilesystemTransport, Limits::default())
            .await
    }

    pub async fn client_via(
        &self,
        transport: impl Transport + 'static,
        limits: Limits,
    ) -> Result<Client, TufError> {
        let (metadata_url, targets_url) = local_urls(&self.repo)?;
        Client::open(
            &self.shipped_root,
            &self.datastore,
            metadata_url,
            targets_url,
            transport,
            limits,
        )
        .await
    }

    /// The stored file of a target (`<sha256>.<name>` under targets/).
    pub async fn stored_target(&self, name: &str) -> PathBuf {
        let client = self.client().await.expect("client");
        let info = client.target_info(name).expect("target info");
        info.url.to_file_path().expect("file URL")
    }
}

/// Standard expiries except the timestamp's (which may be in the past).
pub fn expiries_with_timestamp(at: SystemTime) -> Expiries {
    Expiries {
        timestamp: at,
        ..Expiries::standard()
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes);
    let mut out = [0; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
