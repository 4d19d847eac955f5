use std::fmt;

use bytes::Bytes;
use nusa_tensor::{element_count, DataType, Tensor, TensorData};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{Frames, ProtoError};

/// An inference request, decoded and checked against itself (not yet against
/// the model: that is the caller's, which knows the model's metadata).
#[derive(Debug)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// `None`: every output of the model.
    pub outputs: Option<Vec<RequestedOutput>>,
    /// Request-level `binary_data_output`: the default for outputs not named.
    pub binary_data_output: bool,
    /// Triton's `priority` (1 is highest; 0 means the model's default).
    pub priority: u64,
    /// Triton's `timeout` in microseconds (0 or absent: the model's default).
    pub timeout_us: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestedOutput {
    pub name: String,
    pub binary: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow)]
    inputs: Vec<RawInput<'a>>,
    #[serde(default)]
    outputs: Option<Vec<RawOutput>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput {
    name: String,
    #[serde(default)]
    parameters: Option<Map<String, Value>>,
}

/// The model's single input, used when `Inference-Header-Content-Length` is 0
/// (the whole body is that input's raw bytes).
pub struct SoleInput<'a> {
    pub name: &'a str,
    pub datatype: DataType,
    pub shape: &'a [i64],
}

/// Decodes an infer request body.
///
/// `header_length` is the raw `Inference-Header-Content-Length` value if the
/// client sent one. Binary tensor bytes stay slices of `body`'s frames.
pub fn decode_infer_request(
    header_length: Option<&str>,
    mut body: Frames,
    sole_input: Option<SoleInput<'_>>,
) -> Result<InferRequest, ProtoError> {
    let json_len = match header_length {
        None => body.len(),
        Some(v) => v.trim().parse::<usize>().map_err(|_| {
            ProtoError::bad_request(format!(
                "Inference-Header-Content-Length must be a non-negative integer, got '{v}'"
            ))
        })?,
    };
    if json_len > body.len() {
        return Err(ProtoError::bad_request(format!(
            "Inference-Header-Content-Length is {json_len} but the body has only {} bytes",
            body.len()
        )));
    }
    if header_length.is_some() && json_len == 0 {
        return raw_single_input(body, sole_input);
    }
    let json = body.split_contiguous(json_len);
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ProtoError::bad_request(
            "malformed inference request: the body must be a JSON object with 'inputs'",
        ));
    }
    let raw: RawRequest<'_> = serde_json::from_slice(&json)
        .map_err(|e| ProtoError::bad_request(format!("malformed inference request JSON: {e}")))?;

    let params = raw.parameters.unwrap_or_default();
    let binary_data_output = bool_param(&params, "binary_data_output", "request")?.unwrap_or(false);
    let priority = u64_param(&params, "priority", "request")?.unwrap_or(0);
    let timeout_us = u64_param(&params, "timeout", "request")?.unwrap_or(0);

    if raw.inputs.is_empty() {
        return Err(ProtoError::bad_request("the request has no inputs"));
    }
    let mut inputs = Vec::with_capacity(raw.inputs.len());
    for input in raw.inputs {
        let name = input.name;
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            ProtoError::bad_request(format!(
                "input '{name}': unknown datatype '{}'",
                input.datatype
            ))
        })?;
        let count = element_count(&input.shape).ok_or_else(|| {
            ProtoError::bad_request(format!(
                "input '{name}': shape {:?} has a negative or too large dimension",
                input.shape
            ))
        })?;
        if inputs.iter().any(|t: &Tensor| t.name == name) {
            return Err(ProtoError::bad_request(format!(
                "input '{name}' appears twice"
            )));
        }
        let iparams = input.parameters.unwrap_or_default();
        let binary_size = u64_param(&iparams, "binary_data_size", &format!("input '{name}'"))?;
        let data = match (binary_size, input.data) {
            (Some(_), Some(_)) => {
                return Err(ProtoError::bad_request(format!(
                    "input '{name}' has both 'data' and 'binary_data_size'"
                )))
            }
            (None, None) => {
                return Err(ProtoError::bad_request(format!(
                    "input '{name}' has neither 'data' nor 'binary_data_size'"
                )))
            }
            (Some(size), None) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > body.len() {
                    return Err(ProtoError::bad_request(format!(
                        "input '{name}': binary_data_size is {size} but only {} bytes of binary data remain (truncated body?)",
                        body.len()
                    )));
                }
                TensorData::new(body.split_to(size))
            }
            (None, Some(raw_data)) => {
                TensorData::from(json_data(&name, datatype, count, raw_data)?)
            }
        };
        let tensor = Tensor {
            name,
            datatype,
            shape: input.shape,
            data,
        };
        tensor
            .validate()
            .map_err(|e| ProtoError::bad_request(format!("input {e}")))?;
        inputs.push(tensor);
    }
    if !body.is_empty() {
        return Err(ProtoError::bad_request(format!(
            "{} bytes of binary data follow the inputs that no input's binary_data_size accounts for",
            body.len()
        )));
    }

    let outputs = match raw.outputs {
        None => None,
        Some(list) => {
            let mut out = Vec::with_capacity(list.len());
            for o in list {
                let oparams = o.parameters.unwrap_or_default();
                let what = format!("output '{}'", o.name);
                if oparams.contains_key("classification") {
                    return Err(ProtoError::bad_request(format!(
                        "{what}: the classification extension is not supported"
                    )));
                }
                let binary = bool_param(&oparams, "binary_data", &what)?;
                out.push(RequestedOutput {
                    name: o.name,
                    binary,
                });
            }
            Some(out)
        }
    };

    Ok(InferRequest {
        id: raw.id,
        inputs,
        outputs,
        binary_data_output,
        priority,
        timeout_us,
    })
}

