//! What a version's answers depend on: a SHA-256 over every file of its
//! directory. The edge cache keys answers by it, so retrained weights put
//! under the same version number never meet the answers of the old ones.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use ring::digest::{Context, SHA256};

/// A version directory's contents: SHA-256 over each file's path relative to
/// the directory, length and bytes, in path order.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionDigest(pub [u8; 32]);

/// Bounds on what a version directory may hold: it is read whole at load.
const MAX_FILES: usize = 4096;
const MAX_DEPTH: usize = 8;
const DOMAIN: &[u8] = b"nusa-version-digest/1";

impl VersionDigest {
    /// Reads every regular file under `dir` (symbolic links followed, as the
    /// engines follow them). Blocking: call it off the async runtime.
    pub fn of_dir(dir: &Path) -> Result<VersionDigest, String> {
        let mut files = Vec::new();
        walk(dir, Path::new(""), 0, &mut files)?;
        files.sort();
        let mut h = Context::new(&SHA256);
        h.update(DOMAIN);
        h.update(&(files.len() as u64).to_le_bytes());
        let mut buf = vec![0u8; 1 << 20];
        for rel in &files {
            let name = rel.to_string_lossy();
            h.update(&(name.len() as u64).to_le_bytes());
            h.update(name.as_bytes());
            let path = dir.join(rel);
            let mut f = std::fs::File::open(&path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?;
            let len = f
                .metadata()
                .map_err(|e| format!("reading {}: {e}", path.display()))?
                .len();
            h.update(&len.to_le_bytes());
            let mut seen = 0u64;
            loop {
                let n = f
                    .read(&mut buf)
                    .map_err(|e| format!("reading {}: {e}", path.display()))?;
                if n == 0 {
                    break;
                }
                seen += n as u64;
                h.update(&buf[..n]);
            }
            if seen != len {
                return Err(format!(
                    "{} changed while it was read ({len} bytes, then {seen})",
                    path.display()
                ));
            }
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(h.finish().as_ref());
        Ok(VersionDigest(out))
    }
}

fn walk(root: &Path, rel: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let dir = root.join(rel);
    if depth > MAX_DEPTH {
        return Err(format!(
            "{}: more than {MAX_DEPTH} folders deep",
            dir.display()
        ));
    }
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let rel = rel.join(entry.file_name());
        let path = root.join(&rel);
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        if meta.is_dir() {
            walk(root, &rel, depth + 1, out)?;
        } else if meta.is_file() {
            if out.len() == MAX_FILES {
                return Err(format!(
                    "{}: more than {MAX_FILES} files in the version directory",
                    root.display()
                ));
            }
            out.push(rel);
        }
    }
    Ok(())
}

impl fmt::Display for VersionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for VersionDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VersionDigest({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(dir: &Path) -> VersionDigest {
        VersionDigest::of_dir(dir).unwrap()
    }

    #[test]
    fn any_change_to_the_files_changes_the_digest() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("model.onnx"), b"weights-a").unwrap();
        let a = digest(d.path());
        assert_eq!(a, digest(d.path()), "stable");

        std::fs::write(d.path().join("model.onnx"), b"weights-b").unwrap();
        let b = digest(d.path());
        assert_ne!(a, b, "same length, other bytes");

        std::fs::create_dir(d.path().join("data")).unwrap();
        std::fs::write(d.path().join("data/extra.bin"), b"").unwrap();
        let c = digest(d.path());
        assert_ne!(b, c, "an empty file in a subfolder counts");

        // Bytes moved from one file's name into its contents: other stream.
        let e = tempfile::tempdir().unwrap();
        std::fs::write(e.path().join("ab"), b"c").unwrap();
        let f = tempfile::tempdir().unwrap();
        std::fs::write(f.path().join("a"), b"bc").unwrap();
        assert_ne!(digest(e.path()), digest(f.path()));
    }

    #[test]
    fn the_same_files_in_two_places_have_one_digest() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for d in [a.path(), b.path()] {
            std::fs::write(d.join("model.onnx"), b"w").unwrap();
            std::fs::write(d.join("model.plan"), b"p").unwrap();
        }
        assert_eq!(digest(a.path()), digest(b.path()));
    }
}
