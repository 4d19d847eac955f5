//! Publishing: creating a repository and adding releases to it.
//!
//! Every operation first loads the repository through tough's verifying
//! client (so we never extend metadata that does not verify), then edits it
//! with tough's `RepositoryEditor`, signs with tough's key sources, copies
//! targets into place and finally commits the metadata, timestamp last (see
//! `store`). An operation that fails leaves the published repository as it
//! was; at worst unreferenced target files remain.

mod maintain;
mod root;
mod store;

use std::num::NonZeroU64;
use std::path::Path;
use std::time::{Duration, SystemTime};

use tough::editor::signed::{PathExists, SignedRepository};
use tough::editor::RepositoryEditor;
use tough::schema::Target;
use tough::TargetName;

pub use maintain::{rotate_root, set_expiry};

use crate::names::{check_component, check_signed_name, parse_version, target_name};
use crate::{NameError, Role, SigningKeys};

pub use crate::error::PublishError;

/// Signature thresholds of the four roles, as root.json states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub root: NonZeroU64,
    pub targets: NonZeroU64,
    pub snapshot: NonZeroU64,
    pub timestamp: NonZeroU64,
}

impl Thresholds {
    pub fn of(&self, role: Role) -> NonZeroU64 {
        match role {
            Role::Root => self.root,
            Role::Targets => self.targets,
            Role::Snapshot => self.snapshot,
            Role::Timestamp => self.timestamp,
        }
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            root: NonZeroU64::MIN,
            targets: NonZeroU64::MIN,
            snapshot: NonZeroU64::MIN,
            timestamp: NonZeroU64::MIN,
        }
    }
}

/// When each role's newly signed metadata expires. `root` is used only by
/// `init_repo` and `rotate_root`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiries {
    pub root: SystemTime,
    pub targets: SystemTime,
    pub snapshot: SystemTime,
    pub timestamp: SystemTime,
}

impl Expiries {
    /// Root 1 year, targets 90 days, snapshot 30 days, timestamp 7 days from
    /// now. The timestamp is shortest because its expiry bounds how long a
    /// freeze attack (serving stale metadata) can hide a new release;
    /// refresh it with `set_expiry(.., Role::Timestamp, ..)` well before.
    pub fn standard() -> Self {
        const DAY: u64 = 24 * 60 * 60;
        Self::from_now(
            Duration::from_secs(365 * DAY),
            Duration::from_secs(90 * DAY),
            Duration::from_secs(30 * DAY),
            Duration::from_secs(7 * DAY),
        )
    }

    /// Lifetimes counted from now.
    pub fn from_now(
        root: Duration,
        targets: Duration,
        snapshot: Duration,
        timestamp: Duration,
    ) -> Self {
        let now = SystemTime::now();
        // An absurd duration saturates to year 10000 instead of panicking;
        // `to_jiff` then refuses it as out of range.
        let beyond = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        let at = |d| now.checked_add(d).unwrap_or(beyond);
        Self {
            root: at(root),
            targets: at(targets),
            snapshot: at(snapshot),
            timestamp: at(timestamp),
        }
    }
}

/// Converts an expiry to tough's timestamp, to whole seconds so the signed
/// text is the plain RFC 3339 form.
pub(crate) fn to_jiff(at: SystemTime) -> Result<jiff::Timestamp, PublishError> {
    jiff::Timestamp::try_from(at)
        .and_then(|t| jiff::Timestamp::from_second(t.as_second()))
        .map_err(|e| PublishError::Expiry {
            detail: e.to_string(),
        })
}

pub(crate) fn next(version: NonZeroU64) -> Result<NonZeroU64, PublishError> {
    version.checked_add(1).ok_or(PublishError::Conflict {
        detail: "metadata version overflow".to_owned(),
    })
}

