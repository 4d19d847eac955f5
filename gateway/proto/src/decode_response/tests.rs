use bytes::Bytes;
use nusa_tensor::{encode_bytes_elements, DataType};

use super::*;
use crate::{encode_infer_response, ResponseOutput};

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

fn outputs() -> Vec<ResponseOutput> {
    let probs = f32_bytes(&[0.25, 0.75, 0.5, 0.5]);
    vec![
        ResponseOutput {
            name: "probs".into(),
            datatype: DataType::Fp32,
            shape: vec![2, 2],
            // Two segments, as an engine's split output would give.
            data: TensorData::new(vec![
                Bytes::from(probs[..6].to_vec()),
                Bytes::from(probs[6..].to_vec()),
            ]),
            binary: true,
        },
        ResponseOutput {
            name: "labels".into(),
            datatype: DataType::Bytes,
            shape: vec![2],
            data: encode_bytes_elements([&b"cat"[..], &b"dog"[..]]).into(),
            binary: false,
        },
        ResponseOutput {
            name: "raw".into(),
            datatype: DataType::Bytes,
            shape: vec![1],
            data: encode_bytes_elements([&[0xffu8, 0x00][..]]).into(),
            binary: true,
        },
        ResponseOutput {
            name: "ids".into(),
            datatype: DataType::Int64,
            shape: vec![2, 1],
            data: [-7i64, 1 << 40]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
            binary: false,
        },
        ResponseOutput {
            name: "half".into(),
            datatype: DataType::Fp16,
            shape: vec![2],
            data: [1.5f32, -2.0]
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
            binary: false,
        },
        ResponseOutput {
            name: "mask".into(),
            datatype: DataType::Bool,
            shape: vec![3],
            data: vec![1u8, 0, 1].into(),
            binary: false,
        },
    ]
}

fn decode(header_length: Option<usize>, frames: Vec<Bytes>) -> Result<InferResponse, ProtoError> {
    let h = header_length.map(|n| n.to_string());
    decode_infer_response(h.as_deref(), Frames::new(frames))
}

fn json(body: &str) -> Result<InferResponse, ProtoError> {
    decode(None, vec![Bytes::from(body.to_string())])
}

fn err(r: Result<InferResponse, ProtoError>) -> ProtoError {
    let e = r.expect_err("a malformed response must be an error");
    assert_eq!(e.kind, ErrorKind::Internal, "{e}");
    e
}

#[test]
fn round_trip_with_the_response_encoder() {
    let outs = outputs();
    let enc = encode_infer_response("m", Some("3"), Some("r1"), &outs).unwrap();
    let resp = decode(enc.header_length, enc.frames.clone()).unwrap();
    assert_eq!(resp.model_name, "m");
    assert_eq!(resp.model_version.as_deref(), Some("3"));
    assert_eq!(resp.id.as_deref(), Some("r1"));
    let want: Vec<Tensor> = outs
        .iter()
        .map(|o| Tensor {
            name: o.name.clone(),
            datatype: o.datatype,
            shape: o.shape.clone(),
            data: o.data.clone(),
        })
        .collect();
    assert_eq!(resp.outputs.len(), want.len());
    for (got, want) in resp.outputs.iter().zip(&want) {
        assert_eq!(got.name, want.name);
        assert_eq!(got.datatype, want.datatype);
        assert_eq!(got.shape, want.shape);
        assert_eq!(
            got.data.contiguous(),
            want.data.contiguous(),
            "{}",
            got.name
        );
    }
    // Binary outputs are slices of the body's frames, not copies.
    assert_eq!(
        resp.outputs[0].data.segments()[0].as_ptr(),
        enc.frames[1].as_ptr()
    );
}

#[test]
fn json_only_response_flat_and_nested() {
    let outs: Vec<ResponseOutput> = outputs()
        .into_iter()
        .filter(|o| o.name != "raw")
        .map(|o| ResponseOutput { binary: false, ..o })
        .collect();
    let enc = encode_infer_response("m", None, None, &outs).unwrap();
    assert_eq!(enc.header_length, None);
    let resp = decode(None, enc.frames).unwrap();
    assert_eq!(resp.model_version, None);
    assert_eq!(resp.outputs.len(), 5);

    let flat = json(
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[2,2],"datatype":"FP32","data":[1,2,3,4]}]}"#,
    )
    .unwrap();
    let nested = json(
        r#"{"model_name":"m","model_version":2,"parameters":{"x":1},
            "outputs":[{"name":"y","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]],
                        "parameters":{"content_type":"np"}}]}"#,
    )
    .unwrap();
    assert_eq!(flat.outputs, nested.outputs);
    assert_eq!(nested.model_version.as_deref(), Some("2"));
    assert_eq!(
        flat.outputs[0].data.contiguous(),
        Bytes::from(f32_bytes(&[1.0, 2.0, 3.0, 4.0]))
    );
}

