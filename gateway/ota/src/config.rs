//! `/etc/nusa/update.toml`: where the updater finds its releases, its
//! slots, its bootloader and the gateway it checks; turned into a runner
//! [`Setup`]. A bad file is one error naming the key.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nusa_ota_core::{seed_from_machine_id, UpdaterConfig, Variant, Version};
use nusa_ota_slots::BackendConfig;
use serde::Deserialize;

use crate::fetch::{FetchConfig, HttpFetcher};
use crate::health::GatewayGate;
pub use crate::runner::BootFiles;
use crate::runner::{Repository, Setup};
use crate::store::Store;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateConfig {
    /// `x86_64-rtx` or `aarch64-jetson`.
    pub variant: String,
    /// An update server's URL (`https://...`, serving `metadata/` and
    /// `targets/`), or a folder holding the same repository (a USB stick).
    /// Plain `http://` only to a loopback host, or with
    /// `allow_insecure_transport`.
    pub repository: String,
    /// PEM roots for an https repository; without it, the system's roots.
    pub ca: Option<PathBuf>,
    /// Allows a plain `http://` repository on a host other than loopback
    /// (signatures are still verified; the transport is not private, and
    /// anyone on the path can withhold updates). Logged as a warning.
    #[serde(default)]
    pub allow_insecure_transport: bool,
    /// A whole TUF metadata file must arrive within this many seconds.
    #[serde(default = "d::metadata_timeout_s")]
    pub metadata_timeout_s: u64,
    #[serde(default = "d::version_file")]
    pub version_file: PathBuf,
    #[serde(default = "d::trusted_root")]
    pub trusted_root: PathBuf,
    #[serde(default = "d::state_dir")]
    pub state_dir: PathBuf,
    /// The rollout seed comes from this file's contents.
    #[serde(default = "d::machine_id")]
    pub machine_id: PathBuf,
    /// Storage of slot A and slot B.
    #[serde(default = "d::slots")]
    pub slots: [PathBuf; 2],
    #[serde(default = "d::boot_tries")]
    pub boot_tries: u8,
    #[serde(default = "d::health_timeout_s")]
    pub health_timeout_s: u64,
    #[serde(default = "d::download_retries")]
    pub download_retries: u32,
    /// Downloaded and verified bytes between two records of the progress
    /// on disk: a kill, power cut or timeout mid-download refetches at most
    /// this much (each record writes the resume bitmap, a few KiB).
    #[serde(default = "d::download_checkpoint_bytes")]
    pub download_checkpoint_bytes: u64,
    #[serde(default = "d::retry_backoff_s")]
    pub retry_backoff_s: u64,
    /// Sleep through a retry's backoff up to this long instead of exiting.
    #[serde(default = "d::max_wait_s")]
    pub max_wait_s: u64,
    #[serde(default = "d::reboot_command")]
    pub reboot_command: Vec<String>,
    pub bootloader: BackendConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// Files of the release that go to the boot partition for the slot
    /// (the kernel and initrd systemd-boot loads), if any.
    pub boot_files: Option<BootFiles>,
    /// Progress in Prometheus text, for the gateway's metrics port
    /// (`server.metrics_textfiles` there).
    #[serde(default = "d::metrics_file")]
    pub metrics_file: Option<PathBuf>,
    /// `[tracing]`: each update attempt as one trace of its steps, exported
    /// over OTLP/HTTP (off without it).
    pub tracing: Option<UpdateTracing>,
}

/// `[tracing]` in update.toml: where the updater's traces go. Every run's
/// trace is exported (an update is rare and worth seeing whole).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTracing {
    /// The collector's OTLP/HTTP base URL (`http://collector:4318`).
    pub otlp_endpoint: String,
    /// `service.name` of the spans.
    #[serde(default = "d::trace_service")]
    pub service_name: String,
    /// Sent with every export (a collector's API key; never logged).
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
    /// PEM roots for an `https://` collector.
    pub ca: Option<PathBuf>,
    /// One export's limit; what is not exported by then is dropped.
    #[serde(default = "d::trace_timeout_ms")]
    pub export_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    pub url: String,
    /// The gateway's CA (it makes one under its data dir when none is
    /// provisioned).
    pub ca: Option<PathBuf>,
    /// The model the self-test inference runs.
    pub model: String,
    /// nusad's admin socket: the self-test's metadata and inference go over
    /// it (the updater runs as root, which the socket admits), so they pass
    /// when the public port wants API keys; readiness is still checked on
    /// `url`. Not there: everything over `url`.
    #[serde(default = "d::admin_socket")]
    pub admin_socket: Option<PathBuf>,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            url: "https://127.0.0.1:8443".into(),
            ca: Some("/var/lib/nusa/tls/ca.pem".into()),
            model: "tiny-cnn".into(),
            admin_socket: d::admin_socket(),
        }
    }
}

