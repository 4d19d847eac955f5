//! Tracing's decisions, with no clock and no I/O (the crate's `clippy.toml`
//! bans both): the W3C trace context an incoming request carries, the head
//! decision (parent, else ratio by trace id), the tail decision at the end
//! of a request (slow or failed traces are kept whatever the head said),
//! the bounded buffer of spans waiting for that decision, and the
//! `Server-Timing` header.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

/// A `traceparent` (W3C Trace Context, section 3.2) in its version 00
/// fields. Parse, don't validate: a value of this type is a valid one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub flags: u8,
}

impl TraceParent {
    /// The header's value, or `None` for anything the recommendation calls
    /// invalid: bad hex (upper case included), an all-zero trace or parent
    /// id, version `ff`, version 00 with extra fields. A later version's
    /// known fields are read as version 00, as the recommendation asks.
    pub fn parse(v: &str) -> Option<TraceParent> {
        let v = v.trim();
        let hex = |s: &str, len: usize| {
            s.len() == len && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        let (version, rest) = v.split_at_checked(2)?;
        if !hex(version, 2) || version == "ff" {
            return None;
        }
        // version-trace_id-parent_id-flags: 2 + 1 + 32 + 1 + 16 + 1 + 2.
        const LEN: usize = 55;
        let known = match version {
            "00" if v.len() == LEN => v,
            "00" => return None,
            _ if v.len() == LEN || v.as_bytes().get(LEN) == Some(&b'-') => v.get(..LEN)?,
            _ => return None,
        };
        let mut fields = known.split('-');
        let (_, trace, parent, flags) = (
            fields.next()?,
            fields.next()?,
            fields.next()?,
            fields.next()?,
        );
        if !(rest.starts_with('-')
            && hex(trace, 32)
            && hex(parent, 16)
            && hex(flags, 2)
            && fields.next().is_none())
        {
            return None;
        }
        let tp = TraceParent {
            trace_id: u128::from_str_radix(trace, 16).ok()?,
            parent_id: u64::from_str_radix(parent, 16).ok()?,
            flags: u8::from_str_radix(flags, 16).ok()?,
        };
        (tp.trace_id != 0 && tp.parent_id != 0).then_some(tp)
    }

    /// The caller recorded its part of the trace (flag `01`).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// As sent on: version 00, lower-case hex.
impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id, self.parent_id, self.flags
        )
    }
}

/// The W3C trace context of a call: its `traceparent`, and its
/// `tracestate` when that was valid too.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext {
    pub parent: TraceParent,
    pub state: Option<String>,
}

/// Longest `tracestate` kept; the recommendation lets a vendor cut
/// longer ones, and a cut list is easier to get wrong than a dropped one.
pub const MAX_TRACESTATE: usize = 512;
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The `tracestate` list (W3C Trace Context, section 3.3) of one or more
/// header values, joined as one list, when every member is valid and no
/// key repeats; `None` otherwise: a broken list is dropped whole, never
/// passed on or echoed.
pub fn tracestate<'a>(values: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let mut members: Vec<&str> = Vec::new();
    let mut len = 0;
    for value in values {
        len += value.len() + 1;
        if len > MAX_TRACESTATE + 1 {
            return None;
        }
        for m in value.split(',') {
            let m = m.trim_matches([' ', '\t']);
            if m.is_empty() {
                continue;
            }
            let (key, val) = m.split_once('=')?;
            if !valid_key(key) || !valid_value(val) {
                return None;
            }
            if members
                .iter()
                .any(|k| k.split_once('=').map(|p| p.0) == Some(key))
            {
                return None;
            }
            members.push(m);
        }
    }
    if members.is_empty() || members.len() > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    Some(members.join(","))
}

fn valid_key(key: &str) -> bool {
    let rest_ok = |s: &str| {
        s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'*' | b'/'))
    };
    match key.split_once('@') {
        None => {
            key.len() <= 256
                && key.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
                && rest_ok(key)
        }
        Some((tenant, system)) => {
            (1..=241).contains(&tenant.len())
                && tenant
                    .as_bytes()
                    .first()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && rest_ok(tenant)
                && (1..=14).contains(&system.len())
                && system
                    .as_bytes()
                    .first()
                    .is_some_and(u8::is_ascii_lowercase)
                && rest_ok(system)
        }
    }
}

fn valid_value(v: &str) -> bool {
    // 0-255 printable characters but ',' and '=', the last not a space.
    v.len() <= 256
        && v.bytes()
            .all(|b| matches!(b, 0x20..=0x7e) && b != b',' && b != b'=')
        && v.bytes().last().is_some_and(|b| b != b' ')
}

/// Where a span's trace comes from, for the head decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parent {
    /// A new trace, started here.
    Root,
    /// The caller's (`traceparent`), with its sampled flag.
    Remote { sampled: bool },
    /// A span of this process, with the decision made for its trace.
    Local { sampled: bool },
}

/// The head decision: a trace started here is sampled by its id (so every
/// process that sees the id decides the same), one continued from a caller
/// or a parent span keeps their decision (parent-based sampling).
pub fn head(parent: Parent, trace_id: u128, ratio: f64) -> bool {
    match parent {
        Parent::Root => by_ratio(trace_id, ratio),
        Parent::Remote { sampled } | Parent::Local { sampled } => sampled,
    }
}

