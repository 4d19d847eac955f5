//! The log file: open (learn the head from the tail), append, list.

use std::fmt;
use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::Serialize;

use crate::lines::{read_line, tail_start, Backward};
use crate::record::{line_hash, Record, GENESIS};
use crate::{AuditError, Entry, MAX_LINE};

/// `list` returns at most this many records, whatever the caller asks.
pub const MAX_LIST: usize = 10_000;

/// The audit log: one file of JSON lines, appended by one process (nusad).
///
/// Appends are serialised by a lock and written with one `write` on an
/// `O_APPEND` descriptor, then `fdatasync`ed. Reads (`list`) use `pread`
/// and never take the lock.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    head: Option<Head>,
    /// The file ends without a newline (a partial line, or a record that
    /// lost only its newline): the next append writes one first, so a
    /// record is never joined onto other bytes.
    needs_newline: bool,
    /// The file's length as this process last left it; another length at
    /// the next append means someone else wrote, so the head is read again.
    len: u64,
    /// A write or sync failed: the file's end is unknown until read again.
    stale: bool,
    damage: Option<TailDamage>,
}

#[derive(Clone, Debug)]
struct Head {
    seq: u64,
    /// The record's `hash`, as `head()` and checkpoints give it.
    hash: String,
    /// The hash of its line: the next record's `prev`.
    line_hash: String,
}

/// Bytes at the end of the log that hold no record, as `open` (or the last
/// re-read of the tail) found them: a partial last line from a power cut,
/// or lines that are not records. Appends go after them on a new line;
/// `verify` reports each such line as malformed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TailDamage {
    pub offset: u64,
    pub bytes: u64,
    /// The file ended without a newline.
    pub partial: bool,
}

/// What the end of the file says: the last record and what follows it.
struct Tail {
    head: Option<Head>,
    needs_newline: bool,
    damage: Option<TailDamage>,
}

