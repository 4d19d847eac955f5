//! Bounded file reads, the one implementation the gateway uses.
//!
//! Everything read from disk is bounded (ARCHITECTURE.md): a file is read
//! through `take(max + 1)`, so a larger one is seen without reading it
//! whole, and it is an error rather than a silently truncated read. The
//! bound is checked on the bytes read, not on `metadata().len()`, so it
//! also holds for files whose size the kernel does not report
//! (`/proc/cmdline`) and for a file that grows between the two calls.

use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// Why a bounded read failed; both variants name the file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Opening or reading failed (not found, denied, not UTF-8 for the
    /// string reads).
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    /// The file has more than `max` bytes.
    #[error("{}: larger than {max} bytes", path.display())]
    TooLarge { path: PathBuf, max: u64 },
}

impl ReadError {
    /// The file does not exist (callers that treat that as "none yet").
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }

    /// What went wrong without the path, for callers whose message names
    /// the file their own way (`reading <path>: <detail>`).
    pub fn detail(&self) -> Detail<'_> {
        Detail(self)
    }
}

/// [`ReadError`]'s message without the path.
pub struct Detail<'a>(&'a ReadError);

impl fmt::Display for Detail<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ReadError::Io { source, .. } => source.fmt(f),
            ReadError::TooLarge { max, .. } => write!(f, "larger than {max} bytes"),
        }
    }
}

/// The whole of `path`, at most `max` bytes.
///
/// The bytes of a file found too large are wiped before they are dropped:
/// callers read key files with this too.
pub fn read_bounded(path: &Path, max: u64) -> Result<Vec<u8>, ReadError> {
    let io = |source| ReadError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| {
            bytes.fill(0);
            io(e)
        })?;
    if bytes.len() as u64 > max {
        bytes.fill(0);
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            max,
        });
    }
    Ok(bytes)
}

/// The whole of `path` as UTF-8 text, at most `max` bytes; text that is
/// not UTF-8 is an [`io::ErrorKind::InvalidData`] error, as
/// `Read::read_to_string` makes it.
pub fn read_to_string_bounded(path: &Path, max: u64) -> Result<String, ReadError> {
    let bytes = read_bounded(path, max)?;
    String::from_utf8(bytes).map_err(|e| {
        e.into_bytes().fill(0);
        ReadError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                "stream did not contain valid UTF-8",
            ),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(len: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("f");
        std::fs::write(&path, vec![b'a'; len]).expect("write");
        (dir, path)
    }

    #[test]
    fn a_file_of_exactly_the_bound_is_read_whole() {
        let (_dir, path) = file(16);
        assert_eq!(read_bounded(&path, 16).expect("read").len(), 16);
        assert_eq!(
            read_to_string_bounded(&path, 16).expect("read"),
            "a".repeat(16)
        );
        let (_dir, empty) = file(0);
        assert!(read_bounded(&empty, 0).expect("read").is_empty());
    }

    #[test]
    fn one_byte_over_the_bound_is_an_error_naming_file_and_bound() {
        let (_dir, path) = file(17);
        let e = read_bounded(&path, 16).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { max: 16, .. }), "{e:?}");
        assert!(!e.is_not_found());
        assert_eq!(
            e.to_string(),
            format!("{}: larger than 16 bytes", path.display())
        );
        assert_eq!(e.detail().to_string(), "larger than 16 bytes");
        let e = read_to_string_bounded(&path, 16).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { .. }), "{e:?}");
    }

    #[test]
    fn a_missing_file_is_an_io_error_that_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("missing");
        let e = read_bounded(&path, 16).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        assert!(
            e.to_string().starts_with(&format!("{}: ", path.display())),
            "{e}"
        );
        assert!(
            !e.detail().to_string().contains("missing"),
            "{}",
            e.detail()
        );
    }

    #[test]
    fn text_that_is_not_utf8_is_invalid_data() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("bin");
        std::fs::write(&path, [0xff, 0xfe]).expect("write");
        let e = read_to_string_bounded(&path, 16).unwrap_err();
        assert!(
            matches!(&e, ReadError::Io { source, .. } if source.kind() == io::ErrorKind::InvalidData),
            "{e:?}"
        );
    }

    #[test]
    fn files_without_a_reported_size_are_bounded_too() {
        // /proc files report length 0; the bound holds on what is read.
        let Ok(text) = read_to_string_bounded(Path::new("/proc/self/status"), 1 << 20) else {
            return;
        };
        assert!(!text.is_empty());
        let e = read_bounded(Path::new("/proc/self/status"), 4).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { .. }), "{e:?}");
    }
}