/// Sets the versions (targets, snapshot, timestamp) and expiries, and signs.
pub(crate) async fn sign_editor(
    mut editor: RepositoryEditor,
    [targets, snapshot, timestamp]: [NonZeroU64; 3],
    expiries: &Expiries,
    keys: &SigningKeys,
) -> Result<SignedRepository, PublishError> {
    editor
        .targets_version(targets)
        .map_err(tough_err("setting the targets version"))?
        .targets_expires(to_jiff(expiries.targets)?)
        .map_err(tough_err("setting the targets expiry"))?;
    editor
        .snapshot_version(snapshot)
        .snapshot_expires(to_jiff(expiries.snapshot)?)
        .timestamp_version(timestamp)
        .timestamp_expires(to_jiff(expiries.timestamp)?);
    editor
        .sign(&keys.sources()?)
        .await
        .map_err(|e| PublishError::Sign {
            detail: e.to_string(),
        })
}

fn tough_err(what: &'static str) -> impl FnOnce(tough::error::Error) -> PublishError {
    move |source| PublishError::Tough {
        what,
        source: Box::new(source),
    }
}

/// Creates a repository in `repo_dir`: root.json (as `1.root.json` and
/// `root.json`, the copy to ship in device images) listing the public keys
/// of `keys` with `thresholds`, signed by the root keys, and empty targets,
/// snapshot and timestamp at version 1.
pub async fn init_repo(
    repo_dir: &Path,
    keys: &SigningKeys,
    thresholds: &Thresholds,
    expiries: &Expiries,
) -> Result<(), PublishError> {
    let dirs = store::Dirs::new(repo_dir);
    if dirs.root_file(1).exists() {
        return Err(PublishError::RepoExists {
            path: repo_dir.to_owned(),
        });
    }
    for dir in [&dirs.metadata, &dirs.targets] {
        std::fs::create_dir_all(dir).map_err(|source| PublishError::Io {
            path: dir.clone(),
            source,
        })?;
    }
    let root = root::build(keys, thresholds, NonZeroU64::MIN, to_jiff(expiries.root)?)?;
    let signed_root = root::sign(root.clone(), &[(&root, keys)]).await?;

    let stage = store::staging(&dirs)?;
    signed_root
        .write(stage.path(), true)
        .await
        .map_err(tough_err("writing root.json"))?;
    let editor = RepositoryEditor::new(stage.path().join("1.root.json"))
        .await
        .map_err(tough_err("opening the new root in the editor"))?;
    let versions = [NonZeroU64::MIN; 3];
    let signed = sign_editor(editor, versions, expiries, keys).await?;
    signed
        .write(stage.path())
        .await
        .map_err(tough_err("writing metadata"))?;
    store::commit(stage.path(), &dirs)
}

/// Adds release `version` of `variant`: each `(file name, path)` becomes the
/// target `<variant>/<version>/<file name>`, carrying `custom` as its TUF
/// custom metadata. Targets, snapshot and timestamp are re-signed with
/// versions bumped. Returns the target names added.
pub async fn add_release(
    repo_dir: &Path,
    keys: &SigningKeys,
    variant: &str,
    version: &str,
    files: &[(&str, &Path)],
    custom: &serde_json::Map<String, serde_json::Value>,
    expiries: &Expiries,
) -> Result<Vec<String>, PublishError> {
    check_component("variant", variant)?;
    parse_version(version)?;
    let mut targets = Vec::with_capacity(files.len());
    for (file, path) in files {
        check_component("file name", file)?;
        targets.push(NewTarget {
            name: target_name(variant, version, file),
            path,
            custom: custom.clone(),
        });
    }
    let prefix = format!("{variant}/{version}/");
    add_targets(repo_dir, keys, &prefix, &targets, expiries)
        .await
        .map_err(|e| match e {
            PublishError::GroupExists { .. } => PublishError::ReleaseExists {
                variant: variant.to_owned(),
                version: version.to_owned(),
            },
            other => other,
        })
}

