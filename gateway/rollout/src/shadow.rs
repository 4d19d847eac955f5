//! Shadow comparison: the candidate's outputs against the stable ones for
//! the same request, with numpy `allclose` semantics and, for classifier
//! scores, argmax agreement.
//!
//! Numeric elements are read straight from the tensors' segments (no
//! join); an element split over two segments is gathered into a small
//! buffer. BYTES outputs are joined first: their framing crosses segments.

use std::fmt;

use bytes::Bytes;
use nusa_tensor::{bytes_elements, element_count, DataType, Tensor};
use serde::Serialize;

/// One shadow comparison's result.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShadowResult {
    /// Every output within tolerance and every argmax equal.
    pub agree: bool,
    /// Largest `|candidate - stable|` over all numeric elements; infinite
    /// where a NaN or an infinity met a different value.
    pub max_abs: f64,
    /// Largest `|candidate - stable| / max(|stable|, tiny)`.
    pub max_rel: f64,
    /// Whether argmax along the last dimension agreed in every row of every
    /// float output whose last dimension is > 1; `None` when none is.
    pub argmax_agree: Option<bool>,
    /// What differed, output by output; `None` when they agree.
    pub detail: Option<String>,
}

impl ShadowResult {
    /// A shadow copy the candidate failed to compute: a disagreement (the
    /// driver also records it as a candidate error).
    pub fn candidate_failed(why: impl fmt::Display) -> ShadowResult {
        ShadowResult {
            agree: false,
            max_abs: 0.0,
            max_rel: 0.0,
            argmax_agree: None,
            detail: Some(format!("the candidate failed: {why}")),
        }
    }
}

/// Compares the candidate's outputs with the stable ones, matched by name.
///
/// Per element `|c - s| <= atol + rtol * |s|` (numpy `allclose`; NaN equals
/// only NaN, an infinity only itself). A missing or extra output, or a
/// different datatype or shape, disagrees. BYTES outputs compare byte for
/// byte. With `rtol == 0` the result's `agree` is symmetric.
pub fn compare(stable: &[Tensor], candidate: &[Tensor], atol: f64, rtol: f64) -> ShadowResult {
    let mut acc = Acc {
        within: true,
        max_abs: 0.0,
        max_rel: 0.0,
        argmax: None,
        details: Vec::new(),
    };
    for s in stable {
        match candidate.iter().find(|c| c.name == s.name) {
            Some(c) => compare_one(s, c, atol, rtol, &mut acc),
            None => acc.differ(format!(
                "output '{}' is missing from the candidate's outputs",
                s.name
            )),
        }
    }
    for c in candidate {
        if !stable.iter().any(|s| s.name == c.name) {
            acc.differ(format!(
                "output '{}' is only in the candidate's outputs",
                c.name
            ));
        }
    }
    ShadowResult {
        agree: acc.within && acc.argmax != Some(false),
        max_abs: acc.max_abs,
        max_rel: acc.max_rel,
        argmax_agree: acc.argmax,
        detail: (!acc.details.is_empty()).then(|| acc.details.join("; ")),
    }
}

struct Acc {
    within: bool,
    max_abs: f64,
    max_rel: f64,
    argmax: Option<bool>,
    details: Vec<String>,
}

impl Acc {
    fn differ(&mut self, detail: String) {
        self.within = false;
        self.details.push(detail);
    }

    fn argmax(&mut self, agree: bool) {
        self.argmax = Some(self.argmax.unwrap_or(true) && agree);
    }
}

fn compare_one(s: &Tensor, c: &Tensor, atol: f64, rtol: f64, acc: &mut Acc) {
    let name = &s.name;
    if s.datatype != c.datatype {
        return acc.differ(format!(
            "output '{name}': datatype {} against stable {}",
            c.datatype, s.datatype
        ));
    }
    if s.shape != c.shape {
        return acc.differ(format!(
            "output '{name}': shape {:?} against stable {:?}",
            c.shape, s.shape
        ));
    }
    let Some(count) = element_count(&s.shape) else {
        return acc.differ(format!(
            "output '{name}': {:?} is not a valid shape",
            s.shape
        ));
    };
    match s.datatype.element_size() {
        Some(size) => compare_numeric(s, c, count, size, atol, rtol, acc),
        None => compare_bytes(s, c, count, acc),
    }
}

