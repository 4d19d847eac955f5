//! Tensors as they travel between the protocol and the engines.
//!
//! A [`Tensor`]'s bytes are kept as the segments they arrived in (slices of the
//! request body's frames, never copied on the way in) so that the batcher can
//! gather them straight into the engine's input buffer: the one copy between the
//! socket and the engine.

use std::fmt;

use bytes::Bytes;

/// The datatypes of the Open Inference Protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's spelling, e.g. `FP32`.
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn parse(s: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// Bytes per element; `None` for BYTES, whose elements vary in length.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Number of elements in a shape; `None` on a negative dimension or overflow.
pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| {
        let d = usize::try_from(d).ok()?;
        acc.checked_mul(d)
    })
}

/// Raw tensor bytes: little-endian elements in row-major order, or for BYTES
/// the protocol's framing (a 4-byte little-endian length before each element).
///
/// Kept as a list of segments so that bytes split over several body frames are
/// not joined until they reach the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TensorData {
    segments: Vec<Bytes>,
}

impl TensorData {
    pub fn new(segments: Vec<Bytes>) -> TensorData {
        TensorData {
            segments: segments.into_iter().filter(|s| !s.is_empty()).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.segments.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    pub fn segments(&self) -> &[Bytes] {
        &self.segments
    }

    /// Copies the bytes into `out`, which must be exactly `self.len()` long.
    pub fn copy_to(&self, out: &mut [u8]) {
        let mut at = 0;
        for s in &self.segments {
            out[at..at + s.len()].copy_from_slice(s);
            at += s.len();
        }
    }

    /// One contiguous buffer; free when there is one segment.
    pub fn contiguous(&self) -> Bytes {
        match self.segments.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            _ => {
                let mut v = vec![0u8; self.len()];
                self.copy_to(&mut v);
                Bytes::from(v)
            }
        }
    }
}

impl From<Bytes> for TensorData {
    fn from(b: Bytes) -> TensorData {
        TensorData::new(vec![b])
    }
}

impl From<Vec<u8>> for TensorData {
    fn from(v: Vec<u8>) -> TensorData {
        TensorData::from(Bytes::from(v))
    }
}

/// A named tensor with its datatype, shape and bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    /// Checks that the bytes agree with datatype and shape.
    pub fn validate(&self) -> Result<(), TensorError> {
        let count = element_count(&self.shape).ok_or_else(|| TensorError::BadShape {
            name: self.name.clone(),
            shape: self.shape.clone(),
        })?;
        match self.datatype.element_size() {
            Some(size) => {
                let want = count
                    .checked_mul(size)
                    .ok_or_else(|| TensorError::BadShape {
                        name: self.name.clone(),
                        shape: self.shape.clone(),
                    })?;
                if self.data.len() != want {
                    return Err(TensorError::SizeMismatch {
                        name: self.name.clone(),
                        datatype: self.datatype,
                        shape: self.shape.clone(),
                        expected: want,
                        actual: self.data.len(),
                    });
                }
            }
            None => {
                let n = bytes_elements(&self.data.contiguous())
                    .map_err(|detail| TensorError::BadBytes {
                        name: self.name.clone(),
                        detail,
                    })?
                    .len();
                if n != count {
                    return Err(TensorError::BadBytes {
                        name: self.name.clone(),
                        detail: format!(
                            "shape {:?} holds {count} elements but the data has {n}",
                            self.shape
                        ),
                    });
                }
            }
        }
        Ok(())
    }
}

/// Splits BYTES framing (u32 LE length, then the element) into elements.
pub fn bytes_elements(buf: &Bytes) -> Result<Vec<Bytes>, String> {
    let mut out = Vec::new();
    let mut at = 0usize;
    while at < buf.len() {
        let Some(head) = buf.get(at..at + 4) else {
            return Err(format!("truncated element length at byte {at}"));
        };
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        at += 4;
        if buf.len() - at < len {
            return Err(format!(
                "element of {len} bytes at byte {at} runs past the end ({} bytes)",
                buf.len()
            ));
        }
        out.push(buf.slice(at..at + len));
        at += len;
    }
    Ok(out)
}

/// Frames elements in the BYTES encoding.
pub fn encode_bytes_elements<'a>(elements: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for e in elements {
        out.extend_from_slice(&(e.len() as u32).to_le_bytes());
        out.extend_from_slice(e);
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TensorError {
    #[error("tensor '{name}': shape {shape:?} is not a valid shape")]
    BadShape { name: String, shape: Vec<i64> },
    #[error("tensor '{name}': {datatype} shape {shape:?} needs {expected} bytes, got {actual}")]
    SizeMismatch {
        name: String,
        datatype: DataType,
        shape: Vec<i64>,
        expected: usize,
        actual: usize,
    },
    #[error("tensor '{name}': bad BYTES data: {detail}")]
    BadBytes { name: String, detail: String },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
        }
        assert_eq!(DataType::parse("FLOAT"), None);
    }

    #[test]
    fn segments_gather_in_order() {
        let d = TensorData::new(vec![
            Bytes::from_static(b"ab"),
            Bytes::new(),
            Bytes::from_static(b"cde"),
        ]);
        assert_eq!(d.len(), 5);
        assert_eq!(d.segments().len(), 2);
        assert_eq!(&d.contiguous()[..], b"abcde");
    }

    #[test]
    fn validate_checks_size() {
        let t = Tensor {
            name: "x".into(),
            datatype: DataType::Fp32,
            shape: vec![2, 2],
            data: vec![0u8; 12].into(),
        };
        assert!(matches!(
            t.validate(),
            Err(TensorError::SizeMismatch {
                expected: 16,
                actual: 12,
                ..
            })
        ));
        let t = Tensor {
            shape: vec![-1, 2],
            ..t
        };
        assert!(matches!(t.validate(), Err(TensorError::BadShape { .. })));
    }

    #[test]
    fn bytes_framing() {
        let enc = encode_bytes_elements([&b"hi"[..], &b""[..], &b"there"[..]]);
        let els = bytes_elements(&Bytes::from(enc.clone())).unwrap();
        assert_eq!(
            els,
            vec![
                Bytes::from_static(b"hi"),
                Bytes::new(),
                Bytes::from_static(b"there")
            ]
        );
        assert!(bytes_elements(&Bytes::from(enc[..enc.len() - 1].to_vec())).is_err());
        let t = Tensor {
            name: "s".into(),
            datatype: DataType::Bytes,
            shape: vec![2],
            data: enc.into(),
        };
        assert!(t.validate().is_err());
    }
}
