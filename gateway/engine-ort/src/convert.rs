//! Between our tensors and ONNX Runtime values. Inputs are gathered from the
//! requests' parts straight into the buffer ONNX Runtime takes over: the one
//! copy of input bytes on their way from the socket.

use bytes::Bytes;
use nusa_engine::{BatchInput, EngineError};
use nusa_tensor::{bytes_elements, encode_bytes_elements, DataType, Tensor, TensorData};
use ort::value::{DynValue, Tensor as OrtTensor, TensorElementType};

pub fn datatype(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::Uint8,
        TensorElementType::Uint16 => DataType::Uint16,
        TensorElementType::Uint32 => DataType::Uint32,
        TensorElementType::Uint64 => DataType::Uint64,
        TensorElementType::Int8 => DataType::Int8,
        TensorElementType::Int16 => DataType::Int16,
        TensorElementType::Int32 => DataType::Int32,
        TensorElementType::Int64 => DataType::Int64,
        TensorElementType::Float16 => DataType::Fp16,
        TensorElementType::Float32 => DataType::Fp32,
        TensorElementType::Float64 => DataType::Fp64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

fn gather<T: bytemuck::Pod + ort::value::PrimitiveTensorElementType + std::fmt::Debug>(
    input: &BatchInput,
) -> Result<DynValue, EngineError> {
    let size = std::mem::size_of::<T>();
    if input.len() % size != 0 {
        return Err(EngineError::Input(format!(
            "input '{}': {} bytes is not a whole number of {} elements",
            input.name,
            input.len(),
            input.datatype
        )));
    }
    let mut buf = vec![T::zeroed(); input.len() / size];
    input.gather_into(bytemuck::cast_slice_mut(&mut buf));
    OrtTensor::from_array((input.shape.clone(), buf))
        .map(|t| t.into_dyn())
        .map_err(|e| EngineError::Input(format!("input '{}': {e}", input.name)))
}

pub fn to_value(input: &BatchInput) -> Result<DynValue, EngineError> {
    match input.datatype {
        DataType::Bool => {
            let mut raw = vec![0u8; input.len()];
            input.gather_into(&mut raw);
            let buf: Vec<bool> = raw.into_iter().map(|b| b != 0).collect();
            OrtTensor::from_array((input.shape.clone(), buf))
                .map(|t| t.into_dyn())
                .map_err(|e| EngineError::Input(format!("input '{}': {e}", input.name)))
        }
        DataType::Uint8 => gather::<u8>(input),
        DataType::Uint16 => gather::<u16>(input),
        DataType::Uint32 => gather::<u32>(input),
        DataType::Uint64 => gather::<u64>(input),
        DataType::Int8 => gather::<i8>(input),
        DataType::Int16 => gather::<i16>(input),
        DataType::Int32 => gather::<i32>(input),
        DataType::Int64 => gather::<i64>(input),
        DataType::Fp16 => gather::<half::f16>(input),
        DataType::Fp32 => gather::<f32>(input),
        DataType::Fp64 => gather::<f64>(input),
        DataType::Bytes => {
            let mut strings = Vec::new();
            for part in &input.parts {
                for e in bytes_elements(&part.contiguous())
                    .map_err(|d| EngineError::Input(format!("input '{}': {d}", input.name)))?
                {
                    let s = String::from_utf8(e.to_vec()).map_err(|_| {
                        EngineError::Input(format!(
                            "input '{}': ONNX Runtime string tensors must be UTF-8",
                            input.name
                        ))
                    })?;
                    strings.push(s);
                }
            }
            OrtTensor::from_string_array((input.shape.clone(), strings.as_slice()))
                .map(|t| t.into_dyn())
                .map_err(|e| EngineError::Input(format!("input '{}': {e}", input.name)))
        }
    }
}

fn extract<T: bytemuck::Pod + ort::value::PrimitiveTensorElementType>(
    name: &str,
    value: &DynValue,
) -> Result<(Vec<i64>, Bytes), EngineError> {
    let (shape, data) = value
        .try_extract_tensor::<T>()
        .map_err(|e| EngineError::Run(format!("output '{name}': {e}")))?;
    Ok((
        shape.to_vec(),
        Bytes::copy_from_slice(bytemuck::cast_slice(data)),
    ))
}

pub fn from_value(name: &str, value: &DynValue) -> Result<Tensor, EngineError> {
    let ty = match value.dtype() {
        ort::value::ValueType::Tensor { ty, .. } => *ty,
        other => {
            return Err(EngineError::Run(format!(
                "output '{name}' is a {other:?}, not a tensor"
            )))
        }
    };
    let datatype = datatype(ty)
        .ok_or_else(|| EngineError::Run(format!("output '{name}' has unsupported type {ty:?}")))?;
    let (shape, bytes) = match datatype {
        DataType::Bool => {
            let (shape, data) = value
                .try_extract_tensor::<bool>()
                .map_err(|e| EngineError::Run(format!("output '{name}': {e}")))?;
            (
                shape.to_vec(),
                Bytes::from(data.iter().map(|&b| b as u8).collect::<Vec<u8>>()),
            )
        }
        DataType::Uint8 => extract::<u8>(name, value)?,
        DataType::Uint16 => extract::<u16>(name, value)?,
        DataType::Uint32 => extract::<u32>(name, value)?,
        DataType::Uint64 => extract::<u64>(name, value)?,
        DataType::Int8 => extract::<i8>(name, value)?,
        DataType::Int16 => extract::<i16>(name, value)?,
        DataType::Int32 => extract::<i32>(name, value)?,
        DataType::Int64 => extract::<i64>(name, value)?,
        DataType::Fp16 => extract::<half::f16>(name, value)?,
        DataType::Fp32 => extract::<f32>(name, value)?,
        DataType::Fp64 => extract::<f64>(name, value)?,
        DataType::Bytes => {
            let (shape, strings) = value
                .try_extract_strings()
                .map_err(|e| EngineError::Run(format!("output '{name}': {e}")))?;
            let enc = encode_bytes_elements(strings.iter().map(|s| s.as_bytes()));
            (shape.to_vec(), Bytes::from(enc))
        }
    };
    Ok(Tensor {
        name: name.to_string(),
        datatype,
        shape,
        data: TensorData::from(bytes),
    })
}