fn compare_bytes(s: &Tensor, c: &Tensor, count: usize, acc: &mut Acc) {
    let name = &s.name;
    let mut sides = Vec::with_capacity(2);
    for (who, t) in [("stable", s), ("candidate", c)] {
        match bytes_elements(&t.data.contiguous()) {
            Ok(els) if els.len() == count => sides.push(els),
            Ok(els) => {
                return acc.differ(format!(
                    "output '{name}': the {who}'s data holds {} BYTES elements, shape {:?} needs {count}",
                    els.len(),
                    t.shape
                ))
            }
            Err(e) => {
                return acc.differ(format!(
                    "output '{name}': the {who}'s BYTES data is malformed: {e}"
                ))
            }
        }
    }
    let (se, ce) = (&sides[0], &sides[1]);
    let differing = se.iter().zip(ce).filter(|(a, b)| a != b).count();
    if differing > 0 {
        let first = se.iter().zip(ce).position(|(a, b)| a != b).unwrap_or(0);
        acc.differ(format!(
            "output '{name}': {differing} of {count} BYTES elements differ (first at element {first})"
        ));
    }
}

fn compare_numeric(
    s: &Tensor,
    c: &Tensor,
    count: usize,
    size: usize,
    atol: f64,
    rtol: f64,
    acc: &mut Acc,
) {
    let name = &s.name;
    let dt = s.datatype;
    for (who, t) in [("stable", s), ("candidate", c)] {
        let want = count.checked_mul(size);
        if want != Some(t.data.len()) {
            return acc.differ(format!(
                "output '{name}': the {who}'s data has {} bytes, {dt} {:?} needs {}",
                t.data.len(),
                t.shape,
                want.map_or_else(|| "more than fit in memory".into(), |n| n.to_string())
            ));
        }
    }
    let float = matches!(dt, DataType::Fp16 | DataType::Fp32 | DataType::Fp64);
    // A classifier's scores: argmax per row along the last dimension.
    let row_len = match s.shape.last() {
        Some(&d) if float && d > 1 => usize::try_from(d).ok(),
        _ => None,
    };
    let (mut rs, mut rc) = (Reader::new(s), Reader::new(c));
    let (mut bs, mut bc) = ([0u8; 8], [0u8; 8]);
    let mut outside = 0usize;
    let mut worst: Option<(f64, usize)> = None;
    let mut rows = Rows::default();
    for i in 0..count {
        if !rs.read(&mut bs[..size]) || !rc.read(&mut bc[..size]) {
            return acc.differ(format!("output '{name}': data ended before element {i}"));
        }
        let (vs, vc) = (decode(dt, &bs), decode(dt, &bc));
        let (diff, close, abs_s) = match (vs, vc) {
            (Num::Int(a), Num::Int(b)) => {
                let diff = (b - a).unsigned_abs() as f64;
                let abs_s = a.unsigned_abs() as f64;
                (diff, diff <= atol + rtol * abs_s, abs_s)
            }
            (Num::Float(a), Num::Float(b)) => {
                let (diff, close) = float_diff(a, b, atol, rtol);
                (diff, close, a.abs())
            }
            // Same datatype on both sides: never mixed.
            _ => (f64::INFINITY, false, 0.0),
        };
        let rel = if diff == 0.0 {
            0.0
        } else {
            diff / abs_s.max(f64::MIN_POSITIVE)
        };
        acc.max_abs = acc.max_abs.max(diff);
        acc.max_rel = acc.max_rel.max(rel);
        if !close {
            outside += 1;
            if worst.is_none_or(|(d, _)| diff > d) {
                worst = Some((diff, i));
            }
        }
        if let (Some(len), Num::Float(a), Num::Float(b)) = (row_len, vs, vc) {
            rows.push(i % len, len, a, b);
        }
    }
    if let Some((diff, at)) = worst {
        acc.differ(format!(
            "output '{name}': {outside} of {count} elements differ beyond atol {atol} + rtol {rtol} (largest difference {diff} at element {at})"
        ));
    }
    if row_len.is_some() {
        acc.argmax(rows.differing == 0);
        if let Some((row, c_at, s_at)) = rows.first_differing {
            acc.details.push(format!(
                "output '{name}': argmax differs in {} of {} rows (row {row}: {c_at} against stable {s_at})",
                rows.differing, rows.done
            ));
        }
    }
}

