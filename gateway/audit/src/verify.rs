//! Verification: reads the whole log forward and reports every edited,
//! removed, reordered or malformed record, and a tail cut short of a
//! checkpoint.
//!
//! The reading is split from the judging: [`Chain`] takes one line at a
//! time and holds only a window of recent records, the seqs still missing
//! and the problems found, so memory does not grow with the log.
//!
//! After each problem the chain resynchronises: it compares a record
//! against the record the chain expects (seq - 1, looked up among the
//! recent ones), then continues from what it read. A removed seq is only
//! reported at the end, because a record that appears to be missing may
//! still turn up further on (a reorder, not a removal).

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::lines::Forward;
use crate::record::{line_hash, Record, GENESIS};
use crate::{AuditError, Checkpoint, MAX_LINE};

/// A report lists at most this many problems and counts the rest (a file
/// of garbage must not make a report of millions of lines).
pub const MAX_PROBLEMS: usize = 10_000;
/// How many recent records are kept for checking `prev` against a record
/// that is not the line just before (after a reorder or a gap).
const WINDOW: usize = 256;

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// Lines that are records.
    pub records: u64,
    /// All lines, records or not.
    pub lines: u64,
    /// The last record's seq and hash, as `AuditLog::open` would take them.
    pub head: Option<(u64, String)>,
    /// In line order.
    pub problems: Vec<Problem>,
    /// Problems found beyond [`MAX_PROBLEMS`].
    pub problems_omitted: u64,
}

/// One thing wrong with the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// 1-based line of the record concerned (for a removal, the record
    /// after the gap; for a truncation, the last line).
    pub line: u64,
    /// The record concerned (for a removal or truncation, the first
    /// missing seq).
    pub seq: Option<u64>,
    pub kind: ProblemKind,
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// A line that is not a record (a partial line from a power cut, an
    /// overlong or non-JSON line).
    Malformed,
    /// A record's content no longer hashes to its `hash`, or it was
    /// re-hashed but the next record's `prev` no longer matches it, or its
    /// seq was changed.
    Edited,
    /// A gap in seq that nothing further on fills.
    Removed,
    /// A record that appears after a later one, or a seq that appears twice.
    Reordered,
    /// The log ends before a checkpoint's seq.
    Truncated,
    /// The record at a checkpoint's seq has another hash than the
    /// checkpoint's.
    CheckpointMismatch,
}

/// Reads the log at `path` line by line (each line bounded by
/// [`MAX_LINE`]) and reports every problem. `checkpoints` are trusted as
/// given: check their signatures first ([`crate::verify_checkpoint`]).
/// Without a checkpoint, records cut from the end are not detectable.
pub fn verify(path: &Path, checkpoints: &[Checkpoint]) -> Result<VerifyReport, AuditError> {
    let file = File::open(path).map_err(AuditError::io("opening", path))?;
    let mut lines = Forward::new(BufReader::with_capacity(MAX_LINE, file));
    let mut chain = Chain::new(checkpoints);
    while let Some(line) = lines.next_line().map_err(AuditError::io("reading", path))? {
        let Some(bytes) = line.bytes else {
            chain.malformed(
                line.number,
                format!("a line of more than {MAX_LINE} bytes: not a record"),
            );
            continue;
        };
        match Record::parse(bytes) {
            Ok(p) => chain.record(line.number, p.record, line_hash(bytes), p.content_ok),
            Err(e) => {
                let detail = if e.is_eof() && !line.terminated {
                    "a partial last line: a write cut short (power cut?)".to_owned()
                } else if e.is_eof() {
                    "a line cut short: a write interrupted (power cut?) before later records"
                        .to_owned()
                } else {
                    format!("not a record: {e}")
                };
                chain.malformed(line.number, detail);
            }
        }
    }
    Ok(chain.finish())
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.problems_omitted == 0
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}: {}", self.kind, self.detail)
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProblemKind::Malformed => "malformed",
            ProblemKind::Edited => "edited",
            ProblemKind::Removed => "removed",
            ProblemKind::Reordered => "reordered",
            ProblemKind::Truncated => "truncated",
            ProblemKind::CheckpointMismatch => "checkpoint mismatch",
        })
    }
}