fn raw_single_input(body: Frames, sole: Option<SoleInput<'_>>) -> Result<InferRequest, ProtoError> {
    let Some(sole) = sole else {
        return Err(ProtoError::bad_request(
            "Inference-Header-Content-Length 0 (raw binary body) needs a model with exactly one input",
        ));
    };
    let len = body.len();
    let Some(size) = sole.datatype.element_size() else {
        return Err(ProtoError::bad_request(format!(
            "input '{}': raw binary body is not supported for BYTES",
            sole.name
        )));
    };
    // Fixed dimensions come from the model; one variable dimension (the batch)
    // is worked out from the body's length.
    let fixed: usize = sole
        .shape
        .iter()
        .filter(|&&d| d >= 0)
        .map(|&d| d as usize)
        .product();
    let dynamic = sole.shape.iter().filter(|&&d| d < 0).count();
    let row = fixed * size;
    let shape: Vec<i64> = match dynamic {
        0 => sole.shape.to_vec(),
        1 if row > 0 && len % row == 0 => sole
            .shape
            .iter()
            .map(|&d| if d < 0 { (len / row) as i64 } else { d })
            .collect(),
        _ => {
            return Err(ProtoError::bad_request(format!(
                "input '{}': a raw binary body of {len} bytes does not fit shape {:?} of {}",
                sole.name, sole.shape, sole.datatype
            )))
        }
    };
    let tensor = Tensor {
        name: sole.name.to_string(),
        datatype: sole.datatype,
        shape,
        data: TensorData::new(body.split_to_end()),
    };
    tensor
        .validate()
        .map_err(|e| ProtoError::bad_request(format!("input {e}")))?;
    Ok(InferRequest {
        id: None,
        inputs: vec![tensor],
        outputs: None,
        binary_data_output: true,
        priority: 0,
        timeout_us: 0,
    })
}

impl Frames {
    fn split_to_end(mut self) -> Vec<Bytes> {
        let n = self.len();
        self.split_to(n)
    }
}

fn bool_param(
    params: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<bool>, ProtoError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(ProtoError::bad_request(format!(
            "{what}: parameter '{key}' must be a boolean, got {other}"
        ))),
    }
}

fn u64_param(
    params: &Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<Option<u64>, ProtoError> {
    match params.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(ProtoError::bad_request(format!(
            "{what}: parameter '{key}' must be a non-negative integer, got {other}"
        ))),
    }
}

/// Converts JSON `data` (flat or nested) to the tensor's bytes.
fn json_data(
    name: &str,
    datatype: DataType,
    count: usize,
    raw: &RawValue,
) -> Result<Vec<u8>, ProtoError> {
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
    .map_err(|e| ProtoError::bad_request(format!("input '{name}': {}", strip_position(&e))))?;
    if sink.count != count {
        return Err(ProtoError::bad_request(format!(
            "input '{name}': shape needs {count} elements of {datatype}, 'data' has {}",
            sink.count
        )));
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

#[cfg(test)]
mod tests;