/// One file to add as a target.
#[derive(Debug, Clone)]
pub struct NewTarget<'a> {
    /// The full target name, as signed.
    pub name: String,
    /// Where its bytes are now.
    pub path: &'a Path,
    /// Its TUF custom metadata.
    pub custom: serde_json::Map<String, serde_json::Value>,
}

/// Adds `targets` as one immutable group: every name must start with
/// `prefix` (ending in `/`), and the group is refused (`GroupExists`) if
/// any signed target already starts with it. Targets, snapshot and
/// timestamp are re-signed with versions bumped. Returns the names added.
///
/// `add_release` is this with `<variant>/<version>/`; other repositories
/// (models) name their groups their own way.
pub async fn add_targets(
    repo_dir: &Path,
    keys: &SigningKeys,
    prefix: &str,
    targets: &[NewTarget<'_>],
    expiries: &Expiries,
) -> Result<Vec<String>, PublishError> {
    if !prefix.ends_with('/') || check_signed_name(prefix.trim_end_matches('/')).is_err() {
        return Err(NameError {
            what: "target group",
            value: prefix.to_owned(),
            why: "is not a safe target name followed by '/'",
        }
        .into());
    }
    if targets.is_empty() {
        return Err(PublishError::Conflict {
            detail: format!("{prefix} has no files"),
        });
    }
    let mut names: Vec<String> = Vec::with_capacity(targets.len());
    for target in targets {
        let name = &target.name;
        if !name.starts_with(prefix) || check_signed_name(name).is_err() {
            return Err(NameError {
                what: "target name",
                value: name.clone(),
                why: "is outside its group or not a safe path",
            }
            .into());
        }
        if names.contains(name) {
            return Err(PublishError::Conflict {
                detail: format!("target {name:?} given twice"),
            });
        }
        names.push(name.clone());
    }

    let dirs = store::Dirs::new(repo_dir);
    let repo = store::load(&dirs).await?;
    if repo
        .targets()
        .signed
        .targets_iter()
        .any(|(name, _)| name.raw().starts_with(prefix))
    {
        return Err(PublishError::GroupExists {
            prefix: prefix.to_owned(),
        });
    }
    let targets_version = next(repo.targets().signed.version)?;
    let snapshot_version = next(repo.snapshot().signed.version)?;
    let timestamp_version = next(repo.timestamp().signed.version)?;
    let root_path = dirs.root_file(repo.root().signed.version.get());

    let mut editor = RepositoryEditor::from_repo(&root_path, repo)
        .await
        .map_err(tough_err("opening the repository in the editor"))?;
    for new in targets {
        let mut target = Target::from_path(new.path)
            .await
            .map_err(|e| PublishError::Conflict {
                detail: format!("{}: {e}", new.path.display()),
            })?;
        target.custom = new.custom.clone().into_iter().collect();
        editor
            .add_target(new.name.as_str(), target)
            .map_err(tough_err("adding a target"))?;
    }
    let versions = [targets_version, snapshot_version, timestamp_version];
    let signed = sign_editor(editor, versions, expiries, keys).await?;

    // Targets first: no metadata refers to them until the commit below.
    // Replace, not Skip: a file left half-copied by an interrupted run has
    // the right name but not the right bytes.
    std::fs::create_dir_all(&dirs.targets).map_err(|source| PublishError::Io {
        path: dirs.targets.clone(),
        source,
    })?;
    for new in targets {
        let name = TargetName::new(new.name.as_str()).map_err(tough_err("target name"))?;
        signed
            .copy_target(new.path, &dirs.targets, PathExists::Replace, Some(&name))
            .await
            .map_err(tough_err("copying a target into the repository"))?;
    }
    let stage = store::staging(&dirs)?;
    signed
        .write(stage.path())
        .await
        .map_err(tough_err("writing metadata"))?;
    store::commit(stage.path(), &dirs)?;
    Ok(names)
}
