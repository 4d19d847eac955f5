use bytes::Bytes;
use nusa_tensor::{bytes_elements, DataType, TensorData};
use serde::ser::{SerializeSeq, Serializer};
use serde::Serialize;

/// One output as it goes back to the client.
#[derive(Clone, Debug)]
pub struct ResponseOutput {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    pub data: TensorData,
    /// Send the bytes in the binary section rather than as JSON `data`.
    pub binary: bool,
}

/// A response body as frames, with the JSON header's length when a binary
/// section follows it (the `Inference-Header-Content-Length` to send).
#[derive(Debug)]
pub struct EncodedResponse {
    pub header_length: Option<usize>,
    pub frames: Vec<Bytes>,
}

#[derive(Serialize)]
struct Header<'a> {
    model_name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputHeader<'a>>,
}

#[derive(Serialize)]
struct OutputHeader<'a> {
    name: &'a str,
    datatype: &'static str,
    shape: &'a [i64],
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinaryParams>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<JsonData<'a>>,
}

#[derive(Serialize)]
struct BinaryParams {
    binary_data_size: usize,
}

/// Serializes tensor bytes as a flat JSON array without building a `Value`.
struct JsonData<'a> {
    datatype: DataType,
    data: &'a TensorData,
}

impl Serialize for JsonData<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let buf = self.data.contiguous();
        macro_rules! seq {
            ($t:ty, $n:expr, $conv:expr) => {{
                let mut seq = s.serialize_seq(Some(buf.len() / $n))?;
                for c in buf.chunks_exact($n) {
                    let mut a = [0u8; $n];
                    a.copy_from_slice(c);
                    let v = <$t>::from_le_bytes(a);
                    seq.serialize_element(&$conv(v))?;
                }
                seq.end()
            }};
        }
        match self.datatype {
            DataType::Bool => {
                let mut seq = s.serialize_seq(Some(buf.len()))?;
                for b in buf.iter() {
                    seq.serialize_element(&(*b != 0))?;
                }
                seq.end()
            }
            DataType::Uint8 => seq!(u8, 1, |v| v),
            DataType::Uint16 => seq!(u16, 2, |v| v),
            DataType::Uint32 => seq!(u32, 4, |v| v),
            DataType::Uint64 => seq!(u64, 8, |v| v),
            DataType::Int8 => seq!(i8, 1, |v| v),
            DataType::Int16 => seq!(i16, 2, |v| v),
            DataType::Int32 => seq!(i32, 4, |v| v),
            DataType::Int64 => seq!(i64, 8, |v| v),
            DataType::Fp16 => seq!(u16, 2, |v| half::f16::from_bits(v).to_f32()),
            DataType::Fp32 => seq!(f32, 4, |v| v),
            DataType::Fp64 => seq!(f64, 8, |v| v),
            DataType::Bytes => {
                let els = bytes_elements(&buf).map_err(serde::ser::Error::custom)?;
                let mut seq = s.serialize_seq(Some(els.len()))?;
                for e in els {
                    // The JSON encoding carries BYTES as strings; bytes that are
                    // not UTF-8 need the binary encoding.
                    let text = std::str::from_utf8(&e).map_err(|_| {
                        serde::ser::Error::custom("BYTES element is not UTF-8; request binary_data")
                    })?;
                    seq.serialize_element(text)?;
                }
                seq.end()
            }
        }
    }
}

/// Encodes an infer response. Binary outputs are appended after the JSON
/// header as they are (no copy).
pub fn encode_infer_response(
    model_name: &str,
    model_version: Option<&str>,
    id: Option<&str>,
    outputs: &[ResponseOutput],
) -> Result<EncodedResponse, serde_json::Error> {
    let mut any_binary = false;
    let headers = outputs
        .iter()
        .map(|o| {
            any_binary |= o.binary;
            OutputHeader {
                name: &o.name,
                datatype: o.datatype.as_str(),
                shape: &o.shape,
                parameters: o.binary.then(|| BinaryParams {
                    binary_data_size: o.data.len(),
                }),
                data: (!o.binary).then_some(JsonData {
                    datatype: o.datatype,
                    data: &o.data,
                }),
            }
        })
        .collect();
    let json = serde_json::to_vec(&Header {
        model_name,
        model_version,
        id,
        outputs: headers,
    })?;
    let header_length = any_binary.then_some(json.len());
    let mut frames = vec![Bytes::from(json)];
    for o in outputs.iter().filter(|o| o.binary) {
        frames.extend(o.data.segments().iter().cloned());
    }
    Ok(EncodedResponse {
        header_length,
        frames,
    })
}
