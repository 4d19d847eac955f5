use bytes::Bytes;
use nusa_tensor::Tensor;
use serde_json::{json, Map, Value};

/// A request body as frames: the JSON header, then every input's bytes as
/// the segments the tensor holds (no copy). `header_length` is the
/// `Inference-Header-Content-Length` to send.
#[derive(Debug)]
pub struct EncodedRequest {
    pub header_length: usize,
    pub frames: Vec<Bytes>,
}

impl EncodedRequest {
    /// The whole body's length, for `Content-Length`.
    pub fn len(&self) -> usize {
        self.frames.iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Encodes an infer request with the binary extension: every input goes in
/// the binary section (`binary_data_size`), and every output is asked for in
/// binary (`binary_data: true`, or `binary_data_output` when `outputs` is
/// `None`, meaning all of the model's outputs), so that neither side spends
/// time on JSON numbers.
///
/// `parameters` are the request-level parameters to pass on (`priority`,
/// `timeout`, ...); a `binary_data_output` given there is kept as it is.
pub fn encode_infer_request(
    id: Option<&str>,
    inputs: &[Tensor],
    outputs: Option<&[&str]>,
    parameters: &Map<String, Value>,
) -> EncodedRequest {
    let mut header = Map::new();
    if let Some(id) = id {
        header.insert("id".into(), Value::from(id));
    }
    let mut params = parameters.clone();
    if outputs.is_none() {
        params
            .entry("binary_data_output")
            .or_insert(Value::Bool(true));
    }
    if !params.is_empty() {
        header.insert("parameters".into(), Value::Object(params));
    }
    let inputs_json: Vec<Value> = inputs
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "shape": t.shape,
                "datatype": t.datatype.as_str(),
                "parameters": { "binary_data_size": t.data.len() },
            })
        })
        .collect();
    header.insert("inputs".into(), Value::Array(inputs_json));
    if let Some(outputs) = outputs {
        let list = outputs
            .iter()
            .map(|name| json!({ "name": name, "parameters": { "binary_data": true } }))
            .collect();
        header.insert("outputs".into(), Value::Array(list));
    }
    // Display of a `Value` cannot fail, unlike `serde_json::to_vec`.
    let json = Value::Object(header).to_string().into_bytes();
    let header_length = json.len();
    let mut frames = Vec::with_capacity(1 + inputs.len());
    frames.push(Bytes::from(json));
    for t in inputs {
        frames.extend(t.data.segments().iter().cloned());
    }
    EncodedRequest {
        header_length,
        frames,
    }
}

#[cfg(test)]
mod tests {
    use nusa_tensor::{encode_bytes_elements, DataType, TensorData};

    use super::*;
    use crate::{decode_infer_request, Frames, RequestedOutput};

    fn tensors() -> Vec<Tensor> {
        let floats: Vec<u8> = [1.0f32, -2.5, 3.25, 4.0, 5.0, 6.0]
            .iter()
            .flat_map(|f| f.to_le_bytes())
            .collect();
        vec![
            Tensor {
                name: "x".into(),
                datatype: DataType::Fp32,
                shape: vec![2, 3],
                // Two segments, as a body split over frames would give.
                data: TensorData::new(vec![
                    Bytes::from(floats[..10].to_vec()),
                    Bytes::from(floats[10..].to_vec()),
                ]),
            },
            Tensor {
                name: "s".into(),
                datatype: DataType::Bytes,
                shape: vec![2],
                data: encode_bytes_elements([&b"hi"[..], &[0xff, 0x00][..]]).into(),
            },
            Tensor {
                name: "b".into(),
                datatype: DataType::Bool,
                shape: vec![0],
                data: TensorData::default(),
            },
        ]
    }

    #[test]
    fn decodes_to_the_same_tensors_without_copying() {
        let inputs = tensors();
        let mut params = Map::new();
        params.insert("priority".into(), Value::from(2));
        let enc = encode_infer_request(Some("r7"), &inputs, Some(&["y", "z"]), &params);
        // Frames after the header are the tensors' own segments.
        assert_eq!(enc.frames.len(), 1 + 2 + 1);
        assert_eq!(
            enc.frames[1].as_ptr(),
            inputs[0].data.segments()[0].as_ptr()
        );
        assert_eq!(enc.len(), enc.header_length + 24 + 12);

        let header = enc.header_length.to_string();
        let req = decode_infer_request(Some(&header), Frames::new(enc.frames), None).unwrap();
        assert_eq!(req.id.as_deref(), Some("r7"));
        assert_eq!(req.priority, 2);
        assert_eq!(req.inputs, inputs);
        assert_eq!(
            req.outputs,
            Some(vec![
                RequestedOutput {
                    name: "y".into(),
                    binary: Some(true)
                },
                RequestedOutput {
                    name: "z".into(),
                    binary: Some(true)
                },
            ])
        );
    }

    #[test]
    fn all_outputs_are_asked_for_in_binary() {
        let enc = encode_infer_request(None, &tensors()[..1], None, &Map::new());
        let header = enc.header_length.to_string();
        let req = decode_infer_request(Some(&header), Frames::new(enc.frames), None).unwrap();
        assert_eq!(req.id, None);
        assert_eq!(req.outputs, None);
        assert!(req.binary_data_output);

        // The caller's own choice stands.
        let mut params = Map::new();
        params.insert("binary_data_output".into(), Value::Bool(false));
        let enc = encode_infer_request(None, &tensors()[..1], None, &params);
        let header = enc.header_length.to_string();
        let req = decode_infer_request(Some(&header), Frames::new(enc.frames), None).unwrap();
        assert!(!req.binary_data_output);
    }
}
