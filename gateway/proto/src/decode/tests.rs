use bytes::Bytes;
use nusa_tensor::DataType;

use super::*;
use crate::{encode_infer_response, ErrorKind, ResponseOutput};

fn json(body: &str) -> Result<InferRequest, ProtoError> {
    decode_infer_request(None, Frames::new([Bytes::from(body.to_string())]), None)
}

fn f32s(t: &Tensor) -> Vec<f32> {
    t.data
        .contiguous()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn flat_and_nested_json_give_the_same_bytes() {
    let flat =
        json(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[1,2.5,3,4]}]}"#)
            .unwrap();
    let nested =
        json(r#"{"inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2.5],[3,4]]}]}"#)
            .unwrap();
    assert_eq!(flat.inputs, nested.inputs);
    assert_eq!(f32s(&flat.inputs[0]), vec![1.0, 2.5, 3.0, 4.0]);
}

#[test]
fn parameters_are_read() {
    let r = json(
        r#"{"id":"r1","parameters":{"priority":1,"timeout":500,"binary_data_output":true,"residency":"local"},
            "inputs":[{"name":"x","shape":[1],"datatype":"INT8","data":[-3]}],
            "outputs":[{"name":"y","parameters":{"binary_data":false}}]}"#,
    )
    .unwrap();
    assert_eq!(r.id.as_deref(), Some("r1"));
    assert_eq!(
        (r.priority, r.timeout_us, r.binary_data_output),
        (1, 500, true)
    );
    assert_eq!(
        r.outputs,
        Some(vec![RequestedOutput {
            name: "y".into(),
            binary: Some(false)
        }])
    );
    assert_eq!(&r.inputs[0].data.contiguous()[..], &[0xfd]);
}

#[test]
fn every_datatype_decodes_from_json() {
    for (dt, data, want) in [
        ("BOOL", "[true,false]", vec![1u8, 0]),
        ("UINT8", "[1,255]", vec![1, 255]),
        ("UINT16", "[1,2]", vec![1, 0, 2, 0]),
        ("INT16", "[-1,2]", vec![0xff, 0xff, 2, 0]),
        ("FP16", "[1,2]", vec![0x00, 0x3c, 0x00, 0x40]),
        (
            "BYTES",
            r#"["a","bc"]"#,
            vec![1, 0, 0, 0, b'a', 2, 0, 0, 0, b'b', b'c'],
        ),
    ] {
        let r = json(&format!(
            r#"{{"inputs":[{{"name":"x","shape":[2],"datatype":"{dt}","data":{data}}}]}}"#
        ))
        .unwrap_or_else(|e| panic!("{dt}: {e}"));
        assert_eq!(&r.inputs[0].data.contiguous()[..], &want[..], "{dt}");
    }
}

#[test]
fn json_errors_name_the_tensor_and_the_problem() {
    let cases = [
        (
            r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1]}]}"#,
            "needs 2 elements",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[256]}]}"#,
            "out of range for UINT8",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"INT32","data":[1.5]}]}"#,
            "expected an integer for INT32",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#,
            "expected FP32 elements",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#,
            "unknown datatype 'FLOAT'",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#,
            "negative",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32"}]}"#,
            "neither",
        ),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[null]}]}"#,
            "null",
        ),
        (r#"{"inputs":[]}"#, "no inputs"),
        (
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"bogus":1}"#,
            "unknown field",
        ),
        (r#"{"inputs":"#, "malformed"),
    ];
    for (body, want) in cases {
        let e = json(body).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{body}");
        assert!(e.message.contains(want), "{body}: {}", e.message);
    }
}

fn binary_body(json: &str, bin: &[u8]) -> (String, Frames) {
    let mut v = json.as_bytes().to_vec();
    v.extend_from_slice(bin);
    (json.len().to_string(), Frames::new([Bytes::from(v)]))
}

#[test]
fn binary_inputs_are_slices_of_the_body() {
    let bin: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let json = r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}},
                             {"name":"y","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let mut body = json.as_bytes().to_vec();
    body.extend_from_slice(&bin);
    let body = Bytes::from(body);
    // Split the body into two frames in the middle of the first tensor.
    let cut = json.len() + 3;
    let frames = Frames::new([body.slice(..cut), body.slice(cut..)]);
    let r = decode_infer_request(Some(&json.len().to_string()), frames, None).unwrap();
    assert_eq!(f32s(&r.inputs[0]), vec![1.0, 2.0]);
    assert_eq!(f32s(&r.inputs[1]), vec![3.0, 4.0]);
    assert_eq!(
        r.inputs[0].data.segments().len(),
        2,
        "kept as two segments, not joined"
    );
    assert_eq!(
        r.inputs[1].data.segments()[0].as_ptr(),
        body[json.len() + 8..].as_ptr()
    );
}

