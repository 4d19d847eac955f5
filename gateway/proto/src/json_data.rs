//! JSON `data` of a tensor (flat or nested arrays) parsed straight into the
//! tensor's little-endian bytes, without building a `serde_json::Value`.
//! Shared by the request decoder and the response decoder so that both
//! bound and check `data` the same way.

use std::fmt;

use nusa_tensor::DataType;
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

/// Converts JSON `data` to the tensor's bytes. `what` names the tensor in
/// messages (`input 'x'`); `count` is the element count its shape needs.
pub(crate) fn parse(
    what: &str,
    datatype: DataType,
    count: usize,
    raw: &RawValue,
) -> Result<Vec<u8>, String> {
    let cap = datatype
        .element_size()
        .map_or(0, |s| s.saturating_mul(count));
    let mut sink = Sink {
        datatype,
        out: Vec::with_capacity(cap.min(64 << 20)),
        count: 0,
    };
    let mut de = serde_json::Deserializer::from_str(raw.get());
    DataSeed {
        sink: &mut sink,
        depth: 0,
    }
    .deserialize(&mut de)
    .map_err(|e| format!("{what}: {}", strip_position(&e)))?;
    if sink.count != count {
        return Err(format!(
            "{what}: shape needs {count} elements of {datatype}, 'data' has {}",
            sink.count
        ));
    }
    Ok(sink.out)
}

fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

struct Sink {
    datatype: DataType,
    out: Vec<u8>,
    count: usize,
}

impl Sink {
    fn push_i128(&mut self, v: i128) -> Result<(), String> {
        let d = self.datatype;
        let range = |lo: i128, hi: i128| {
            if v < lo || v > hi {
                Err(format!("{v} is out of range for {d}"))
            } else {
                Ok(())
            }
        };
        match d {
            DataType::Uint8 => range(0, u8::MAX as i128).map(|_| self.out.push(v as u8)),
            DataType::Uint16 => {
                range(0, u16::MAX as i128).map(|_| self.out.extend((v as u16).to_le_bytes()))
            }
            DataType::Uint32 => {
                range(0, u32::MAX as i128).map(|_| self.out.extend((v as u32).to_le_bytes()))
            }
            DataType::Uint64 => {
                range(0, u64::MAX as i128).map(|_| self.out.extend((v as u64).to_le_bytes()))
            }
            DataType::Int8 => {
                range(i8::MIN as i128, i8::MAX as i128).map(|_| self.out.push(v as i8 as u8))
            }
            DataType::Int16 => range(i16::MIN as i128, i16::MAX as i128)
                .map(|_| self.out.extend((v as i16).to_le_bytes())),
            DataType::Int32 => range(i32::MIN as i128, i32::MAX as i128)
                .map(|_| self.out.extend((v as i32).to_le_bytes())),
            DataType::Int64 => range(i64::MIN as i128, i64::MAX as i128)
                .map(|_| self.out.extend((v as i64).to_le_bytes())),
            DataType::Fp16 | DataType::Fp32 | DataType::Fp64 => return self.push_f64(v as f64),
            DataType::Bool => Err(format!("expected true or false for BOOL, got {v}")),
            DataType::Bytes => Err(format!("expected a string for BYTES, got {v}")),
        }?;
        self.count += 1;
        Ok(())
    }

    fn push_f64(&mut self, v: f64) -> Result<(), String> {
        match self.datatype {
            DataType::Fp16 => self.out.extend(half::f16::from_f64(v).to_le_bytes()),
            DataType::Fp32 => self.out.extend((v as f32).to_le_bytes()),
            DataType::Fp64 => self.out.extend(v.to_le_bytes()),
            d => return Err(format!("expected an integer for {d}, got {v}")),
        }
        self.count += 1;
        Ok(())
    }

    fn push_bool(&mut self, v: bool) -> Result<(), String> {
        if self.datatype != DataType::Bool {
            return Err(format!(
                "expected {} elements, got boolean {v}",
                self.datatype
            ));
        }
        self.out.push(v as u8);
        self.count += 1;
        Ok(())
    }

    fn push_str(&mut self, v: &str) -> Result<(), String> {
        if self.datatype != DataType::Bytes {
            return Err(format!(
                "expected {} elements, got string \"{v}\"",
                self.datatype
            ));
        }
        self.out.extend((v.len() as u32).to_le_bytes());
        self.out.extend_from_slice(v.as_bytes());
        self.count += 1;
        Ok(())
    }
}

/// Nesting deeper than this is refused (tensors have far fewer dimensions).
const MAX_DEPTH: usize = 32;

struct DataSeed<'s> {
    sink: &'s mut Sink,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DataSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of tensor elements")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("'data' is nested too deeply"));
        }
        while seq
            .next_element_seed(DataSeed {
                sink: &mut *self.sink,
                depth: self.depth + 1,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.sink.push_i128(v as i128).map_err(E::custom)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.sink.push_i128(v as i128).map_err(E::custom)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.sink.push_f64(v).map_err(E::custom)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.sink.push_bool(v).map_err(E::custom)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.sink.push_str(v).map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Err(E::custom("null is not a tensor element"))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _map: A) -> Result<(), A::Error> {
        Err(de::Error::custom("an object is not a tensor element"))
    }
}
