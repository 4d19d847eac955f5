//! Between trt-sys's types and the gateway's.

use nusa_engine::EngineError;
use nusa_tensor::{DataType, Tensor, TensorData};
use trt_sys::{HostTensor, Status, TrtError};

pub fn datatype(t: trt_sys::DataType) -> Option<DataType> {
    use trt_sys::DataType as T;
    Some(match t {
        T::Float => DataType::Fp32,
        T::Half => DataType::Fp16,
        T::Int8 => DataType::Int8,
        T::Int32 => DataType::Int32,
        T::Int64 => DataType::Int64,
        T::Bool => DataType::Bool,
        T::Uint8 => DataType::Uint8,
        // No protocol datatype carries these.
        T::Fp8 | T::Bf16 | T::Int4 => return None,
    })
}

pub fn trt_datatype(t: DataType) -> Option<trt_sys::DataType> {
    use trt_sys::DataType as T;
    Some(match t {
        DataType::Fp32 => T::Float,
        DataType::Fp16 => T::Half,
        DataType::Int8 => T::Int8,
        DataType::Int32 => T::Int32,
        DataType::Int64 => T::Int64,
        DataType::Bool => T::Bool,
        DataType::Uint8 => T::Uint8,
        _ => return None,
    })
}

/// A refusal of the input is the client's fault; anything else the engine's.
pub fn run_error(e: TrtError) -> EngineError {
    match e.status {
        Status::InvalidArgument => EngineError::Input(e.to_string()),
        _ => EngineError::Run(e.to_string()),
    }
}

/// Appends one run's outputs to those of the runs before (a split batch):
/// rows are concatenated along the first dimension.
pub fn append(
    mut joined: Vec<Tensor>,
    outputs: Vec<HostTensor>,
) -> Result<Vec<Tensor>, EngineError> {
    if joined.is_empty() {
        return outputs.into_iter().map(tensor).collect();
    }
    if joined.len() != outputs.len() {
        return Err(EngineError::Run(
            "runs of one batch gave different outputs".into(),
        ));
    }
    for (t, o) in joined.iter_mut().zip(outputs) {
        if t.name != o.name || t.shape.get(1..) != o.shape.get(1..) {
            return Err(EngineError::Run(format!(
                "output '{}' changed shape between runs",
                o.name
            )));
        }
        t.shape[0] += o.shape.first().copied().unwrap_or(0);
        t.data = join(&t.data, o.data);
    }
    Ok(joined)
}

fn tensor(o: HostTensor) -> Result<Tensor, EngineError> {
    let datatype = datatype(o.data_type).ok_or_else(|| {
        EngineError::Run(format!("output '{}' has type {:?}", o.name, o.data_type))
    })?;
    Ok(Tensor {
        name: o.name,
        datatype,
        shape: o.shape,
        data: TensorData::from(o.data),
    })
}

/// The segments of `a` followed by `b`: no copy of what came before.
fn join(a: &TensorData, b: Vec<u8>) -> TensorData {
    let mut segments = a.segments().to_vec();
    segments.push(b.into());
    TensorData::new(segments)
}