/// OpenTelemetry's `TraceIdRatioBased`: the low 64 bits of the id, less
/// their lowest, against `ratio` of 2^63. Other SDKs decide the same for
/// the same id and ratio.
pub fn by_ratio(trace_id: u128, ratio: f64) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    if ratio.is_nan() || ratio <= 0.0 {
        return false;
    }
    let bound = (ratio * (1u64 << 63) as f64) as u64;
    ((trace_id as u64) >> 1) < bound
}

/// How a request ended, as its root span says.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    pub duration: Duration,
    /// The model's objective (`slo_ms`), when the request named a model
    /// that has one.
    pub slo: Option<Duration>,
    /// The HTTP status answered.
    pub status: Option<u16>,
}

/// What becomes of a finished trace, and why.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Answered 5xx: kept whatever the head said.
    Failed,
    /// Slower than the model's objective: kept whatever the head said.
    Slow,
    /// Sampled at the head (ratio, or the caller's flag).
    Sampled,
    Dropped,
}

impl Verdict {
    pub fn keep(self) -> bool {
        self != Verdict::Dropped
    }

    pub fn label(self) -> &'static str {
        match self {
            Verdict::Failed => "failed",
            Verdict::Slow => "slow",
            Verdict::Sampled => "sampled",
            Verdict::Dropped => "dropped",
        }
    }
}

/// The tail decision, at the end of a request's root span.
pub fn verdict(head_sampled: bool, outcome: &Outcome) -> Verdict {
    if outcome.status.is_some_and(|s| s >= 500) {
        Verdict::Failed
    } else if outcome.slo.is_some_and(|slo| outcome.duration > slo) {
        Verdict::Slow
    } else if head_sampled {
        Verdict::Sampled
    } else {
        Verdict::Dropped
    }
}

/// Finished spans of traces whose root has not ended, keyed by trace id,
/// at most `cap` spans in all. Room is made by dropping the oldest trace
/// whole (a trace missing some of its spans misleads more than a missing
/// trace); the caller counts what was dropped.
pub struct Pending<T> {
    traces: HashMap<u128, (u64, Vec<T>)>,
    /// Trace ids by the order of their first span, for eviction.
    order: BTreeMap<u64, u128>,
    next: u64,
    spans: usize,
    cap: usize,
}

impl<T> Pending<T> {
    pub fn new(cap: usize) -> Pending<T> {
        Pending {
            traces: HashMap::new(),
            order: BTreeMap::new(),
            next: 0,
            spans: 0,
            cap,
        }
    }

    /// Keeps `span` until its trace's root ends. Returns how many spans
    /// were dropped to stay within the cap (`span` itself when the cap is 0).
    pub fn push(&mut self, trace: u128, span: T) -> usize {
        if self.cap == 0 {
            return 1;
        }
        let mut dropped = 0;
        while self.spans >= self.cap {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, spans)) = self.traces.remove(&oldest) {
                self.spans -= spans.len();
                dropped += spans.len();
            }
        }
        let next = &mut self.next;
        let order = &mut self.order;
        let entry = self.traces.entry(trace).or_insert_with(|| {
            let seq = *next;
            *next += 1;
            order.insert(seq, trace);
            (seq, Vec::new())
        });
        entry.1.push(span);
        self.spans += 1;
        dropped
    }

    /// The spans kept for `trace`, which leave the buffer.
    pub fn take(&mut self, trace: u128) -> Vec<T> {
        match self.traces.remove(&trace) {
            Some((seq, spans)) => {
                self.order.remove(&seq);
                self.spans -= spans.len();
                spans
            }
            None => Vec::new(),
        }
    }

    /// Spans held.
    pub fn len(&self) -> usize {
        self.spans
    }

    pub fn is_empty(&self) -> bool {
        self.spans == 0
    }
}

/// Where a request's time went, for `Server-Timing`: each part that
/// applied to it (a cache hit has no queue, a spilled request no compute
/// here).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phases {
    /// Looking the answer up in the edge cache (for a request that waited
    /// on an identical one, the wait).
    pub cache: Option<Duration>,
    /// Waiting in the model's queue for a batch.
    pub queue: Option<Duration>,
    /// The engine's run of the batch the request was in.
    pub compute: Option<Duration>,
    /// Calls to regions, every try.
    pub region: Option<Duration>,
}

impl Phases {
    /// Adds a region try's time.
    pub fn add_region(&mut self, took: Duration) {
        self.region = Some(self.region.unwrap_or_default() + took);
    }
}

/// The `Server-Timing` value (W3C Server Timing): the parts that applied,
/// then `total`, durations in milliseconds.
pub fn server_timing(phases: &Phases, total: Duration) -> String {
    let mut out = String::with_capacity(96);
    let parts = [
        ("cache", phases.cache),
        ("queue", phases.queue),
        ("compute", phases.compute),
        ("region", phases.region),
        ("total", Some(total)),
    ];
    for (name, took) in parts {
        if let Some(d) = took {
            if !out.is_empty() {
                out.push_str(", ");
            }
            // Writing into a String cannot fail.
            let _ = fmt::Write::write_fmt(
                &mut out,
                format_args!("{name};dur={:.3}", d.as_secs_f64() * 1e3),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