/// `(|c - s|, within tolerance)` with NaN equal only to NaN and an
/// infinity only to itself.
fn float_diff(s: f64, c: f64, atol: f64, rtol: f64) -> (f64, bool) {
    if s.is_nan() || c.is_nan() {
        return if s.is_nan() && c.is_nan() {
            (0.0, true)
        } else {
            (f64::INFINITY, false)
        };
    }
    if s.is_infinite() || c.is_infinite() {
        return if s == c {
            (0.0, true)
        } else {
            (f64::INFINITY, false)
        };
    }
    let diff = (c - s).abs();
    (diff, diff <= atol + rtol * s.abs())
}

/// Argmax of both sides, row by row, as the elements stream by.
#[derive(Default)]
struct Rows {
    best: (f64, f64),
    at: (usize, usize),
    done: usize,
    differing: usize,
    /// (row, candidate's argmax, stable's argmax)
    first_differing: Option<(usize, usize, usize)>,
}

impl Rows {
    fn push(&mut self, col: usize, len: usize, s: f64, c: f64) {
        if col == 0 {
            self.best = (s, c);
            self.at = (0, 0);
        } else {
            // numpy: the first NaN is the maximum.
            if !self.best.0.is_nan() && (s.is_nan() || s > self.best.0) {
                self.best.0 = s;
                self.at.0 = col;
            }
            if !self.best.1.is_nan() && (c.is_nan() || c > self.best.1) {
                self.best.1 = c;
                self.at.1 = col;
            }
        }
        if col + 1 == len {
            if self.at.0 != self.at.1 {
                self.differing += 1;
                self.first_differing
                    .get_or_insert((self.done, self.at.1, self.at.0));
            }
            self.done += 1;
        }
    }
}

#[derive(Clone, Copy)]
enum Num {
    Int(i128),
    Float(f64),
}

/// One little-endian element; `b` holds at least the element's size.
fn decode(dt: DataType, b: &[u8; 8]) -> Num {
    let [b0, b1, b2, b3, b4, b5, b6, b7] = *b;
    let (w2, w4) = ([b0, b1], [b0, b1, b2, b3]);
    match dt {
        DataType::Bool => Num::Int(i128::from(b0 != 0)),
        DataType::Uint8 => Num::Int(i128::from(b0)),
        DataType::Uint16 => Num::Int(i128::from(u16::from_le_bytes(w2))),
        DataType::Uint32 => Num::Int(i128::from(u32::from_le_bytes(w4))),
        DataType::Uint64 => Num::Int(i128::from(u64::from_le_bytes(*b))),
        DataType::Int8 => Num::Int(i128::from(i8::from_le_bytes([b0]))),
        DataType::Int16 => Num::Int(i128::from(i16::from_le_bytes(w2))),
        DataType::Int32 => Num::Int(i128::from(i32::from_le_bytes(w4))),
        DataType::Int64 => Num::Int(i128::from(i64::from_le_bytes(*b))),
        DataType::Fp16 => Num::Float(half::f16::from_le_bytes(w2).to_f64()),
        DataType::Fp32 => Num::Float(f64::from(f32::from_le_bytes(w4))),
        DataType::Fp64 => Num::Float(f64::from_le_bytes([b0, b1, b2, b3, b4, b5, b6, b7])),
        // Not numeric; `compare_one` sends BYTES elsewhere.
        DataType::Bytes => Num::Int(0),
    }
}

/// Reads fixed-size elements across a tensor's segments.
struct Reader<'a> {
    segs: &'a [Bytes],
    seg: usize,
    off: usize,
}

impl<'a> Reader<'a> {
    fn new(t: &'a Tensor) -> Reader<'a> {
        Reader {
            segs: t.data.segments(),
            seg: 0,
            off: 0,
        }
    }

    /// Fills `out`; false when the segments run out first.
    fn read(&mut self, out: &mut [u8]) -> bool {
        let mut filled = 0;
        while filled < out.len() {
            let Some(seg) = self.segs.get(self.seg) else {
                return false;
            };
            let rest = seg.get(self.off..).unwrap_or_default();
            let n = rest.len().min(out.len() - filled);
            out[filled..filled + n].copy_from_slice(&rest[..n]);
            filled += n;
            self.off += n;
            if self.off >= seg.len() {
                self.seg += 1;
                self.off = 0;
            }
        }
        true
    }
}

#[cfg(test)]
mod tests;
