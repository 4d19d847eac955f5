//! `nusactl models publish`: its arguments and what it runs, so the CLI
//! only parses and prints.

use std::fmt;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::encryption::{keygen, FleetPrivateKey, FleetPublicKey, KeygenReport, WrappedKey};
use crate::manifest::{Manifest, Provenance};
use crate::names::{version_prefix, MANIFEST_FILE};
use crate::publish::{publish_version_with, rewrap, PublishOptions};

/// Publish a model version to the model repository (signed, immutable).
#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// The model repository (not the OS release repository).
    #[arg(long)]
    pub repo: PathBuf,
    /// Folder of the model repository's signing keys (`<role>-<n>.pk8`).
    #[arg(long)]
    pub keys: PathBuf,
    /// Model name: letters, digits, '.', '_', '-'; not starting with '.'.
    #[arg(long)]
    pub model: String,
    /// Version: a positive decimal number, never reused.
    #[arg(long)]
    pub version: String,
    /// The version directory: model.onnx and/or model.plan, config.toml,
    /// optional tests/*.json.
    #[arg(long)]
    pub dir: PathBuf,
    /// Revision of the training code (a commit).
    #[arg(long)]
    pub source_revision: String,
    /// Training run identifier (this, --data-digest, or both).
    #[arg(long)]
    pub training_run: Option<String>,
    /// Digest of the training data (this, --training-run, or both).
    #[arg(long)]
    pub data_digest: Option<String>,
    /// Who publishes: a person or a pipeline.
    #[arg(long)]
    pub publisher: String,
    /// Free-form notes, signed with the version.
    #[arg(long, default_value = "")]
    pub notes: String,
    /// Publish the model files encrypted (AES-256-GCM, a new data key)
    /// with the data key wrapped for this fleet public key
    /// (`fleet-model-key.pub` from `nusactl models keygen`).
    #[arg(long, value_name = "FLEET_PUBLIC_KEY")]
    pub encrypt_for: Option<PathBuf>,
    /// A canary release: the folder's `rollout.toml` (its `[rollout]`
    /// keys; empty for each box's plan) is signed with the version, and
    /// every box that pulls it starts the version's rollout by itself.
    #[arg(long)]
    pub canary: bool,
}

/// Make a fleet model key pair for encrypted versions.
#[derive(Debug, Clone, clap::Args)]
pub struct KeygenArgs {
    /// Folder for `fleet-model-key` (private, 0600: only devices get it)
    /// and `fleet-model-key.pub` (what publishers encrypt for); created
    /// 0700. Existing keys are never overwritten.
    #[arg(long)]
    pub out: PathBuf,
}

/// Wrap an encrypted version's data key for another fleet key (rotation):
/// adds one signed target; the version's files and manifest do not change.
#[derive(Debug, Clone, clap::Args)]
pub struct RewrapArgs {
    /// The model repository.
    #[arg(long)]
    pub repo: PathBuf,
    /// Folder of the model repository's signing keys.
    #[arg(long)]
    pub keys: PathBuf,
    #[arg(long)]
    pub model: String,
    #[arg(long)]
    pub version: String,
    /// A fleet private key the version's data key is wrapped for now.
    #[arg(long, value_name = "KEY")]
    pub old_private: PathBuf,
    /// The fleet public key to wrap it for.
    #[arg(long, value_name = "KEY")]
    pub new_public: PathBuf,
}

/// What was published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// Every target added, the manifest last.
    pub targets: Vec<String>,
    pub manifest: Manifest,
}

impl fmt::Display for PublishReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = &self.manifest;
        writeln!(
            f,
            "published {} version {} at {} by {}",
            m.model, m.version, m.published_at, m.provenance.publisher
        )?;
        for file in &m.files {
            writeln!(f, "  {}  {}  {} bytes", file.sha256, file.path, file.length)?;
        }
        if let Some(enc) = &m.encryption {
            let files: Vec<&str> = enc.files.iter().map(|f| f.path.as_str()).collect();
            writeln!(
                f,
                "  encrypted ({}, key wrapped {}): {}",
                enc.algorithm,
                enc.key_wrapping,
                files.join(", ")
            )?;
            for t in self.targets.iter().filter(|t| t.contains("/keys/")) {
                writeln!(f, "  key wrapping {t}")?;
            }
        }
        Ok(())
    }
}

