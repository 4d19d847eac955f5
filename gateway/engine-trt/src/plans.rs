//! Plans built on the device, and where they are kept.
//!
//! A TensorRT plan only runs on the TensorRT version and GPU it was built
//! for, so the fleet ships ONNX and each appliance builds its own plans. A
//! plan is cached under a key of everything that decides its contents: the
//! ONNX file's SHA-256, the TensorRT library and shim versions, the GPU's
//! name and compute capability, and the builder settings (batch range,
//! workspace, FP16). Any change gives another key, so a stale plan is never
//! loaded; one that fails to deserialize anyway (a torn write, a driver
//! update) is removed and rebuilt. One timing cache per TensorRT version and
//! GPU is kept beside the plans and fed to every build, which makes
//! rebuilds faster.
//!
//! Layout under the plan directory:
//! `<model>/<version>/<key>.plan` (+ `<key>.json`, the key's parts for
//! people), `timing-<device key>.cache`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use parking_lot::Mutex;
use ring::digest::{Context, SHA256};

/// What the builder is asked for, beyond the batch range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildSettings {
    pub workspace_bytes: u64,
    pub fp16: bool,
}

impl Default for BuildSettings {
    fn default() -> Self {
        Self {
            workspace_bytes: 1 << 30,
            fp16: true,
        }
    }
}

/// The batch range a plan is built for: (min, opt, max) rows. `opt` is the
/// largest batch: the batcher fills batches exactly when load is high, which
/// is when kernel choice matters.
pub fn batch_range(max_batch_size: usize) -> (i64, i64, i64) {
    let max = i64::try_from(max_batch_size.max(1)).unwrap_or(i64::MAX);
    (1, max, max)
}

/// One plan's cache key and its parts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanKey {
    /// Hex SHA-256 over `parts`, cut to 32 characters.
    pub id: String,
    /// `name=value` lines, in a fixed order.
    pub parts: Vec<(String, String)>,
}

/// Where plans and the timing cache live, for one TensorRT install and GPU.
pub struct PlanStore {
    dir: PathBuf,
    /// The parts of every key that come from this machine.
    device: Vec<(String, String)>,
    device_id: String,
    /// ONNX hashes by (path, length, mtime): instances of one version and
    /// restarts of nothing-changed files hash once.
    hashed: Mutex<Vec<(PathBuf, u64, SystemTime, String)>>,
}

impl PlanStore {
    pub fn new(dir: PathBuf, device: Vec<(String, String)>) -> Self {
        let device_id = digest_hex(
            device
                .iter()
                .map(|(k, v)| format!("{k}={v}\n"))
                .collect::<String>()
                .as_bytes(),
        );
        Self {
            dir,
            device,
            device_id,
            hashed: Mutex::new(Vec::new()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The key for building `onnx` with these settings on this machine.
    pub fn key(
        &self,
        onnx: &Path,
        batch: (i64, i64, i64),
        settings: &BuildSettings,
    ) -> std::io::Result<PlanKey> {
        let mut parts = vec![("onnx_sha256".to_string(), self.onnx_sha256(onnx)?)];
        parts.extend(self.device.iter().cloned());
        parts.push((
            "batch".into(),
            format!("{}/{}/{}", batch.0, batch.1, batch.2),
        ));
        parts.push((
            "workspace_bytes".into(),
            settings.workspace_bytes.to_string(),
        ));
        parts.push(("fp16".into(), settings.fp16.to_string()));
        let text: String = parts.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        Ok(PlanKey {
            id: digest_hex(text.as_bytes()),
            parts,
        })
    }

    pub fn plan_path(&self, model: &str, version: u64, key: &PlanKey) -> PathBuf {
        self.dir
            .join(model)
            .join(version.to_string())
            .join(format!("{}.plan", key.id))
    }

    pub fn timing_cache_path(&self) -> PathBuf {
        self.dir.join(format!("timing-{}.cache", self.device_id))
    }

    /// The timing cache, if one was kept and is of a sane size.
    pub fn timing_cache(&self) -> Option<Vec<u8>> {
        const MAX: u64 = 1 << 30;
        let path = self.timing_cache_path();
        let len = fs::metadata(&path).ok()?.len();
        if len > MAX {
            tracing::warn!(path = %path.display(), len, "timing cache too large: ignored");
            return None;
        }
        fs::read(path).ok()
    }

    /// Writes a built plan (and its key's description) so that a crash at
    /// any point leaves either no plan or the whole plan under its name.
    pub fn store(&self, path: &Path, key: &PlanKey, plan: &[u8]) -> std::io::Result<()> {
        let description: String = key
            .parts
            .iter()
            .map(|(k, v)| format!("{k} = {v:?}\n"))
            .collect();
        write_atomic(&path.with_extension("toml"), description.as_bytes())?;
        write_atomic(path, plan)
    }

    pub fn store_timing_cache(&self, bytes: &[u8]) -> std::io::Result<()> {
        write_atomic(&self.timing_cache_path(), bytes)
    }

    fn onnx_sha256(&self, onnx: &Path) -> std::io::Result<String> {
        let meta = fs::metadata(onnx)?;
        let mtime = meta.modified()?;
        let mut hashed = self.hashed.lock();
        if let Some((_, _, _, h)) = hashed
            .iter()
            .find(|(p, l, m, _)| p == onnx && *l == meta.len() && *m == mtime)
        {
            return Ok(h.clone());
        }
        let mut ctx = Context::new(&SHA256);
        let mut file = fs::File::open(onnx)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut file, &mut buf)?;
            if n == 0 {
                break;
            }
            ctx.update(&buf[..n]);
        }
        let h = hex::encode(ctx.finish().as_ref());
        hashed.retain(|(p, ..)| p != onnx);
        hashed.push((onnx.to_path_buf(), meta.len(), mtime, h.clone()));
        Ok(h)
    }
}

/// temp file, fsync, rename, fsync the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    fs::File::open(dir)?.sync_all()
}