#[test]
fn binary_split_across_frames() {
    let header = br#"{"model_name":"m","outputs":[{"name":"y","shape":[3],"datatype":"INT32","parameters":{"binary_data_size":12}}]}"#;
    let mut body = header.to_vec();
    for v in [1i32, -2, 3] {
        body.extend(v.to_le_bytes());
    }
    let frames: Vec<Bytes> = body.chunks(7).map(Bytes::copy_from_slice).collect();
    let resp = decode(Some(header.len()), frames).unwrap();
    assert_eq!(
        &resp.outputs[0].data.contiguous()[..],
        &[1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff, 3, 0, 0, 0]
    );
}

fn binary_body(shape: &str, size: usize, bytes: usize) -> (usize, Vec<Bytes>) {
    let header = format!(
        r#"{{"model_name":"m","outputs":[{{"name":"y","shape":{shape},"datatype":"FP32","parameters":{{"binary_data_size":{size}}}}}]}}"#
    );
    (
        header.len(),
        vec![Bytes::from(header), Bytes::from(vec![0u8; bytes])],
    )
}

#[test]
fn truncated_binary_is_an_error() {
    let (h, frames) = binary_body("[2,2]", 16, 10);
    let e = err(decode(Some(h), frames));
    assert!(e.message.contains("truncated"), "{e}");
}

#[test]
fn sizes_disagreeing_with_shapes_are_errors() {
    let (h, frames) = binary_body("[2,2]", 12, 12);
    let e = err(decode(Some(h), frames));
    assert!(e.message.contains("needs 16 bytes"), "{e}");

    let (h, frames) = binary_body("[2,2]", 16, 20);
    let e = err(decode(Some(h), frames));
    assert!(e.message.contains("4 bytes of binary data follow"), "{e}");

    let e = err(json(
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[2,2],"datatype":"FP32","data":[1,2,3]}]}"#,
    ));
    assert!(e.message.contains("needs 4 elements"), "{e}");

    // BYTES whose framing disagrees with the shape.
    let framed = encode_bytes_elements([&b"a"[..]]);
    let header = format!(
        r#"{{"model_name":"m","outputs":[{{"name":"s","shape":[2],"datatype":"BYTES","parameters":{{"binary_data_size":{}}}}}]}}"#,
        framed.len()
    );
    let e = err(decode(
        Some(header.len()),
        vec![Bytes::from(header), Bytes::from(framed)],
    ));
    assert!(e.message.contains("output tensor 's'"), "{e}");
}

#[test]
fn header_length_past_the_end_or_garbled_is_an_error() {
    let (h, frames) = binary_body("[1]", 4, 4);
    let e = err(decode(Some(h + 5), frames));
    assert!(e.message.contains("only"), "{e}");
    let (_, frames) = binary_body("[1]", 4, 4);
    err(decode_infer_response(Some("-3"), Frames::new(frames)));
    let (_, frames) = binary_body("[1]", 4, 4);
    err(decode_infer_response(Some("0"), Frames::new(frames)));
    // Header cut short: the JSON does not parse.
    let (h, frames) = binary_body("[1]", 4, 4);
    err(decode(Some(h - 3), frames));
}

#[test]
fn non_object_json_is_an_error() {
    for body in [
        "",
        "   ",
        "[1,2]",
        "\"outputs\"",
        "null",
        "{",
        "{}",
        "\u{0}{}",
    ] {
        err(json(body));
    }
    err(decode(None, vec![Bytes::from_static(&[b'{', 0xff, 0xfe])]));
    err(json(r#"{"model_name":"m","outputs":{}}"#));
    err(json(r#"{"outputs":[]}"#));
}

#[test]
fn malformed_outputs_are_errors() {
    let cases = [
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FLOAT","data":[1]}]}"#,
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[-1],"datatype":"FP32","data":[]}]}"#,
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[4294967296,4294967296],"datatype":"FP32","data":[]}]}"#,
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32"}]}"#,
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}}]}"#,
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":"4"}}]}"#,
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32","data":[1]},{"name":"y","shape":[1],"datatype":"FP32","data":[1]}]}"#,
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"UINT8","data":[256]}]}"#,
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32","data":[{"a":1}]}]}"#,
        r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32","data":[null]}]}"#,
        r#"{"model_name":"m","model_version":[1],"outputs":[]}"#,
    ];
    for c in cases {
        err(json(c));
    }
    let deep = format!(
        r#"{{"model_name":"m","outputs":[{{"name":"y","shape":[1],"datatype":"FP32","data":{}1{}}}]}}"#,
        "[".repeat(40),
        "]".repeat(40)
    );
    let e = err(json(&deep));
    assert!(e.message.contains("nested too deeply"), "{e}");
}

#[test]
fn binary_size_larger_than_memory_is_an_error_not_an_allocation() {
    let (h, frames) = binary_body("[1]", usize::MAX, 4);
    err(decode(Some(h), frames));
    let header = r#"{"model_name":"m","outputs":[{"name":"y","shape":[1],"datatype":"FP32","parameters":{"binary_data_size":18446744073709551615}}]}"#;
    err(decode(Some(header.len()), vec![Bytes::from(header)]));
}
