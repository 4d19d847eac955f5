//! Helpers for the tests: a log of N records, and editing its lines the way
//! someone with write access to the file would.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::record::{content_hash, line_hash};
use crate::{Actor, AuditLog, Entry, Record};

pub fn entry(n: u64) -> Entry {
    Entry::new(
        Actor::key("mobile-app"),
        "model.load",
        &format!("resnet/{n}"),
    )
    .detail(json!({"n": n, "slot": "b"}))
}

/// A log of `n` records (at = 1000 + seq) in a new folder under `dir`.
pub fn log_with(dir: &Path, n: u64) -> (PathBuf, AuditLog) {
    let path = dir.join("audit").join("audit.log");
    let log = AuditLog::open(&path).unwrap();
    for i in 1..=n {
        log.append(entry(i), 1000 + i).unwrap();
    }
    (path, log)
}

/// The file's lines, without newlines (a last line without one included).
pub fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    text.split_terminator('\n').map(str::to_owned).collect()
}

pub fn write_lines(path: &Path, lines: &[String]) {
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap();
}

/// Changes a member of a line, optionally recomputing its `hash` (an
/// editor who knows the format).
pub fn edit(line: &str, member: &str, to: Value, rehash: bool) -> String {
    let mut v: Value = serde_json::from_str(line).unwrap();
    v[member] = to;
    if rehash {
        v["hash"] = Value::String(content_hash(v.clone()).unwrap());
    }
    let r: Record = serde_json::from_value(v).unwrap();
    String::from_utf8(r.to_line().unwrap()).unwrap()
}

/// Rewrites `prev` and `hash` of every line from `from` (0-based) on, so
/// the chain is whole again: what a careful editor does.
pub fn rechain(lines: &mut [String], from: usize) {
    for i in from..lines.len() {
        let prev = if i == 0 {
            crate::GENESIS.to_owned()
        } else {
            line_hash(lines[i - 1].as_bytes())
        };
        lines[i] = edit(&lines[i], "prev", Value::String(prev), true);
    }
}