fn digest_hex(bytes: &[u8]) -> String {
    let mut h = hex::encode(ring::digest::digest(&SHA256, bytes).as_ref());
    h.truncate(32);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &Path, gpu: &str) -> PlanStore {
        PlanStore::new(
            dir.to_path_buf(),
            vec![
                ("tensorrt".into(), "101600".into()),
                ("gpu".into(), gpu.into()),
            ],
        )
    }

    #[test]
    fn every_part_of_the_key_changes_it() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("model.onnx");
        fs::write(&onnx, b"model one").unwrap();
        let s = store(dir.path(), "Orin");
        let settings = BuildSettings::default();
        let base = s.key(&onnx, (1, 8, 8), &settings).unwrap();
        assert_eq!(base, s.key(&onnx, (1, 8, 8), &settings).unwrap());
        assert_eq!(base.id.len(), 32);
        let others = [
            s.key(&onnx, (1, 4, 8), &settings).unwrap(),
            s.key(
                &onnx,
                (1, 8, 8),
                &BuildSettings {
                    fp16: false,
                    ..settings.clone()
                },
            )
            .unwrap(),
            s.key(
                &onnx,
                (1, 8, 8),
                &BuildSettings {
                    workspace_bytes: 1,
                    ..settings.clone()
                },
            )
            .unwrap(),
            store(dir.path(), "RTX 4000")
                .key(&onnx, (1, 8, 8), &settings)
                .unwrap(),
        ];
        for o in &others {
            assert_ne!(o.id, base.id, "{o:?}");
        }
        // A changed model (new length or mtime) is hashed again.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&onnx, b"model two!").unwrap();
        assert_ne!(s.key(&onnx, (1, 8, 8), &settings).unwrap().id, base.id);
        assert!(s
            .key(&dir.path().join("missing.onnx"), (1, 8, 8), &settings)
            .is_err());
    }

    #[test]
    fn stores_plans_and_timing_caches_whole() {
        let dir = tempfile::tempdir().unwrap();
        let onnx = dir.path().join("model.onnx");
        fs::write(&onnx, b"model").unwrap();
        let s = store(&dir.path().join("plans"), "Orin");
        let key = s.key(&onnx, (1, 2, 2), &BuildSettings::default()).unwrap();
        let path = s.plan_path("m", 3, &key);
        assert!(path.ends_with(format!("m/3/{}.plan", key.id)));
        s.store(&path, &key, b"PLAN").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"PLAN");
        let described = fs::read_to_string(path.with_extension("toml")).unwrap();
        assert!(described.contains("gpu = \"Orin\""), "{described}");
        assert!(s.timing_cache().is_none());
        s.store_timing_cache(b"T1").unwrap();
        assert_eq!(s.timing_cache().unwrap(), b"T1");
        // Another GPU keeps its own timing cache.
        assert!(store(&dir.path().join("plans"), "Thor")
            .timing_cache()
            .is_none());
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().contains("tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn batch_range_never_goes_below_one_row() {
        assert_eq!(batch_range(0), (1, 1, 1));
        assert_eq!(batch_range(16), (1, 16, 16));
    }
}