/// Publishes the version the arguments describe.
pub async fn run_publish(args: &PublishArgs) -> anyhow::Result<PublishReport> {
    check_rollout_policy(&args.dir, args.canary)?;
    let provenance = Provenance {
        source_revision: args.source_revision.clone(),
        training_run: args.training_run.clone(),
        data_digest: args.data_digest.clone(),
        publisher: args.publisher.clone(),
        notes: args.notes.clone(),
    };
    let encrypt_for = args
        .encrypt_for
        .as_deref()
        .map(FleetPublicKey::read)
        .transpose()
        .context("--encrypt-for")?;
    let options = PublishOptions { encrypt_for };
    let manifest = publish_version_with(
        &args.repo,
        &args.keys,
        &args.model,
        &args.version,
        &args.dir,
        &provenance,
        &options,
    )
    .await
    .with_context(|| {
        format!(
            "publishing {} version {} to {}",
            args.model,
            args.version,
            args.repo.display()
        )
    })?;
    let prefix = version_prefix(&manifest.model, manifest.version);
    let mut targets: Vec<String> = manifest
        .files
        .iter()
        .map(|file| format!("{prefix}{}", file.path))
        .collect();
    if let Some(key) = &options.encrypt_for {
        targets.push(format!("{prefix}{}", WrappedKey::file_path(&key.key_id())));
    }
    targets.push(format!("{prefix}{MANIFEST_FILE}"));
    Ok(PublishReport { targets, manifest })
}

/// Writes a new fleet key pair.
pub fn run_keygen(args: &KeygenArgs) -> anyhow::Result<KeygenReport> {
    keygen(&args.out).with_context(|| format!("keygen into {}", args.out.display()))
}

/// Adds a wrapping for the new key; returns the target added.
pub async fn run_rewrap(args: &RewrapArgs) -> anyhow::Result<String> {
    let old = FleetPrivateKey::read(&args.old_private).context("--old-private")?;
    let new = FleetPublicKey::read(&args.new_public).context("--new-public")?;
    let key_id = rewrap(
        &args.repo,
        &args.keys,
        &args.model,
        &args.version,
        &old,
        &new,
    )
    .await
    .with_context(|| {
        format!(
            "rewrapping {} version {} in {}",
            args.model,
            args.version,
            args.repo.display()
        )
    })?;
    Ok(format!(
        "models/{}/{}/{}",
        args.model,
        args.version,
        WrappedKey::file_path(&key_id)
    ))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::PublishArgs;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        publish: PublishArgs,
    }

    #[test]
    fn arguments_parse() {
        let cli = Cli::try_parse_from([
            "publish",
            "--repo=r",
            "--keys=k",
            "--model=resnet",
            "--version=3",
            "--dir=d",
            "--source-revision=abc",
            "--data-digest=sha256:00",
            "--publisher=ci",
        ])
        .expect("parses");
        assert_eq!(cli.publish.version, "3");
        assert_eq!(cli.publish.training_run, None);
        assert_eq!(cli.publish.notes, "");
        assert!(Cli::try_parse_from(["publish", "--repo=r"]).is_err());
    }
}

/// `--canary` and the folder's `rollout.toml` go together, and the policy
/// must be a plan a box accepts (checked here, before anything is signed).
fn check_rollout_policy(dir: &std::path::Path, canary: bool) -> anyhow::Result<()> {
    let path = dir.join(nusa_rollout::POLICY_FILE);
    match (canary, path.is_file()) {
        (false, false) => Ok(()),
        (true, false) => anyhow::bail!(
            "--canary: {} is missing (the release's [rollout] keys at its top level; an empty file takes each box's plan)",
            path.display()
        ),
        (false, true) => anyhow::bail!(
            "{} is there: pass --canary to publish a canary release, or remove it",
            path.display()
        ),
        (true, true) => {
            let text = nusa_fsutil::read_to_string_bounded(&path, 64 << 10)
                .map_err(|e| anyhow::anyhow!("reading {}: {}", path.display(), e.detail()))?;
            let spec: nusa_rollout::PlanSpec =
                toml::from_str(&text).with_context(|| format!("{}", path.display()))?;
            nusa_rollout::Plan::default()
                .with(&spec)
                .with_context(|| format!("{}", path.display()))?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod rollout_policy_tests {
    use super::check_rollout_policy;

    #[test]
    fn canary_and_rollout_toml_go_together_and_the_policy_is_checked() {
        let d = tempfile::tempdir().unwrap();
        check_rollout_policy(d.path(), false).unwrap();
        let e = check_rollout_policy(d.path(), true).unwrap_err();
        assert!(
            format!("{e:#}").contains("rollout.toml is missing"),
            "{e:#}"
        );
        std::fs::write(d.path().join("rollout.toml"), "").unwrap();
        check_rollout_policy(d.path(), true).unwrap();
        let e = check_rollout_policy(d.path(), false).unwrap_err();
        assert!(format!("{e:#}").contains("pass --canary"), "{e:#}");
        std::fs::write(d.path().join("rollout.toml"), "steps = [5, 50]\n").unwrap();
        let e = check_rollout_policy(d.path(), true).unwrap_err();
        assert!(
            format!("{e:#}").contains("rollout.steps must end at 100"),
            "{e:#}"
        );
        std::fs::write(d.path().join("rollout.toml"), "stpes = [5, 100]\n").unwrap();
        let e = check_rollout_policy(d.path(), true).unwrap_err();
        assert!(format!("{e:#}").contains("stpes"), "{e:#}");
    }
}
