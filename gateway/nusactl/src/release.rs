//! `nusactl release ...`: what a release engineer runs to make keys, a
//! repository, and signed releases. Keys never reach the output.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use clap::Subcommand;
use nusa_ota_core::{Wave, Waves};
use nusa_ota_publish::brake::{change_brake, current_brake, entry, BrakeChange};
use nusa_ota_publish::{add_release, NewRelease};
use nusa_ota_tuf::{Expiries, KeyCounts, Role, SigningKeys, Thresholds};

#[derive(Debug, Subcommand)]
pub enum ReleaseCmd {
    /// Make ed25519 signing keys (PKCS#8, mode 0600) for the four roles.
    Keygen {
        #[arg(long)]
        keys: PathBuf,
        /// Root keys; with --root-threshold above 1, root changes need several.
        #[arg(long, default_value_t = 1)]
        root_keys: usize,
    },
    /// Start a repository; prints where the root to ship in images is.
    Init {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        #[arg(long, default_value_t = 1)]
        root_threshold: u64,
    },
    /// Publish an image as a release of a variant.
    Add {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        /// x86_64-rtx or aarch64-jetson.
        #[arg(long)]
        variant: String,
        /// MAJOR.MINOR.PATCH, higher than every earlier release.
        #[arg(long)]
        version: String,
        /// The root filesystem image.
        #[arg(long)]
        image: PathBuf,
        /// The oldest running version that may update to this one.
        #[arg(long)]
        min_version: Option<String>,
        /// Staged rollout: `START=FRACTION`, START in unix seconds, `now`
        /// or `+<hours>h`; repeat for waves. None: everyone at once.
        #[arg(long = "wave")]
        waves: Vec<String>,
        /// Delta granularity in bytes (see nusa-ota-core's README).
        #[arg(long, default_value_t = nusa_ota_core::chunk::DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// `NAME=PATH`: a file the boot partition gets for the slot (the
        /// kernel, the initrd); repeat for each.
        #[arg(long = "boot-file")]
        boot_files: Vec<String>,
    },
    /// Fleet brake: stop every box from starting (or applying a staged)
    /// release; `resume` lifts it. Signed by the targets key.
    Pause {
        #[command(flatten)]
        brake: BrakeArgs,
        #[arg(long, default_value = "paused by the release engineers")]
        reason: String,
    },
    /// Lift a pause: boxes take the release again on their next check.
    Resume {
        #[command(flatten)]
        brake: BrakeArgs,
    },
    /// Fleet brake for good: the release is never installed again and
    /// cannot be resumed. Boxes already running it stay on it.
    Yank {
        #[command(flatten)]
        brake: BrakeArgs,
        #[arg(long)]
        reason: String,
    },
    /// Show the fleet brake: paused and yanked releases.
    Brake {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Re-sign a role (and those above it) with a new expiry.
    Expire {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        keys: PathBuf,
        /// root, targets, snapshot or timestamp.
        #[arg(long)]
        role: String,
        #[arg(long)]
        days: u64,
    },
    /// Replace the root keys: the new root is signed by the old and new keys.
    RotateRoot {
        #[arg(long)]
        repo: PathBuf,
        #[arg(long)]
        old_keys: PathBuf,
        #[arg(long)]
        new_keys: PathBuf,
        #[arg(long, default_value_t = 1)]
        root_threshold: u64,
    },
}

#[derive(Debug, clap::Args)]
pub struct BrakeArgs {
    #[arg(long)]
    repo: PathBuf,
    #[arg(long)]
    keys: PathBuf,
    /// The release's MAJOR.MINOR.PATCH.
    #[arg(long)]
    version: String,
    /// Only this variant's release; default: every variant's.
    #[arg(long)]
    variant: Option<String>,
    /// Who, for the record; default: $USER.
    #[arg(long)]
    by: Option<String>,
}

fn thresholds(root: u64) -> anyhow::Result<Thresholds> {
    let one = NonZeroU64::MIN;
    Ok(Thresholds {
        root: NonZeroU64::new(root).context("--root-threshold must be at least 1")?,
        targets: one,
        snapshot: one,
        timestamp: one,
    })
}

fn keys(dir: &std::path::Path) -> anyhow::Result<SigningKeys> {
    SigningKeys::load(dir).with_context(|| format!("loading keys from {}", dir.display()))
}

fn brake_entry(b: &BrakeArgs, reason: &str) -> anyhow::Result<nusa_ota_core::BrakeEntry> {
    let by =
        b.by.clone()
            .or_else(|| std::env::var("USER").ok())
            .unwrap_or_else(|| "unknown".into());
    let at = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    Ok(entry(&b.version, b.variant.as_deref(), reason, &by, at)?)
}

pub fn parse_wave(s: &str, now: SystemTime) -> anyhow::Result<Wave> {
    let Some((start, fraction)) = s.split_once('=') else {
        bail!("--wave {s:?}: expected START=FRACTION");
    };
    let now = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    let start = if start == "now" {
        now
    } else if let Some(h) = start.strip_prefix('+').and_then(|h| h.strip_suffix('h')) {
        now + h
            .parse::<u64>()
            .with_context(|| format!("--wave {s:?}: hours"))?
            * 3600
    } else {
        start
            .parse::<u64>()
            .with_context(|| format!("--wave {s:?}: START is unix seconds, now or +<hours>h"))?
    };
    let fraction = fraction
        .parse::<f64>()
        .with_context(|| format!("--wave {s:?}: FRACTION is a number in 0..=1"))?;
    Ok(Wave { start, fraction })
}

pub async fn run(cmd: ReleaseCmd) -> anyhow::Result<()> {
    match cmd {
        ReleaseCmd::Keygen { keys, root_keys } => {
            let k = nusa_ota_tuf::create_keys(
                &keys,
                KeyCounts {
                    root: root_keys,
                    ..KeyCounts::default()
                },
            )?;
            println!(
                "created {} keys in {} (keep root keys offline)",
                k.root.len() + k.targets.len() + k.snapshot.len() + k.timestamp.len(),
                keys.display()
            );
        }
        ReleaseCmd::Init {
            repo,
            keys: dir,
            root_threshold,
        } => {
            nusa_ota_tuf::init_repo(
                &repo,
                &keys(&dir)?,
                &thresholds(root_threshold)?,
                &Expiries::standard(),
            )
            .await?;
            println!(
                "repository at {}; ship {} in the image as the trusted root",
                repo.display(),
                repo.join(nusa_ota_tuf::METADATA_DIR)
                    .join("root.json")
                    .display()
            );
        }
        ReleaseCmd::Add {
            repo,
            keys: dir,
            variant,
            version,
            image,
            min_version,
            waves,
            chunk_size,
            boot_files,
        } => {
            let extra_files = boot_files
                .iter()
                .map(|b| {
                    b.split_once('=')
                        .map(|(n, p)| (n.to_string(), PathBuf::from(p)))
                        .with_context(|| format!("--boot-file {b:?}: expected NAME=PATH"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let now = SystemTime::now();
            let waves = waves
                .iter()
                .map(|w| parse_wave(w, now))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let waves = Waves::new(waves).context("--wave")?;
            let info = add_release(
                &repo,
                &keys(&dir)?,
                NewRelease {
                    variant: &variant,
                    version: &version,
                    image: &image,
                    min_version: min_version.as_deref(),
                    waves,
                    chunk_size,
                    extra_files,
                },
                &Expiries::standard(),
            )
            .await?;
            println!(
                "published {} {} ({} bytes, sha256 {})",
                info.variant.as_str(),
                info.version,
                info.image_len,
                info.image_sha256
            );
        }
        ReleaseCmd::Pause { brake, reason } => {
            let e = brake_entry(&brake, &reason)?;
            let b = change_brake(
                &brake.repo,
                &keys(&brake.keys)?,
                BrakeChange::Pause(e),
                &Expiries::standard(),
            )
            .await?;
            println!(
                "paused {} (brake {}): boxes neither start nor apply it; `nusactl release resume` lifts it",
                brake.version, b.sequence
            );
        }
        ReleaseCmd::Resume { brake } => {
            let version = brake
                .version
                .parse()
                .with_context(|| format!("--version {:?}", brake.version))?;
            let variant = brake
                .variant
                .as_deref()
                .map(nusa_ota_core::Variant::new)
                .transpose()
                .context("--variant")?;
            let b = change_brake(
                &brake.repo,
                &keys(&brake.keys)?,
                BrakeChange::Resume { version, variant },
                &Expiries::standard(),
            )
            .await?;
            println!(
                "resumed {} (brake {}): boxes take it on their next check",
                brake.version, b.sequence
            );
        }
        ReleaseCmd::Yank { brake, reason } => {
            let e = brake_entry(&brake, &reason)?;
            let b = change_brake(
                &brake.repo,
                &keys(&brake.keys)?,
                BrakeChange::Yank(e),
                &Expiries::standard(),
            )
            .await?;
            println!(
                "yanked {} (brake {}): never installed again; boxes running it stay on it",
                brake.version, b.sequence
            );
        }
        ReleaseCmd::Brake { repo, json } => {
            let (b, _) = current_brake(&repo).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&b)?);
            } else {
                println!("brake {}", b.sequence);
                for (what, list) in [("paused", b.paused()), ("yanked", b.yanked())] {
                    for e in list {
                        println!(
                            "{what} {}{}: {} (by {} at unix time {})",
                            e.version,
                            e.variant
                                .as_ref()
                                .map(|v| format!(" ({v})"))
                                .unwrap_or_default(),
                            e.reason,
                            e.by,
                            e.at
                        );
                    }
                }
            }
        }
        ReleaseCmd::Expire {
            repo,
            keys: dir,
            role,
            days,
        } => {
            let role = match role.as_str() {
                "root" => Role::Root,
                "targets" => Role::Targets,
                "snapshot" => Role::Snapshot,
                "timestamp" => Role::Timestamp,
                other => bail!("--role {other:?}: root, targets, snapshot or timestamp"),
            };
            let at = SystemTime::now() + Duration::from_secs(days * 24 * 3600);
            nusa_ota_tuf::set_expiry(&repo, &keys(&dir)?, role, at).await?;
            println!("{role} re-signed, expires in {days} days");
        }
        ReleaseCmd::RotateRoot {
            repo,
            old_keys,
            new_keys,
            root_threshold,
        } => {
            nusa_ota_tuf::rotate_root(
                &repo,
                &keys(&old_keys)?,
                &keys(&new_keys)?,
                &thresholds(root_threshold)?,
                &Expiries::standard(),
            )
            .await?;
            println!("root rotated; appliances follow the chain of signed roots");
        }
    }
    Ok(())
}
