//! `nusactl release ...`: what a release engineer runs to make keys, a
//! repository, and signed releases. Keys never reach the output.

use std::num::NonZeroU64;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context};
use clap::Subcommand;
use nusa_ota_core::{Wave, Waves};
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