#[test]
fn binary_errors() {
    let j = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let (len, body) = binary_body(j, &[0; 4]);
    let e = decode_infer_request(Some(&len), body, None).unwrap_err();
    assert!(e.message.contains("truncated"), "{}", e.message);

    let j2 = r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
    let (len, body) = binary_body(j2, &[0; 8]);
    let e = decode_infer_request(Some(&len), body, None).unwrap_err();
    assert!(
        e.message.contains("'x'") && e.message.contains("needs 12 bytes, got 8"),
        "{}",
        e.message
    );

    let (_, body) = binary_body(j, &[0; 8]);
    let e = decode_infer_request(Some("100000"), body, None).unwrap_err();
    assert!(e.message.contains("only"), "{}", e.message);

    let (_, body) = binary_body(j, &[0; 8]);
    let e = decode_infer_request(Some("abc"), body, None).unwrap_err();
    assert!(e.message.contains("non-negative integer"), "{}", e.message);

    // One spelling per length: a sign, a leading zero or spaces are refused.
    let (len, _) = binary_body(j, &[0; 8]);
    for odd in [format!("+{len}"), format!("0{len}"), format!(" {len}")] {
        let (_, body) = binary_body(j, &[0; 8]);
        let e = decode_infer_request(Some(&odd), body, None).unwrap_err();
        assert!(e.message.contains("canonical decimal"), "{}", e.message);
    }

    let (len, body) = binary_body(j, &[0; 12]);
    let e = decode_infer_request(Some(&len), body, None).unwrap_err();
    assert!(
        e.message.contains("4 bytes of binary data"),
        "{}",
        e.message
    );
}

#[test]
fn parameters_are_bounded_in_size_and_depth_at_every_level() {
    let input = r#"{"name":"x","shape":[1],"datatype":"INT8","data":[1]}"#;
    let wide = format!(
        "{{\"p\":[{}[]]}}",
        "[],".repeat(crate::MAX_PARAMETERS_BYTES / 3)
    );
    let deep = format!("{{\"p\":{}{}}}", "[".repeat(20), "]".repeat(20));
    for params in [&wide, &deep] {
        let cases = [
            (
                format!(r#"{{"parameters":{params},"inputs":[{input}]}}"#),
                "request: 'parameters'",
            ),
            (
                format!(
                    r#"{{"inputs":[{{"name":"x","shape":[1],"datatype":"INT8","data":[1],"parameters":{params}}}]}}"#
                ),
                "input 'x': 'parameters'",
            ),
            (
                format!(
                    r#"{{"inputs":[{input}],"outputs":[{{"name":"y","parameters":{params}}}]}}"#
                ),
                "output 'y': 'parameters'",
            ),
        ];
        for (body, want) in cases {
            let e = json(&body).unwrap_err();
            assert_eq!(e.kind, ErrorKind::BadRequest);
            assert!(e.message.starts_with(want), "{}", e.message);
            assert!(e.message.contains("limit of"), "{}", e.message);
        }
    }
    let e = json(&format!(r#"{{"parameters":[],"inputs":[{input}]}}"#)).unwrap_err();
    assert!(e.message.contains("must be a JSON object"), "{}", e.message);
    let ok = json(&format!(r#"{{"parameters":null,"inputs":[{input}]}}"#)).unwrap();
    assert_eq!(ok.priority, 0);
}

#[test]
fn raw_binary_body_fills_the_batch_dimension() {
    let body = Frames::new([Bytes::from(vec![0u8; 3 * 2 * 4])]);
    let sole = SoleInput {
        name: "x",
        datatype: DataType::Fp32,
        shape: &[-1, 2],
    };
    let r = decode_infer_request(Some("0"), body, Some(sole)).unwrap();
    assert_eq!(r.inputs[0].shape, vec![3, 2]);
    let body = Frames::new([Bytes::from(vec![0u8; 7])]);
    let sole = SoleInput {
        name: "x",
        datatype: DataType::Fp32,
        shape: &[-1, 2],
    };
    assert!(decode_infer_request(Some("0"), body, Some(sole)).is_err());
}

#[test]
fn response_round_trips_json_and_binary() {
    let data: Vec<u8> = [0.5f32, 0.25]
        .iter()
        .flat_map(|f| f.to_le_bytes())
        .collect();
    let outs = vec![
        ResponseOutput {
            name: "a".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 2],
            data: data.clone().into(),
            binary: false,
        },
        ResponseOutput {
            name: "b".into(),
            datatype: DataType::Fp32,
            shape: vec![1, 2],
            data: data.clone().into(),
            binary: true,
        },
    ];
    let enc = encode_infer_response("m", Some("1"), Some("id7"), &outs).unwrap();
    let hl = enc.header_length.unwrap();
    let body: Vec<u8> = enc.frames.iter().flat_map(|f| f.iter().copied()).collect();
    let v: serde_json::Value = serde_json::from_slice(&body[..hl]).unwrap();
    assert_eq!(v["model_name"], "m");
    assert_eq!(v["id"], "id7");
    assert_eq!(v["outputs"][0]["data"], serde_json::json!([0.5, 0.25]));
    assert_eq!(v["outputs"][1]["parameters"]["binary_data_size"], 8);
    assert_eq!(&body[hl..], &data[..]);
}
