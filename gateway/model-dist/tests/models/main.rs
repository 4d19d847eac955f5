//! Publishing and installing model versions against real TUF repositories
//! built in temporary folders with real keys. `Fixture` (here) builds them
//! with the crate's API; `forge` plays the attacker with tough directly,
//! re-signing the rest of the chain with the real keys so the attack is
//! the only defect; `http` is a small HTTP server (ranges, request log,
//! endless bodies).
#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

mod attacks;
mod forge;
mod http;
mod install;
mod publish;

use std::path::{Path, PathBuf};

use nusa_model_dist::{
    init_repo, publish_version, Manifest, ModelClient, ModelError, Provenance, PublishError,
    SigningKeys,
};
use tempfile::TempDir;

pub struct Fixture {
    pub dir: TempDir,
    pub repo: PathBuf,
    pub keys_dir: PathBuf,
    pub keys: SigningKeys,
    /// The model repository's root.json, as a device image ships it.
    pub shipped_root: PathBuf,
    /// The device's model datastore (last-seen metadata).
    pub datastore: PathBuf,
    /// Where the device installs models.
    pub dest: PathBuf,
}

impl Fixture {
    pub async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("model-repo");
        let keys_dir = dir.path().join("model-keys");
        let keys = init_repo(&repo, &keys_dir).await.unwrap();
        let shipped_root = dir.path().join("models-root.json");
        std::fs::copy(repo.join("metadata/root.json"), &shipped_root).unwrap();
        Self {
            datastore: dir.path().join("data/model-tuf"),
            dest: dir.path().join("data/models"),
            dir,
            repo,
            keys_dir,
            keys,
            shipped_root,
        }
    }

    pub fn metadata(&self) -> PathBuf {
        self.repo.join("metadata")
    }

    /// Writes a version directory with `files` (relative paths) in a new
    /// folder outside the repository.
    pub fn version_dir(&self, files: &[(&str, &[u8])]) -> PathBuf {
        let dir = self.dir.path().join(format!("src-{}", unique()));
        for (path, bytes) in files {
            let path = dir.join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        dir
    }

    pub async fn try_publish(
        &self,
        model: &str,
        version: &str,
        files: &[(&str, &[u8])],
    ) -> Result<Manifest, PublishError> {
        let dir = self.version_dir(files);
        publish_version(
            &self.repo,
            &self.keys_dir,
            model,
            version,
            &dir,
            &provenance(),
        )
        .await
    }

    pub async fn publish(&self, model: &str, version: &str, files: &[(&str, &[u8])]) -> Manifest {
        self.try_publish(model, version, files).await.unwrap()
    }

    /// A device check: a new client (as after a reboot) over the folder.
    pub async fn client(&self) -> Result<ModelClient, ModelError> {
        ModelClient::open_dir(&self.repo, &self.shipped_root, &self.datastore).await
    }

    /// The stored file of a signed target (`targets/<sha256>.<name>`).
    pub async fn stored(&self, model: &str, version: &str, path: &str) -> PathBuf {
        let client = self.client().await.unwrap();
        let published = client.version(model, version).await.unwrap();
        let (_, info) = published.targets.iter().find(|(p, _)| p == path).unwrap();
        info.url.to_file_path().unwrap()
    }

    pub fn installed(&self, model: &str, version: &str) -> PathBuf {
        self.dest.join(model).join(version)
    }

    pub fn staging(&self, model: &str, version: &str) -> PathBuf {
        self.dest.join(".incoming").join(model).join(version)
    }
}

pub fn provenance() -> Provenance {
    Provenance {
        source_revision: "9f1c2e7".into(),
        training_run: Some("run-2025-01-31-a".into()),
        data_digest: None,
        publisher: "ci@nusa".into(),
        notes: String::new(),
    }
}

/// A small model version: model file, config, one golden test.
pub const MODEL: &[u8] = b"onnx model bytes, version one";
pub const CONFIG: &[u8] = b"max_batch_size = 8\n";
pub const TEST_CASE: &[u8] = b"{\"inputs\":[],\"outputs\":[]}";

pub fn files() -> [(&'static str, &'static [u8]); 3] {
    [
        ("model.onnx", MODEL),
        ("config.toml", CONFIG),
        ("tests/case-1.json", TEST_CASE),
    ]
}

/// Every file under `dir`, relative path and bytes, sorted.
pub fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.push((rel, std::fs::read(&path).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
