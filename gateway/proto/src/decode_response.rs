use nusa_tensor::{element_count, DataType, Tensor, TensorData};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::{ErrorKind, Frames, ProtoError};

/// An infer response from another server (Triton, KServe, MLServer, nusad),
/// decoded and checked against itself; checking it against the model is the
/// caller's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InferResponse {
    pub model_name: String,
    pub model_version: Option<String>,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

// Unknown fields are ignored, unlike in requests: servers add their own
// (`parameters` at either level, MLServer's `content_type`), and none of them
// changes how the tensors decode.
#[derive(Deserialize)]
struct RawResponse<'a> {
    model_name: String,
    #[serde(default)]
    model_version: Option<Value>,
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    outputs: Vec<RawOutput<'a>>,
}

#[derive(Deserialize)]
struct RawOutput<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
}

/// A malformed answer is the remote's fault, never the client's, so it is
/// `Internal` rather than `BadRequest`.
fn bad_answer(message: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorKind::Internal, message)
}

/// Decodes an infer response body.
///
/// `header_length` is the raw `Inference-Header-Content-Length` value when
/// the server sent one. Binary output bytes stay slices of `body`'s frames.
/// Bounded and checked like [`crate::decode_infer_request`]: sizes must agree
/// with shapes, and no byte of the body may be left unaccounted for.
pub fn decode_infer_response(
    header_length: Option<&str>,
    mut body: Frames,
) -> Result<InferResponse, ProtoError> {
    let json_len = match header_length {
        None => body.len(),
        Some(v) => crate::params::header_length(v).ok_or_else(|| {
            bad_answer(format!(
                "Inference-Header-Content-Length must be a non-negative integer in canonical decimal, got '{v}'"
            ))
        })?,
    };
    if json_len > body.len() {
        return Err(bad_answer(format!(
            "Inference-Header-Content-Length is {json_len} but the body has only {} bytes",
            body.len()
        )));
    }
    let json = body.split_contiguous(json_len);
    if json.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(bad_answer(
            "malformed inference response: the JSON header must be an object with 'outputs'",
        ));
    }
    let raw: RawResponse<'_> = serde_json::from_slice(&json)
        .map_err(|e| bad_answer(format!("malformed inference response JSON: {e}")))?;

    let model_version = match raw.model_version {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        // Some servers send the version as a number.
        Some(Value::Number(n)) => Some(n.to_string()),
        Some(other) => {
            return Err(bad_answer(format!(
                "model_version must be a string, got {other}"
            )))
        }
    };

    let mut outputs: Vec<Tensor> = Vec::with_capacity(raw.outputs.len());
    for output in raw.outputs {
        let name = output.name;
        let what = format!("output '{name}'");
        let datatype = DataType::parse(&output.datatype)
            .ok_or_else(|| bad_answer(format!("{what}: unknown datatype '{}'", output.datatype)))?;
        let count = element_count(&output.shape).ok_or_else(|| {
            bad_answer(format!(
                "{what}: shape {:?} has a negative or too large dimension",
                output.shape
            ))
        })?;
        if outputs.iter().any(|t| t.name == name) {
            return Err(bad_answer(format!("{what} appears twice")));
        }
        let params = crate::params::parse(output.parameters, &what).map_err(bad_answer)?;
        let binary_size = binary_data_size(&params, &what)?;
        let data = match (binary_size, output.data) {
            (Some(_), Some(_)) => {
                return Err(bad_answer(format!(
                    "{what} has both 'data' and 'binary_data_size'"
                )))
            }
            (None, None) => {
                return Err(bad_answer(format!(
                    "{what} has neither 'data' nor 'binary_data_size'"
                )))
            }
            (Some(size), None) => {
                let size = usize::try_from(size).unwrap_or(usize::MAX);
                if size > body.len() {
                    return Err(bad_answer(format!(
                        "{what}: binary_data_size is {size} but only {} bytes of binary data remain (truncated body?)",
                        body.len()
                    )));
                }
                TensorData::new(body.split_to(size))
            }
            (None, Some(raw_data)) => TensorData::from(
                crate::json_data::parse(&what, datatype, count, raw_data).map_err(bad_answer)?,
            ),
        };
        let tensor = Tensor {
            name,
            datatype,
            shape: output.shape,
            data,
        };
        tensor
            .validate()
            .map_err(|e| bad_answer(format!("output {e}")))?;
        outputs.push(tensor);
    }
    if !body.is_empty() {
        return Err(bad_answer(format!(
            "{} bytes of binary data follow the outputs that no output's binary_data_size accounts for",
            body.len()
        )));
    }
    Ok(InferResponse {
        model_name: raw.model_name,
        model_version,
        id: raw.id,
        outputs,
    })
}

fn binary_data_size(params: &Map<String, Value>, what: &str) -> Result<Option<u64>, ProtoError> {
    match params.get("binary_data_size") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(other) => Err(bad_answer(format!(
            "{what}: parameter 'binary_data_size' must be a non-negative integer, got {other}"
        ))),
    }
}

#[cfg(test)]
mod tests;
