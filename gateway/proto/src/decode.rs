use bytes::Bytes;
use nusa_tensor::{element_count, DataType, Tensor, TensorData};
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
    /// `"residency": "local"`: this request must not leave the device.
    pub local_only: bool,
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
    /// Raw until bounded (see `params`): a tree built from it could cost
    /// many times the body.
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow)]
    inputs: Vec<RawInput<'a>>,
    #[serde(borrow, default)]
    outputs: Option<Vec<RawOutput<'a>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOutput<'a> {
    name: String,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
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
        Some(v) => crate::params::header_length(v).ok_or_else(|| {
            ProtoError::bad_request(format!(
                "Inference-Header-Content-Length must be a non-negative integer in canonical decimal, got '{v}'"
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

    let params = parameters(raw.parameters, "request")?;
    let binary_data_output = bool_param(&params, "binary_data_output", "request")?.unwrap_or(false);
    let priority = u64_param(&params, "priority", "request")?.unwrap_or(0);
    let timeout_us = u64_param(&params, "timeout", "request")?.unwrap_or(0);
    let local_only = match params.get("residency") {
        None | Some(Value::Null) => false,
        Some(Value::String(r)) if r == "local" => true,
        Some(Value::String(r)) if r == "any" => false,
        Some(other) => {
            return Err(ProtoError::bad_request(format!(
                "request: parameter 'residency' must be \"local\" or \"any\", got {other}"
            )))
        }
    };

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
        let what = format!("input '{name}'");
        let iparams = parameters(input.parameters, &what)?;
        let binary_size = u64_param(&iparams, "binary_data_size", &what)?;
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
                let what = format!("output '{}'", o.name);
                let oparams = parameters(o.parameters, &what)?;
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
        local_only,
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
        local_only: false,
    })
}

impl Frames {
    fn split_to_end(mut self) -> Vec<Bytes> {
        let n = self.len();
        self.split_to(n)
    }
}

fn parameters(raw: Option<&RawValue>, what: &str) -> Result<Map<String, Value>, ProtoError> {
    crate::params::parse(raw, what).map_err(ProtoError::bad_request)
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
    crate::json_data::parse(&format!("input '{name}'"), datatype, count, raw)
        .map_err(ProtoError::bad_request)
}

#[cfg(test)]
mod tests;
