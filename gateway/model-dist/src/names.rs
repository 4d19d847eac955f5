//! Model names, versions and file paths, and the target names they make:
//! `models/<model>/<version>/<path>`.
//!
//! Each component goes through nusa-ota-tuf's `check_component` (the same
//! characters its signed-name check accepts) plus the stricter model rules
//! here. A version is a canonical positive decimal, the registry's form,
//! so `7` and `07` cannot both name one version.

use nusa_ota_tuf::{check_component, NameError};

/// The folder of every model target: `models/<model>/<version>/<path>`.
/// Never a valid OS release name (`<variant>/<semver>/<file>`), so a model
/// target could not pass for a release even under the same keys.
pub const MODELS_DIR: &str = "models";

/// The signed manifest of a version, a target beside its files. Reserved:
/// a version directory may not contain its own `manifest.json`.
pub const MANIFEST_FILE: &str = "manifest.json";

/// Folders a file path may have; `tests/case.json` has one.
const MAX_PATH_DEPTH: usize = 4;

/// Checks a model name: `[A-Za-z0-9_.-]`, 1..=128 bytes, not starting with
/// `.` (so never `.`, `..` or a hidden folder).
pub fn check_model(name: &str) -> Result<(), NameError> {
    check_component("model name", name)?;
    let why = if name.starts_with('.') {
        Some("starts with '.'")
    } else if name.contains('+') {
        Some("may contain only letters, digits, '.', '_' and '-'")
    } else {
        None
    };
    match why {
        Some(why) => Err(NameError {
            what: "model name",
            value: name.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Parses a version: a canonical positive decimal `u64` (`1`, `42`; not
/// `0`, `01`, `+1` or ` 1`).
pub fn parse_version(value: &str) -> Result<u64, NameError> {
    let bad = |why| NameError {
        what: "model version",
        value: value.to_owned(),
        why,
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad("is not a positive decimal number"));
    }
    if value.starts_with('0') {
        return Err(bad("is zero or has a leading zero"));
    }
    value.parse().map_err(|_| bad("is larger than a u64"))
}

/// Checks a file's path relative to its version directory: `/`-separated
/// components, each one `check_component`-valid and not hidden, at most
/// four folders deep, and not the reserved manifest name.
pub fn check_file_path(path: &str) -> Result<(), NameError> {
    let bad = |why| NameError {
        what: "file path",
        value: path.to_owned(),
        why,
    };
    let components: Vec<&str> = path.split('/').collect();
    if components.len() > MAX_PATH_DEPTH + 1 {
        return Err(bad("is more than four folders deep"));
    }
    for component in &components {
        check_component("file path component", component).map_err(|e| NameError {
            what: "file path",
            value: path.to_owned(),
            why: e.why,
        })?;
        if component.starts_with('.') {
            return Err(bad("has a component starting with '.'"));
        }
    }
    if path == MANIFEST_FILE {
        return Err(bad("is reserved for the signed manifest"));
    }
    Ok(())
}

/// `models/<model>/<version>/`, the prefix of one version's targets.
pub(crate) fn version_prefix(model: &str, version: u64) -> String {
    format!("{MODELS_DIR}/{model}/{version}/")
}

/// Splits a signed target name under `models/` into `(model, version,
/// path)`, checking each part. `None` for a name outside `models/` (not
/// ours to judge); an error for a name inside it that we would never sign.
pub(crate) fn split_target(raw: &str) -> Option<Result<(String, u64, String), NameError>> {
    let rest = raw.strip_prefix(MODELS_DIR)?.strip_prefix('/')?;
    let bad = || NameError {
        what: "model target name",
        value: raw.to_owned(),
        why: "is not models/<model>/<version>/<path>",
    };
    let mut parts = rest.splitn(3, '/');
    let (Some(model), Some(version), Some(path)) = (parts.next(), parts.next(), parts.next())
    else {
        return Some(Err(bad()));
    };
    Some((|| {
        check_model(model)?;
        let version = parse_version(version)?;
        if path != MANIFEST_FILE {
            check_file_path(path)?;
        }
        Ok((model.to_owned(), version, path.to_owned()))
    })())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models() {
        for good in ["resnet50", "a", "yolo_v8.int8-b", &"m".repeat(128)] {
            assert!(check_model(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a+b",
            "a b",
            "ü",
            &"m".repeat(129),
        ] {
            assert!(check_model(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("1"), Ok(1));
        assert_eq!(parse_version("18446744073709551615"), Ok(u64::MAX));
        for bad in [
            "",
            "0",
            "01",
            "+1",
            "-1",
            " 1",
            "1.0",
            "18446744073709551616",
        ] {
            assert!(parse_version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn file_paths() {
        for good in [
            "model.onnx",
            "config.toml",
            "tests/case-1.json",
            "a/b/c/d/e",
        ] {
            assert!(check_file_path(good).is_ok(), "{good:?}");
        }
        for bad in [
            "",
            "/abs",
            "a//b",
            "../x",
            "tests/../../x",
            "./x",
            ".env",
            "tests/.x",
            "a\\b",
            "a/b/c/d/e/f",
            "manifest.json",
        ] {
            assert!(check_file_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn target_names() {
        assert_eq!(version_prefix("m", 3), "models/m/3/");
        let ok = split_target("models/m/3/tests/a.json");
        assert!(matches!(ok, Some(Ok((ref m, 3, ref p))) if m == "m" && p == "tests/a.json"));
        assert!(matches!(
            split_target("models/m/3/manifest.json"),
            Some(Ok(_))
        ));
        assert!(split_target("stable/1.0.0/root.img").is_none());
        for bad in [
            "models/m/03/a",
            "models/.m/3/a",
            "models/m/3",
            "models/m/3/.a",
        ] {
            assert!(matches!(split_target(bad), Some(Err(_))), "{bad:?}");
        }
    }
}
