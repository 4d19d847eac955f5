//! Tensor bytes (little-endian, in the segments they arrived in) to `f64`.

use nusa_tensor::{DataType, Tensor};

/// Appends the tensor's first `max` elements to `out` (cleared first) as
/// `f64`: integers by value, BOOL as 0 or 1, FP16 through `half`. An
/// element split across two segments is joined. Returns `false`, leaving
/// `out` empty, for BYTES, which has no numeric reading.
///
/// Trailing bytes that do not make a whole element are ignored (the API
/// checked sizes before the request got here; nothing here trusts that).
pub fn decode_prefix(t: &Tensor, max: usize, out: &mut Vec<f64>) -> bool {
    out.clear();
    let dt = t.datatype;
    let Some(size) = dt.element_size() else {
        return false;
    };
    let mut carry = [0u8; 8];
    let mut have = 0usize;
    for seg in t.data.segments() {
        if out.len() >= max {
            break;
        }
        let mut s: &[u8] = seg;
        if have > 0 {
            let take = (size - have).min(s.len());
            carry[have..have + take].copy_from_slice(&s[..take]);
            have += take;
            s = &s[take..];
            if have < size {
                continue;
            }
            out.push(value(dt, &carry[..size]));
        }
        let chunks = s.chunks_exact(size);
        let rest = chunks.remainder();
        for chunk in chunks {
            if out.len() >= max {
                return true;
            }
            out.push(value(dt, chunk));
        }
        carry[..rest.len()].copy_from_slice(rest);
        have = rest.len();
    }
    true
}

/// `b` is exactly one element of `dt` (the caller's chunking guarantees it).
fn value(dt: DataType, b: &[u8]) -> f64 {
    fn arr<const N: usize>(b: &[u8]) -> [u8; N] {
        let mut a = [0u8; N];
        a.copy_from_slice(&b[..N]);
        a
    }
    match dt {
        DataType::Bool => f64::from(u8::from(b[0] != 0)),
        DataType::Uint8 => f64::from(b[0]),
        DataType::Int8 => f64::from(i8::from_le_bytes(arr(b))),
        DataType::Uint16 => f64::from(u16::from_le_bytes(arr(b))),
        DataType::Int16 => f64::from(i16::from_le_bytes(arr(b))),
        DataType::Uint32 => f64::from(u32::from_le_bytes(arr(b))),
        DataType::Int32 => f64::from(i32::from_le_bytes(arr(b))),
        // Beyond 2^53 the nearest f64; a histogram needs no more.
        DataType::Uint64 => u64::from_le_bytes(arr(b)) as f64,
        DataType::Int64 => i64::from_le_bytes(arr(b)) as f64,
        DataType::Fp16 => half::f16::from_le_bytes(arr(b)).to_f64(),
        DataType::Fp32 => f64::from(f32::from_le_bytes(arr(b))),
        DataType::Fp64 => f64::from_le_bytes(arr(b)),
        DataType::Bytes => f64::NAN,
    }
}

/// The float datatypes, whose 2-D outputs are read as class scores.
pub fn is_float(dt: DataType) -> bool {
    matches!(dt, DataType::Fp16 | DataType::Fp32 | DataType::Fp64)
}

/// The index of the largest score (the first of equals); `None` when the
/// row is empty or all NaN.
pub fn argmax(row: &[f64]) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, &v) in row.iter().enumerate() {
        if v.is_nan() {
            continue;
        }
        match best {
            Some((_, b)) if v <= b => {}
            _ => best = Some((i, v)),
        }
    }
    best.map(|(i, _)| i)
}