/// The judge: fed one line at a time, in file order.
struct Chain<'c> {
    problems: Vec<Problem>,
    omitted: u64,
    records: u64,
    lines: u64,
    head: Option<(u64, String)>,
    /// The most recent records, the last one read at the back.
    window: VecDeque<Seen>,
    /// The highest seq read so far; every seq below it was either read or
    /// is in `gaps`.
    max_seq: u64,
    /// Seqs skipped over and not read since, ascending and disjoint.
    gaps: Vec<Gap>,
    /// Malformed lines since the last record (indices into `problems`): a
    /// gap they could account for is theirs, not a removal.
    malformed_since: Vec<usize>,
    malformed_count: u64,
    checkpoints: Vec<CheckpointCheck<'c>>,
    /// Checkpoint indices by seq.
    by_seq: BTreeMap<u64, Vec<usize>>,
}

struct Seen {
    /// Where the chain puts it: its seq field, unless that was found changed.
    seq: u64,
    field_seq: u64,
    line: u64,
    line_hash: String,
    /// A problem naming this record was reported: a `prev` that does not
    /// match it is a consequence, not a second problem.
    reported: bool,
}

#[derive(Clone)]
struct Gap {
    lo: u64,
    hi: u64,
    /// The record read before the jump (seq, line), and the one after.
    before: Option<(u64, u64)>,
    after: (u64, u64),
}

struct CheckpointCheck<'c> {
    checkpoint: &'c Checkpoint,
    matched: bool,
    /// The first record at its seq with another hash: line and hash.
    mismatch: Option<(u64, String)>,
}

