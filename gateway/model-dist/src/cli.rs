//! `nusactl models publish`: its arguments and what it runs, so the CLI
//! only parses and prints.

use std::fmt;
use std::path::PathBuf;

use anyhow::Context as _;

use crate::manifest::{Manifest, Provenance};
use crate::names::{version_prefix, MANIFEST_FILE};
use crate::publish::publish_version;

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
        Ok(())
    }
}

/// Publishes the version the arguments describe.
pub async fn run_publish(args: &PublishArgs) -> anyhow::Result<PublishReport> {
    let provenance = Provenance {
        source_revision: args.source_revision.clone(),
        training_run: args.training_run.clone(),
        data_digest: args.data_digest.clone(),
        publisher: args.publisher.clone(),
        notes: args.notes.clone(),
    };
    let manifest = publish_version(
        &args.repo,
        &args.keys,
        &args.model,
        &args.version,
        &args.dir,
        &provenance,
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
    targets.push(format!("{prefix}{MANIFEST_FILE}"));
    Ok(PublishReport { targets, manifest })
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