mod d {
    use std::path::PathBuf;
    pub fn trace_service() -> String {
        "nusa-update".into()
    }
    pub fn trace_timeout_ms() -> u64 {
        10_000
    }
    pub fn version_file() -> PathBuf {
        "/usr/lib/nusa/version".into()
    }
    pub fn trusted_root() -> PathBuf {
        "/usr/lib/nusa/root.json".into()
    }
    pub fn state_dir() -> PathBuf {
        "/var/lib/nusa-update".into()
    }
    pub fn machine_id() -> PathBuf {
        "/etc/machine-id".into()
    }
    pub fn slots() -> [PathBuf; 2] {
        [
            "/dev/disk/by-partlabel/root-a".into(),
            "/dev/disk/by-partlabel/root-b".into(),
        ]
    }
    pub fn boot_tries() -> u8 {
        3
    }
    pub fn admin_socket() -> Option<PathBuf> {
        Some("/var/lib/nusa/admin.sock".into())
    }

    pub fn health_timeout_s() -> u64 {
        300
    }
    pub fn download_checkpoint_bytes() -> u64 {
        32 << 20
    }
    pub fn download_retries() -> u32 {
        5
    }
    pub fn metadata_timeout_s() -> u64 {
        60
    }
    pub fn retry_backoff_s() -> u64 {
        30
    }
    pub fn max_wait_s() -> u64 {
        600
    }
    pub fn metrics_file() -> Option<PathBuf> {
        Some("/run/nusa-update/metrics.prom".into())
    }
    pub fn reboot_command() -> Vec<String> {
        vec!["systemctl".into(), "reboot".into()]
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    // The source is printed by the caller's error chain.
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

impl UpdateConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = read_small(path)?;
        let config: UpdateConfig = toml::from_str(&text).map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(config)
    }

    /// The checks `load` makes beyond the schema; the message names the key.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=16).contains(&self.boot_tries) {
            return Err("boot_tries: must be 1..=16".into());
        }
        if !(1..=3600).contains(&self.metadata_timeout_s) {
            return Err("metadata_timeout_s: must be 1..=3600".into());
        }
        self.check_transport()
    }

    /// A remote repository is https (trusting `ca`, or the system's
    /// roots); plain http only to a loopback host or with
    /// `allow_insecure_transport = true`; anything without a scheme is a
    /// folder.
    fn check_transport(&self) -> Result<(), String> {
        let Some((scheme, _)) = self.repository.split_once("://") else {
            return Ok(());
        };
        match scheme.to_ascii_lowercase().as_str() {
            "https" => Ok(()),
            "http" => {
                let url = nusa_ota_tuf::Url::parse(&self.repository)
                    .map_err(|e| format!("repository: {e}"))?;
                if is_loopback(&url) || self.allow_insecure_transport {
                    Ok(())
                } else {
                    Err(format!(
                        "repository: plain http:// to {} is refused: use https:// (trusting `ca`, \
                         or the system's roots without it), or set allow_insecure_transport = true",
                        url.host_str().unwrap_or("(no host)")
                    ))
                }
            }
            other => Err(format!(
                "repository: unsupported scheme {other}:// (https://, http:// to loopback, or a \
                 folder path)"
            )),
        }
    }

    /// The runner's setup. The running version and the seed are read now.
    pub fn setup(&self, source: &Path) -> Result<Setup, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: source.to_path_buf(),
            message,
        };
        let variant = Variant::new(&self.variant).map_err(|e| invalid(format!("variant: {e}")))?;
        let running: Version = read_small(&self.version_file)?
            .trim()
            .parse()
            .map_err(|e| invalid(format!("{}: {e}", self.version_file.display())))?;
        let seed = read_small(&self.machine_id)
            .map(|id| seed_from_machine_id(id.trim().as_bytes()))
            .unwrap_or(0);
        self.check().map_err(&invalid)?;
        let repository = if self.repository.starts_with("https://")
            || self.repository.starts_with("http://")
        {
            if self.repository.starts_with("http://") {
                if self.allow_insecure_transport {
                    tracing::warn!(
                        repository = %self.repository,
                        "allow_insecure_transport = true: the update repository is fetched \
                         over plain http (signatures are still verified, but the transport \
                         is not private and anyone on the path can withhold updates)"
                    );
                } else {
                    tracing::info!(repository = %self.repository, "update repository over plain http on loopback");
                }
            }
            let fetcher = HttpFetcher::new(
                &format!("{}/targets", self.repository.trim_end_matches('/')),
                FetchConfig {
                    ca_bundle: self.ca.clone(),
                    metadata_timeout: Duration::from_secs(self.metadata_timeout_s),
                    ..FetchConfig::default()
                },
            )
            .map_err(|e| invalid(format!("repository: {e}")))?;
            Repository::Http {
                base: self.repository.clone(),
                fetcher: Box::new(fetcher),
            }
        } else {
            Repository::Dir(PathBuf::from(&self.repository))
        };
        let backend = nusa_ota_slots::from_config(&self.bootloader)
            .map_err(|e| invalid(format!("bootloader: {e}")))?;
        let gate = GatewayGate::new(&self.health.url, self.health.ca.clone(), &self.health.model)
            .map_err(|e| invalid(format!("health: {e}")))?
            .with_admin_socket(self.health.admin_socket.clone());
        Ok(Setup {
            variant,
            running,
            store: Store::open(&self.state_dir).map_err(|e| invalid(e.to_string()))?,
            trusted_root: self.trusted_root.clone(),
            repository,
            slots: self.slots.clone(),
            backend,
            gate: Box::new(gate),
            config: UpdaterConfig {
                seed,
                boot_tries: self.boot_tries,
                health_timeout_secs: self.health_timeout_s,
                download_retries: self.download_retries,
                retry_backoff_secs: self.retry_backoff_s,
                ..UpdaterConfig::default()
            },
            max_wait: Duration::from_secs(self.max_wait_s),
            audit_socket: self.health.admin_socket.clone(),
            on_progress: None,
            boot_files: self.boot_files.clone(),
            metrics_file: self.metrics_file.clone(),
            cut_write_at: None,
            cut_after_commands: None,
            checkpoint_bytes: self.download_checkpoint_bytes,
        })
    }
}

