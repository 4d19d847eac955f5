//! Target names: `<variant>/<version>/<file>`, and the checks that keep a
//! signed name from being read as a path outside the targets directory.
//!
//! tough resolves `a/../b` to `b` and accepts it (only a bare `..` is
//! refused), so a name that differs from its resolved form would make the
//! name a client verifies differ from the path it writes. We refuse such
//! names outright, on both sides: the publisher never signs one and the
//! client refuses a repository whose signed targets contain one.

use crate::error::{NameError, TufError};

/// Longest name component we accept; keeps names printable in logs and well
/// under any filesystem's limit even with the 64-character hash prefix.
const MAX_COMPONENT: usize = 128;

/// Checks one component of a target name (a variant, a version or a file
/// name): non-empty, not `.` or `..`, only `[A-Za-z0-9._+-]`.
///
/// `what` names the component in the error ("variant", "file name").
pub fn check_component(what: &'static str, value: &str) -> Result<(), NameError> {
    let why = if value.is_empty() {
        Some("is empty")
    } else if value == "." || value == ".." {
        Some("is a relative path component")
    } else if value.len() > MAX_COMPONENT {
        Some("is longer than 128 bytes")
    } else if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'+'))
    {
        Some("may contain only letters, digits, '.', '_', '-' and '+'")
    } else {
        None
    };
    match why {
        Some(why) => Err(NameError {
            what,
            value: value.to_owned(),
            why,
        }),
        None => Ok(()),
    }
}

/// Parses a release version; releases are ordered by semantic version so
/// that "highest" means the same on the publisher and on the device.
pub(crate) fn parse_version(value: &str) -> Result<semver::Version, NameError> {
    check_component("version", value)?;
    semver::Version::parse(value).map_err(|_| NameError {
        what: "version",
        value: value.to_owned(),
        why: "is not a semantic version (MAJOR.MINOR.PATCH)",
    })
}

/// The full target name of one file of a release: `<variant>/<version>/<file>`.
/// The one definition, for the publisher and the device.
pub fn target_name(variant: &str, version: &str, file: &str) -> String {
    format!("{variant}/{version}/{file}")
}

/// Refuses a signed target name that could be read as a path escaping the
/// targets directory: absolute, with `.`/`..`/empty segments, backslashes,
/// or control characters. Checked on the raw name as signed, before tough
/// resolves it.
pub(crate) fn check_signed_name(raw: &str) -> Result<(), TufError> {
    let unsafe_segment = raw
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment == "..");
    if unsafe_segment || raw.contains('\\') || raw.chars().any(char::is_control) {
        return Err(TufError::PathTraversal {
            name: raw.to_owned(),
        });
    }
    Ok(())
}

/// Splits a checked signed name into `(variant, version, file)`; names of
/// another shape are not releases and are ignored by the release lookup.
pub(crate) fn split_release_name(raw: &str) -> Option<(&str, &str, &str)> {
    let mut parts = raw.splitn(3, '/');
    let variant = parts.next()?;
    let version = parts.next()?;
    let file = parts.next()?;
    if file.contains('/') {
        return None;
    }
    Some((variant, version, file))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components() {
        assert!(check_component("variant", "jetson-orin_nx").is_ok());
        assert!(check_component("version", "1.2.3+build.4").is_ok());
        for bad in ["", ".", "..", "a/b", "a\\b", "a b", "ü"] {
            assert!(check_component("file name", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn signed_names() {
        assert!(check_signed_name("stable/1.0.0/image.img").is_ok());
        for bad in [
            "../evil",
            "stable/../../evil",
            "/etc/passwd",
            "stable//x",
            "stable/./x",
            "a\\..\\b",
            "stable/1.0.0/x\n",
        ] {
            assert!(
                matches!(check_signed_name(bad), Err(TufError::PathTraversal { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn versions_and_split() {
        assert!(parse_version("1.10.0").is_ok_and(|v| v > semver::Version::new(1, 9, 0)));
        assert!(parse_version("1.10").is_err());
        assert_eq!(
            split_release_name("stable/1.0.0/image.img"),
            Some(("stable", "1.0.0", "image.img"))
        );
        assert_eq!(split_release_name("stable/1.0.0"), None);
        assert_eq!(split_release_name("stable/1.0.0/a/b"), None);
    }
}
