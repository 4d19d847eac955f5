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
    pub repository: String,
    /// PEM roots for an https repository.
    pub ca: Option<PathBuf>,
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
    pub fn download_retries() -> u32 {
        5
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
        if !(1..=16).contains(&config.boot_tries) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                message: "boot_tries: must be 1..=16".into(),
            });
        }
        Ok(config)
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
        let repository =
            if self.repository.starts_with("https://") || self.repository.starts_with("http://") {
                let fetcher = HttpFetcher::new(
                    &format!("{}/targets", self.repository.trim_end_matches('/')),
                    FetchConfig {
                        ca_bundle: self.ca.clone(),
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
        })
    }
}

fn read_small(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let err = |source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut s = String::new();
    std::fs::File::open(path)
        .map_err(err)?
        .take(1 << 20)
        .read_to_string(&mut s)
        .map_err(err)?;
    Ok(s)
}