/// `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(url: &nusa_ota_tuf::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A small file, 1 MiB at most: a larger one is an error
/// (`InvalidData`), not a truncated read.
fn read_small(path: &Path) -> Result<String, ConfigError> {
    nusa_fsutil::read_to_string_bounded(path, 1 << 20).map_err(|e| ConfigError::Read {
        path: path.to_path_buf(),
        source: match e {
            nusa_fsutil::ReadError::Io { source, .. } => source,
            too_large => std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                too_large.detail().to_string(),
            ),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> UpdateConfig {
        toml::from_str(&format!(
            "variant = \"x86_64-rtx\"\n{extra}\n[bootloader]\nkind = \"file\"\ndir = \"/tmp/boot\"\n"
        ))
        .expect("config parses")
    }

    fn check(extra: &str) -> Result<(), String> {
        config(extra).check()
    }

    #[test]
    fn https_repository_is_accepted_with_or_without_a_ca() {
        check("repository = \"https://updates.example/x86_64-rtx\"").expect("system roots");
        check("repository = \"https://updates.example\"\nca = \"/etc/nusa/update-ca.pem\"")
            .expect("configured CA");
    }

    #[test]
    fn plain_http_to_another_host_is_refused_naming_the_key() {
        for url in [
            "http://updates.example/x86_64-rtx",
            "http://10.0.2.2:8080",
            "HTTP://192.168.1.5",
            "http://[2001:db8::1]:80",
            "http://localhost.example.com",
        ] {
            let err = check(&format!("repository = \"{url}\"")).expect_err(url);
            assert!(
                err.starts_with("repository:") && err.contains("allow_insecure_transport = true"),
                "{url}: {err}"
            );
        }
    }

    #[test]
    fn plain_http_to_loopback_is_accepted() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3/repo",
            "http://localhost:9000/",
            "http://[::1]:8080/x",
        ] {
            check(&format!("repository = \"{url}\"")).expect(url);
        }
    }

    #[test]
    fn plain_http_anywhere_with_the_explicit_key() {
        let c = config("repository = \"http://10.0.2.2:8080\"\nallow_insecure_transport = true");
        assert!(c.allow_insecure_transport);
        c.check().expect("explicitly allowed");
        // The default is off.
        assert!(!config("repository = \"/media/usb\"").allow_insecure_transport);
    }

    #[test]
    fn folders_are_accepted_and_other_schemes_refused() {
        check("repository = \"/media/usb/nusa-repo\"").expect("folder");
        let err = check("repository = \"ftp://updates.example\"").expect_err("ftp");
        assert!(
            err.starts_with("repository: unsupported scheme ftp://"),
            "{err}"
        );
    }

    #[test]
    fn load_refuses_an_insecure_repository_naming_the_file_and_key() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("update.toml");
        std::fs::write(
            &path,
            "variant = \"x86_64-rtx\"\nrepository = \"http://updates.example\"\n\
             [bootloader]\nkind = \"file\"\ndir = \"/tmp/boot\"\n",
        )
        .expect("write");
        let err = UpdateConfig::load(&path).expect_err("insecure");
        let text = err.to_string();
        assert!(
            text.contains("update.toml") && text.contains("repository: plain http://"),
            "{text}"
        );
        std::fs::write(
            &path,
            "variant = \"x86_64-rtx\"\nrepository = \"http://updates.example\"\n\
             allow_insecure_transport = true\nmetadata_timeout_s = 0\n\
             [bootloader]\nkind = \"file\"\ndir = \"/tmp/boot\"\n",
        )
        .expect("write");
        let err = UpdateConfig::load(&path)
            .expect_err("timeout 0")
            .to_string();
        assert!(err.contains("metadata_timeout_s"), "{err}");
    }
}
