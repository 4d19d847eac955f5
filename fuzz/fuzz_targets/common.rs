//! Shared by the protocol targets: turns the fuzzer's bytes into an
//! `Inference-Header-Content-Length` value and a body split into frames at
//! points the fuzzer chooses (the ingress hands the decoders the frames a
//! body arrived in, of any sizes).
//!
//! Layout: `u16 LE` header length, a flags byte, then `flags & 7` split
//! points (`u16 LE` each, taken modulo the body's length), then the body.
//! A header length of `0xFF00 | n` takes the header value as the body's
//! first `n` bytes instead (any string, to reach the value's parser).

use bytes::Bytes;
use nusa_proto::Frames;

pub struct Input {
    pub header: String,
    pub flags: u8,
    pub body: Frames,
}

pub fn split(data: &[u8]) -> Option<Input> {
    let (&[h0, h1, flags], mut rest) = data.split_first_chunk::<3>()?;
    let mut points = Vec::new();
    for _ in 0..(flags & 7) {
        let (p, r) = rest.split_first_chunk::<2>()?;
        points.push(usize::from(u16::from_le_bytes(*p)));
        rest = r;
    }
    let n = u16::from_le_bytes([h0, h1]);
    let header = if n >= 0xFF00 {
        let take = usize::from(n & 0xFF).min(rest.len());
        let (h, r) = rest.split_at(take);
        rest = r;
        String::from_utf8_lossy(h).into_owned()
    } else {
        n.to_string()
    };
    let body = Bytes::copy_from_slice(rest);
    let mut cuts: Vec<usize> = points
        .into_iter()
        .map(|p| if body.is_empty() { 0 } else { p % body.len() })
        .collect();
    cuts.push(0);
    cuts.push(body.len());
    cuts.sort_unstable();
    let frames = cuts.windows(2).map(|w| body.slice(w[0]..w[1]));
    Some(Input {
        header,
        flags,
        body: Frames::new(frames),
    })
}
