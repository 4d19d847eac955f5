//! One file of a version into the staging folder: kept, resumed, copied
//! from another version, or fetched; always checked against the signed
//! length and sha256 before it counts.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nusa_ota::fetch::{read_range, HttpFetcher};
use nusa_ota_core::{Sha256Digest, Sha256Hasher};
use nusa_ota_tuf::TargetInfo;

use super::PublishedVersion;
use crate::{hash_file, hash_into, ModelError};

/// What `fetch_version` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport {
    /// `<dest>/<model>/<version>`.
    pub dir: PathBuf,
    pub files: Vec<FileOutcome>,
    /// The version was installed already (and verified): nothing fetched.
    pub already_installed: bool,
}

impl FetchReport {
    /// Bytes transferred by this run.
    pub fn downloaded_bytes(&self) -> u64 {
        self.files
            .iter()
            .map(|f| match f.outcome {
                Outcome::Downloaded { bytes } | Outcome::Resumed { bytes, .. } => bytes,
                Outcome::Kept | Outcome::Copied { .. } | Outcome::Installed => 0,
            })
            .sum()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOutcome {
    /// Relative to the version directory.
    pub path: String,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fetched whole.
    Downloaded { bytes: u64 },
    /// A partial file from an earlier run, completed from byte `from`.
    Resumed { from: u64, bytes: u64 },
    /// Already complete in staging from an earlier run.
    Kept,
    /// Copied from another installed version with the same sha256.
    Copied { from: PathBuf },
    /// Part of the installed version, verified in place.
    Installed,
}

/// Brings `to` to the signed bytes of `info`.
/// `progress` counts the file's bytes as they are in place (kept, copied,
/// resumed from, downloaded), for a pull's progress and ETA.
pub(super) async fn fetch_file(
    fetcher: Option<&HttpFetcher>,
    info: &TargetInfo,
    to: &Path,
    candidates: &[PathBuf],
    progress: Option<&AtomicU64>,
) -> Result<Outcome, ModelError> {
    let add = |n: u64| {
        if let Some(p) = progress {
            p.fetch_add(n, Ordering::Relaxed);
        }
    };
    let expected = Sha256Digest::from_bytes(info.sha256);
    match std::fs::symlink_metadata(to) {
        Ok(meta) if meta.is_file() => {
            let have = meta.len();
            if have == info.length {
                if hash_file(to).map_err(ModelError::io(to))?.0 == expected {
                    add(info.length);
                    return Ok(Outcome::Kept);
                }
            } else if have < info.length && have > 0 {
                let mut hasher = Sha256Hasher::new();
                hash_into(to, &mut hasher).map_err(ModelError::io(to))?;
                add(have);
                match download(fetcher, info, to, have, hasher, progress).await {
                    Ok(bytes) => return Ok(Outcome::Resumed { from: have, bytes }),
                    // The kept prefix may be what was wrong: start over once.
                    Err(ModelError::HashMismatch { .. }) => {
                        tracing::warn!(name = %info.name, "resumed file did not verify: fetching it whole");
                    }
                    Err(other) => return Err(other),
                }
            }
            remove(to)?;
        }
        // Something else under a listed name (a link, a folder): not ours.
        Ok(meta) if meta.is_dir() => {
            std::fs::remove_dir_all(to).map_err(ModelError::io(to))?;
        }
        Ok(_) => remove(to)?,
        Err(_) => {}
    }
    for candidate in candidates {
        let Ok(meta) = std::fs::symlink_metadata(candidate) else {
            continue;
        };
        if meta.is_file()
            && meta.len() == info.length
            && hash_file(candidate).is_ok_and(|(digest, _)| digest == expected)
        {
            std::fs::copy(candidate, to).map_err(ModelError::io(to))?;
            // Checked again: the copy is what gets installed.
            if hash_file(to).map_err(ModelError::io(to))?.0 == expected {
                sync(to)?;
                add(info.length);
                return Ok(Outcome::Copied {
                    from: candidate.clone(),
                });
            }
            remove(to)?;
        }
    }
    let bytes = download(fetcher, info, to, 0, Sha256Hasher::new(), progress).await?;
    Ok(Outcome::Downloaded { bytes })
}

/// Appends bytes `from..length` of the target to `to` (which holds the
/// first `from`, already in `hasher`) and checks the whole sha256. On a
/// mismatch the file is deleted. Returns the bytes transferred.
async fn download(
    fetcher: Option<&HttpFetcher>,
    info: &TargetInfo,
    to: &Path,
    from: u64,
    mut hasher: Sha256Hasher,
    progress: Option<&AtomicU64>,
) -> Result<u64, ModelError> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(to)
        .map_err(ModelError::io(to))?;
    let mut written = 0u64;
    let want = info.length - from;
    let mut too_long = false;
    let mut sink = |bytes: &[u8]| -> Result<(), nusa_ota::fetch::SinkError> {
        // The downloader never passes the range's end; this keeps the bound
        // here too, whatever feeds the sink.
        if written + bytes.len() as u64 > want {
            too_long = true;
            return Err("more bytes than signed".into());
        }
        file.write_all(bytes)?;
        hasher.update(bytes);
        written += bytes.len() as u64;
        if let Some(p) = progress {
            p.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    };
    let range = from..info.length;
    let fetched = match info.url.scheme() {
        "file" => {
            let path = info
                .url
                .to_file_path()
                .map_err(|()| ModelError::NoFetcher {
                    url: info.url.to_string(),
                })?;
            // A local file's size is known: one that is not the signed
            // length is refused before any byte is taken from it (an
            // endless device file is not a regular file and has size 0).
            let actual = std::fs::metadata(&path)
                .map(|m| if m.is_file() { m.len() } else { 0 })
                .map_err(ModelError::io(&path))?;
            if actual != info.length {
                remove_quiet(to, from);
                return Err(ModelError::WrongLength {
                    name: info.name.clone(),
                    signed: info.length,
                    actual,
                });
            }
            read_range(&path, range, &mut sink).await
        }
        _ => match fetcher {
            Some(fetcher) => {
                fetcher
                    .fetch_range(info.url.as_str(), range, &mut sink)
                    .await
            }
            None => {
                return Err(ModelError::NoFetcher {
                    url: info.url.to_string(),
                })
            }
        },
    };
    if let Err(source) = fetched {
        if too_long {
            remove(to)?;
            return Err(ModelError::TooLong {
                name: info.name.clone(),
                length: info.length,
            });
        }
        // Kept: the next run resumes from what arrived.
        file.sync_all().map_err(ModelError::io(to))?;
        return Err(ModelError::Download {
            name: info.name.clone(),
            source,
        });
    }
    file.sync_all().map_err(ModelError::io(to))?;
    let actual = hasher.finish();
    let expected = Sha256Digest::from_bytes(info.sha256);
    if actual != expected {
        remove(to)?;
        return Err(ModelError::HashMismatch {
            name: info.name.clone(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        });
    }
    Ok(written)
}

/// Verifies an installed version in place: every signed file present with
/// its length and sha256.
pub(super) fn check_installed(
    published: &PublishedVersion,
    dir: &Path,
) -> Result<FetchReport, ModelError> {
    let conflict = || ModelError::DestinationConflict {
        path: dir.to_owned(),
    };
    let mut files = Vec::with_capacity(published.targets.len());
    for (path, info) in &published.targets {
        let file = dir.join(path);
        match std::fs::symlink_metadata(&file) {
            Ok(meta) if meta.is_file() && meta.len() == info.length => {}
            _ => return Err(conflict()),
        }
        let (digest, _) = hash_file(&file).map_err(ModelError::io(&file))?;
        if digest != Sha256Digest::from_bytes(info.sha256) {
            return Err(conflict());
        }
        files.push(FileOutcome {
            path: path.clone(),
            outcome: Outcome::Installed,
        });
    }
    Ok(FetchReport {
        dir: dir.to_owned(),
        files,
        already_installed: true,
    })
}

/// Removes everything under `dir` whose path (relative to the staging
/// root, `rel`) the version does not sign: leftovers and planted files
/// never reach the installed folder.
pub(super) fn remove_unlisted(
    dir: &Path,
    rel: &str,
    listed: &HashSet<&str>,
) -> Result<(), ModelError> {
    for entry in std::fs::read_dir(dir).map_err(ModelError::io(dir))? {
        let entry = entry.map_err(ModelError::io(dir))?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let child = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let kind = entry.file_type().map_err(ModelError::io(&path))?;
        if kind.is_dir() {
            let prefix = format!("{child}/");
            if listed.iter().any(|p| p.starts_with(&prefix)) {
                remove_unlisted(&path, &child, listed)?;
            } else {
                std::fs::remove_dir_all(&path).map_err(ModelError::io(&path))?;
            }
        } else if !(kind.is_file() && listed.contains(child.as_str())) {
            remove(&path)?;
        }
    }
    Ok(())
}

pub(super) fn sync_dir(dir: &Path) -> Result<(), ModelError> {
    sync(dir)
}

fn sync(path: &Path) -> Result<(), ModelError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(ModelError::io(path))
}

fn remove(path: &Path) -> Result<(), ModelError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(ModelError::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Drops a fresh file that received nothing; a resumed one keeps its
/// prefix for the next try.
fn remove_quiet(path: &Path, from: u64) {
    if from == 0 {
        let _ = std::fs::remove_file(path);
    }
}