impl<'c> Chain<'c> {
    fn new(checkpoints: &'c [Checkpoint]) -> Chain<'c> {
        let mut by_seq: BTreeMap<u64, Vec<usize>> = BTreeMap::new();
        for (i, cp) in checkpoints.iter().enumerate() {
            by_seq.entry(cp.seq).or_default().push(i);
        }
        Chain {
            problems: Vec::new(),
            omitted: 0,
            records: 0,
            lines: 0,
            head: None,
            window: VecDeque::with_capacity(WINDOW + 1),
            max_seq: 0,
            gaps: Vec::new(),
            malformed_since: Vec::new(),
            malformed_count: 0,
            checkpoints: checkpoints
                .iter()
                .map(|checkpoint| CheckpointCheck {
                    checkpoint,
                    matched: false,
                    mismatch: None,
                })
                .collect(),
            by_seq,
        }
    }

    fn malformed(&mut self, line: u64, detail: String) {
        self.lines = line;
        self.malformed_count += 1;
        if let Some(i) = self.push(line, None, ProblemKind::Malformed, detail) {
            self.malformed_since.push(i);
        }
    }

    fn record(&mut self, line: u64, rec: Record, line_hash: String, content_ok: bool) {
        self.records += 1;
        self.lines = line;
        let malformed = std::mem::take(&mut self.malformed_since);
        let malformed_count = std::mem::take(&mut self.malformed_count);
        // (seq, field seq, line, line hash) of the record read before.
        let last = self
            .window
            .back()
            .map(|s| (s.seq, s.field_seq, s.line, s.line_hash.clone()));
        let mut reported = false;
        if !content_ok {
            self.push(
                line,
                Some(rec.seq),
                ProblemKind::Edited,
                format!(
                    "record seq {} does not match its hash: it was changed after it was written",
                    rec.seq
                ),
            );
            reported = true;
        }

        // `prev` is stronger evidence than the seq field: a record whose
        // prev is the line before it, but whose seq does not follow, had
        // its seq changed. The chain goes on with the seq it should have.
        let (expected, links_to_last) = match &last {
            None => (1, rec.prev == GENESIS),
            Some(l) => (l.0.saturating_add(1), rec.prev == l.3),
        };
        let mut seq = rec.seq;
        if links_to_last && seq != expected {
            // Unless the writer itself continued from a changed seq.
            let writer_followed = last
                .as_ref()
                .is_some_and(|l| l.1.checked_add(1) == Some(rec.seq));
            if !writer_followed && !reported {
                let place = match &last {
                    Some(l) => format!("right after seq {} (line {})", l.0, l.2),
                    None => "at the start of the log".to_owned(),
                };
                self.push(
                    line,
                    Some(rec.seq),
                    ProblemKind::Edited,
                    format!(
                        "the record says seq {}, but its prev puts it {place}: its seq was changed (it is seq {expected})",
                        rec.seq
                    ),
                );
                reported = true;
            }
            seq = expected;
        }

        if seq.saturating_sub(self.max_seq) > 1 {
            let (lo, hi) = (self.max_seq + 1, seq - 1);
            let missing = hi - lo + 1;
            if malformed_count > 0 && missing <= malformed_count {
                // The lines between that are not records are most likely
                // these records, damaged: one problem each, not two.
                let exact = missing == malformed_count;
                for (n, i) in malformed.iter().enumerate() {
                    if let Some(p) = self.problems.get_mut(*i) {
                        if exact {
                            let s = lo + n as u64;
                            p.seq = Some(s);
                            p.detail.push_str(&format!(" (seq {s} belongs here)"));
                        } else {
                            p.detail
                                .push_str(&format!(" (seqs {lo}..={hi} belong among these lines)"));
                        }
                    }
                }
            } else {
                self.gaps.push(Gap {
                    lo,
                    hi,
                    before: last.as_ref().map(|l| (l.0, l.2)),
                    after: (seq, line),
                });
            }
        } else if seq <= self.max_seq {
            if self.fill(seq) {
                // It was skipped over earlier. Reported once, where the seq
                // steps back; records that then follow in order are fine.
                if let Some(l) = last.as_ref().filter(|l| seq < l.0) {
                    self.push(
                        line,
                        Some(seq),
                        ProblemKind::Reordered,
                        format!(
                            "seq {seq} (line {line}) comes after seq {} (line {}): records are out of order",
                            l.0, l.2
                        ),
                    );
                }
            } else {
                let first = self.window.iter().find(|s| s.seq == seq);
                let detail = match first {
                    Some(f) if f.line_hash == line_hash => {
                        format!("seq {seq} appears again: a copy of line {}", f.line)
                    }
                    Some(f) => format!("seq {seq} appears again (first at line {})", f.line),
                    None => format!("seq {seq} appears again, after seq {}", self.max_seq),
                };
                self.push(line, Some(seq), ProblemKind::Reordered, detail);
                reported = true;
            }
        }

        self.check_prev(seq, &rec.prev, line, reported);
        self.check_checkpoints(seq, &rec.hash, line);
        self.max_seq = self.max_seq.max(seq);
        self.head = Some((rec.seq, rec.hash));
        self.window.push_back(Seen {
            seq,
            field_seq: rec.seq,
            line,
            line_hash,
            reported,
        });
        if self.window.len() > WINDOW {
            self.window.pop_front();
        }
    }

    /// Compares `prev` with the line of the record the chain expects
    /// before this one (seq - 1), wherever it was read. Nothing to compare
    /// when that record is missing or too far back.
    fn check_prev(&mut self, seq: u64, prev: &str, line: u64, reported: bool) {
        if seq == 1 {
            if prev != GENESIS && !reported {
                self.push(
                    line,
                    Some(1),
                    ProblemKind::Edited,
                    "record seq 1's prev is not 64 zeros: it was changed".to_owned(),
                );
            }
            return;
        }
        let want = seq - 1;
        let mut found = false;
        let mut blame = None;
        // Newest first: the record just before is the usual match.
        for (i, s) in self.window.iter().enumerate().rev() {
            if s.seq != want {
                continue;
            }
            if s.line_hash == prev {
                return;
            }
            found = true;
            if blame.is_none() && !s.reported {
                blame = Some(i);
            }
        }
        if !found {
            return;
        }
        let Some(s) = blame.and_then(|i| self.window.get_mut(i)) else {
            return;
        };
        s.reported = true;
        let (at, changed) = (s.line, s.seq);
        self.push(
            at,
            Some(changed),
            ProblemKind::Edited,
            format!(
                "record seq {changed} was changed after seq {seq} (line {line}) was written: seq {seq}'s prev does not match it"
            ),
        );
    }

    fn check_checkpoints(&mut self, seq: u64, hash: &str, line: u64) {
        let Some(indices) = self.by_seq.get(&seq) else {
            return;
        };
        for i in indices {
            let Some(c) = self.checkpoints.get_mut(*i) else {
                continue;
            };
            if c.checkpoint.hash == hash {
                c.matched = true;
            } else if c.mismatch.is_none() {
                c.mismatch = Some((line, hash.to_owned()));
            }
        }
    }

    /// Takes `seq` out of the gaps; false if it was not in one (read
    /// before).
    fn fill(&mut self, seq: u64) -> bool {
        let i = self.gaps.partition_point(|g| g.hi < seq);
        let Some(g) = self.gaps.get_mut(i).filter(|g| g.lo <= seq) else {
            return false;
        };
        if g.lo == g.hi {
            self.gaps.remove(i);
        } else if seq == g.lo {
            g.lo += 1;
        } else if seq == g.hi {
            g.hi -= 1;
        } else {
            let mut upper = g.clone();
            upper.lo = seq + 1;
            g.hi = seq - 1;
            self.gaps.insert(i + 1, upper);
        }
        true
    }

    fn finish(mut self) -> VerifyReport {
        for g in std::mem::take(&mut self.gaps) {
            let what = if g.lo == g.hi {
                format!("seq {} is missing", g.lo)
            } else {
                format!("seqs {}..={} are missing", g.lo, g.hi)
            };
            let place = match g.before {
                Some((s, l)) => format!(
                    "seq {s} (line {l}) is followed by seq {} (line {})",
                    g.after.0, g.after.1
                ),
                None => format!("the log starts at seq {} (line {})", g.after.0, g.after.1),
            };
            self.push(
                g.after.1,
                Some(g.lo),
                ProblemKind::Removed,
                format!("{what}: {place}"),
            );
        }

        let mut cut: Option<&Checkpoint> = None;
        let mut mismatches = Vec::new();
        for c in &self.checkpoints {
            if c.matched {
                continue;
            }
            let cp = c.checkpoint;
            if let Some((line, hash)) = &c.mismatch {
                mismatches.push((
                    *line,
                    cp.seq,
                    format!(
                        "record seq {} has hash {hash}, but the checkpoint taken at {} (key {}) says {}: the log was rewritten at or before seq {}",
                        cp.seq, cp.at, cp.key_id, cp.hash, cp.seq
                    ),
                ));
            } else if cp.seq > self.max_seq && cut.is_none_or(|c| cp.seq > c.seq) {
                cut = Some(cp);
            }
            // Otherwise no record has its seq, and a removal or a malformed
            // line was reported there.
        }
        for (line, seq, detail) in mismatches {
            self.push(line, Some(seq), ProblemKind::CheckpointMismatch, detail);
        }
        if let Some(cp) = cut {
            let ends = if self.max_seq == 0 {
                "the log holds no record".to_owned()
            } else {
                format!("the log ends at seq {}", self.max_seq)
            };
            let detail = format!(
                "{ends}, but the checkpoint taken at {} (key {}) covers seq {}: seqs {}..={} were cut from its end",
                cp.at,
                cp.key_id,
                cp.seq,
                self.max_seq + 1,
                cp.seq
            );
            self.push(
                self.lines,
                Some(self.max_seq + 1),
                ProblemKind::Truncated,
                detail,
            );
        }

        self.problems.sort_by_key(|p| p.line);
        VerifyReport {
            records: self.records,
            lines: self.lines,
            head: self.head,
            problems: self.problems,
            problems_omitted: self.omitted,
        }
    }

    fn push(
        &mut self,
        line: u64,
        seq: Option<u64>,
        kind: ProblemKind,
        detail: String,
    ) -> Option<usize> {
        if self.problems.len() >= MAX_PROBLEMS {
            self.omitted += 1;
            return None;
        }
        self.problems.push(Problem {
            line,
            seq,
            kind,
            detail,
        });
        Some(self.problems.len() - 1)
    }
}

#[cfg(test)]
mod tests;
