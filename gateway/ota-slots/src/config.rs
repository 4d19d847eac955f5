//! Picking a backend by name from the updater's configuration.
//!
//! The configuration is a tagged table, so the name and the options arrive
//! together and an unknown name or option fails when the config is read:
//! ```toml
//! [ota.slots]
//! kind = "systemd-boot"   # or "file", "nvbootctrl"
//! esp = "/boot/efi"
//! ```

use serde::{Deserialize, Serialize};

use crate::{
    FileBackend, FileConfig, NvBootCtrlBackend, NvBootCtrlConfig, SlotBackend, SlotError,
    SystemdBootBackend, SystemdBootConfig,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum BackendConfig {
    File(FileConfig),
    SystemdBoot(SystemdBootConfig),
    #[serde(rename = "nvbootctrl")]
    NvBootCtrl(NvBootCtrlConfig),
}

impl BackendConfig {
    /// The name the configuration selects it by, as [`SlotBackend::name`].
    pub fn kind(&self) -> &'static str {
        match self {
            BackendConfig::File(_) => "file",
            BackendConfig::SystemdBoot(_) => "systemd-boot",
            BackendConfig::NvBootCtrl(_) => "nvbootctrl",
        }
    }
}

/// Builds the configured backend. Nothing is written here except the file
/// backend's initial state when it has none.
pub fn from_config(config: &BackendConfig) -> Result<Box<dyn SlotBackend>, SlotError> {
    Ok(match config {
        BackendConfig::File(c) => Box::new(FileBackend::new(&c.dir)?),
        BackendConfig::SystemdBoot(c) => Box::new(SystemdBootBackend::new(c.clone())?),
        BackendConfig::NvBootCtrl(c) => Box::new(NvBootCtrlBackend::new(c.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<BackendConfig, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn each_kind_by_name_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = parse(&format!(r#"{{"kind": "file", "dir": {:?}}}"#, dir.path())).unwrap();
        let sdb = parse(r#"{"kind": "systemd-boot", "esp": "/boot/efi"}"#).unwrap();
        let nv =
            parse(r#"{"kind": "nvbootctrl", "versions_file": "/data/ota/slot-versions.json"}"#)
                .unwrap();
        for config in [&file, &sdb, &nv] {
            assert_eq!(from_config(config).unwrap().name(), config.kind());
        }
        let BackendConfig::SystemdBoot(sdb) = sdb else {
            panic!("{sdb:?}")
        };
        assert_eq!(sdb, SystemdBootConfig::new("/boot/efi"));
        let BackendConfig::NvBootCtrl(nv) = nv else {
            panic!("{nv:?}")
        };
        assert_eq!(
            (nv.tool.to_str(), nv.retry_max),
            (Some("/usr/sbin/nvbootctrl"), 3)
        );
    }

    #[test]
    fn unknown_kinds_and_options_are_refused() {
        let err = parse(r#"{"kind": "grub"}"#).unwrap_err().to_string();
        assert!(err.contains("grub"), "{err}");
        parse(r#"{"kind": "systemd-boot", "esp": "/boot/efi", "espp": "/x"}"#).unwrap_err();
        let bad = parse(r#"{"kind": "systemd-boot", "esp": "/e", "options": "ro"}"#).unwrap();
        assert!(matches!(from_config(&bad), Err(SlotError::Config(_))));
    }
}