impl AuditLog {
    /// Opens the log, creating it (0600, its folder 0700) if missing, and
    /// reads backwards from the end to learn the head. A damaged tail is
    /// kept (see [`AuditLog::tail_damage`]), never an error: the log must
    /// stay writable after a power cut.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(AuditError::io("creating", dir))?;
        let created = OpenOptions::new()
            .read(true)
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        let (file, created) = match created {
            Ok(f) => (f, true),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let f = OpenOptions::new()
                    .read(true)
                    .append(true)
                    .open(path)
                    .map_err(AuditError::io("opening", path))?;
                (f, false)
            }
            Err(e) => return Err(AuditError::io("creating", path)(e)),
        };
        let meta = file.metadata().map_err(AuditError::io("reading", path))?;
        if !meta.is_file() {
            return Err(AuditError::Invalid(format!(
                "{} is not a regular file",
                path.display()
            )));
        }
        // Records name keys, subjects and uids: nusad's alone. An older,
        // wider file is narrowed.
        if meta.permissions().mode() & 0o077 != 0 {
            file.set_permissions(Permissions::from_mode(0o600))
                .map_err(AuditError::io("making private (0600)", path))?;
        }
        if created {
            // The new name must survive a power cut as well as the records.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(AuditError::io("syncing", dir))?;
        }
        let len = meta.len();
        let tail = scan_tail(&file, len).map_err(AuditError::io("reading", path))?;
        Ok(AuditLog {
            path: path.to_owned(),
            file,
            state: Mutex::new(State {
                head: tail.head,
                needs_newline: tail.needs_newline,
                len,
                stale: false,
                damage: tail.damage,
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record after the head and returns it. On an error the
    /// record may or may not be in the file; the next append reads the
    /// tail again first, so the chain stays whole either way.
    pub fn append(&self, entry: Entry, at: u64) -> Result<Record, AuditError> {
        entry.check()?;
        let mut state = self.state.lock();
        let len = self
            .file
            .metadata()
            .map_err(AuditError::io("reading", &self.path))?
            .len();
        if state.stale || len != state.len {
            let tail = scan_tail(&self.file, len).map_err(AuditError::io("reading", &self.path))?;
            state.head = tail.head;
            state.needs_newline = tail.needs_newline;
            state.damage = tail.damage;
            state.len = len;
            state.stale = false;
        }
        let (seq, prev) = match &state.head {
            None => (1, GENESIS.to_owned()),
            Some(h) => {
                let seq = h.seq.checked_add(1).ok_or_else(|| {
                    AuditError::Invalid(format!("seq {} is the last there can be", h.seq))
                })?;
                (seq, h.line_hash.clone())
            }
        };
        let record = Record::seal(seq, at, entry, prev)?;
        let line = record.to_line()?;
        if line.len() + 1 > MAX_LINE {
            return Err(AuditError::TooLarge {
                len: line.len() + 1,
                max: MAX_LINE,
            });
        }
        // Never write what verify would not accept (a float in `detail`
        // that does not survive a JSON round trip would).
        if !Record::parse(&line).is_ok_and(|p| p.content_ok && p.record == record) {
            return Err(AuditError::Invalid(
                "the record does not read back as written (a number in detail that JSON cannot round-trip?)".into(),
            ));
        }
        let mut buf = Vec::with_capacity(line.len() + 2);
        if state.needs_newline {
            buf.push(b'\n');
        }
        buf.extend_from_slice(&line);
        buf.push(b'\n');
        // One write: the record lands whole or, cut short, as a partial
        // line that the next append steps over (never a record split
        // across two writes that another writer could interleave).
        let write_error = match (&self.file).write(&buf) {
            Ok(n) if n == buf.len() => None,
            Ok(n) => Some(format!("only {n} of {} bytes were written", buf.len())),
            Err(e) => Some(e.to_string()),
        };
        if let Some(detail) = write_error {
            state.stale = true;
            return Err(AuditError::Write {
                path: self.path.clone(),
                detail,
            });
        }
        // fdatasync: the data and the new length, which is all a reader
        // needs; the other metadata (mtime) may lag.
        if let Err(e) = self.file.sync_data() {
            state.stale = true;
            return Err(AuditError::Write {
                path: self.path.clone(),
                detail: format!("fsync: {e}"),
            });
        }
        state.head = Some(Head {
            seq,
            hash: record.hash.clone(),
            line_hash: line_hash(&line),
        });
        state.needs_newline = false;
        state.len = len + buf.len() as u64;
        Ok(record)
    }

    /// The last record's seq and `hash`, or `None` for an empty log.
    pub fn head(&self) -> Option<(u64, String)> {
        self.state
            .lock()
            .head
            .as_ref()
            .map(|h| (h.seq, h.hash.clone()))
    }

    /// What `open` found after the last record, if anything.
    pub fn tail_damage(&self) -> Option<TailDamage> {
        self.state.lock().damage.clone()
    }

    /// Records with `at >= since`, oldest first: the newest `limit` of them
    /// (at most [`MAX_LIST`]). Read backwards from the end, so a short list
    /// of a long log reads only its end. Lines that are not records are
    /// skipped; `verify` is what reports them.
    pub fn list(&self, since: Option<u64>, limit: usize) -> Result<Vec<Record>, AuditError> {
        let limit = limit.min(MAX_LIST);
        if limit == 0 {
            return Ok(Vec::new());
        }
        let read = || -> io::Result<Vec<Record>> {
            let mut out = Vec::new();
            let len = self.file.metadata()?.len();
            let tail = tail_start(&self.file, len)?;
            let wanted = |r: &Record| since.is_none_or(|s| r.at >= s);
            // A last line that lost only its newline is still a record.
            if tail < len {
                if let Some(r) = read_line(&self.file, tail, len)?
                    .and_then(|b| Record::parse(&b).ok())
                    .map(|p| p.record)
                    .filter(wanted)
                {
                    out.push(r);
                }
            }
            let mut back = Backward::new(&self.file, tail);
            while out.len() < limit {
                let Some((_, bytes)) = back.next_line()? else {
                    break;
                };
                if let Some(r) = bytes
                    .and_then(|b| Record::parse(&b).ok())
                    .map(|p| p.record)
                    .filter(wanted)
                {
                    out.push(r);
                }
            }
            out.reverse();
            Ok(out)
        };
        read().map_err(AuditError::io("reading", &self.path))
    }
}

impl fmt::Display for TailDamage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the last {} bytes (from offset {}) hold no record",
            self.bytes, self.offset
        )?;
        if self.partial {
            f.write_str(", ending in a partial line (a write cut short by a power cut?)")?;
        }
        Ok(())
    }
}

/// Finds the last record by reading lines backwards from the end. Its
/// content hash is not checked: if the last record was edited, the chain
/// continues from it as it stands and `verify` reports the edit once.
fn scan_tail(file: &File, len: u64) -> io::Result<Tail> {
    let tail = tail_start(file, len)?;
    let needs_newline = tail < len;
    if needs_newline {
        // A record whose newline alone was lost is whole.
        if let Some(head) = read_line(file, tail, len)?.and_then(|b| head_of(&b)) {
            return Ok(Tail {
                head: Some(head),
                needs_newline,
                damage: None,
            });
        }
    }
    let mut back = Backward::new(file, tail);
    let mut head = None;
    let mut after = 0;
    while let Some((start, bytes)) = back.next_line()? {
        if let Some((h, line_len)) = bytes.and_then(|b| head_of(&b).map(|h| (h, b.len()))) {
            head = Some(h);
            after = start + line_len as u64 + 1;
            break;
        }
    }
    let damage = (after < len).then(|| TailDamage {
        offset: after,
        bytes: len - after,
        partial: needs_newline,
    });
    Ok(Tail {
        head,
        needs_newline,
        damage,
    })
}

fn head_of(line: &[u8]) -> Option<Head> {
    let parsed = Record::parse(line).ok()?;
    Some(Head {
        seq: parsed.record.seq,
        hash: parsed.record.hash,
        line_hash: line_hash(line),
    })
}

#[cfg(test)]
mod tests;
