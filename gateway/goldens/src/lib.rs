//! Golden requests: a model version may carry `tests/*.json`, each an Open
//! Inference Protocol request with the outputs it must give and the
//! tolerances they are compared with. `nusactl models publish` refuses a
//! version whose goldens fail on ONNX Runtime; nusad runs them before a
//! loaded version takes traffic (on TensorRT within the FP16 tolerance).
//!
//! ```json
//! {
//!   "request":  {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
//!   "expected": {"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [0.5, 1, 1.5, 2]}]},
//!   "tolerance": {"atol": 1e-5, "rtol": 1e-5},
//!   "tolerance_fp16": {"atol": 0.01, "rtol": 0.01}
//! }
//! ```
//!
//! Numbers match when `|got - want| <= atol + rtol * |want|`; integers,
//! booleans and BYTES must be equal.

use std::path::Path;

use bytes::Bytes;
use nusa_engine::{BatchInput, Engine, ModelMetadata};
use nusa_proto::{decode_infer_request, decode_infer_response, Frames};
use nusa_tensor::{bytes_elements, DataType, Tensor};
use serde::Deserialize;

/// At most this many golden files per version, each at most this large.
pub const MAX_GOLDENS: usize = 64;
pub const MAX_GOLDEN_BYTES: u64 = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    pub const DEFAULT: Tolerance = Tolerance {
        atol: 1e-5,
        rtol: 1e-5,
    };
    pub const DEFAULT_FP16: Tolerance = Tolerance {
        atol: 1e-2,
        rtol: 1e-2,
    };
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    request: serde_json::Value,
    expected: serde_json::Value,
    tolerance: Option<Tolerance>,
    tolerance_fp16: Option<Tolerance>,
}

/// One golden request.
#[derive(Clone, Debug)]
pub struct Golden {
    /// `tests/<name>.json`, for messages.
    pub name: String,
    pub inputs: Vec<Tensor>,
    pub expected: Vec<Tensor>,
    pub tolerance: Tolerance,
    pub tolerance_fp16: Tolerance,
}

/// The goldens of a version folder (`tests/*.json`, in name order); none
/// when it has no `tests` folder.
pub fn load(version_dir: &Path) -> Result<Vec<Golden>, String> {
    let dir = version_dir.join("tests");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", dir.display())),
    };
    let mut paths: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    if paths.len() > MAX_GOLDENS {
        return Err(format!(
            "{}: {} golden files, at most {MAX_GOLDENS}",
            dir.display(),
            paths.len()
        ));
    }
    paths.iter().map(|p| parse_file(p)).collect()
}

fn parse_file(path: &Path) -> Result<Golden, String> {
    let name = format!(
        "tests/{}",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    );
    let text = nusa_fsutil::read_bounded(path, MAX_GOLDEN_BYTES)
        .map_err(|e| format!("{name}: {}", e.detail()))?;
    parse(&name, &text)
}

/// Parses one golden file's bytes.
pub fn parse(name: &str, text: &[u8]) -> Result<Golden, String> {
    let f: File = serde_json::from_slice(text).map_err(|e| format!("{name}: {e}"))?;
    let frames = |v: &serde_json::Value| Frames::new([Bytes::from(v.to_string())]);
    let request = decode_infer_request(None, frames(&f.request), None)
        .map_err(|e| format!("{name}: request: {}", e.message))?;
    let expected = decode_infer_response(None, frames(&f.expected))
        .map_err(|e| format!("{name}: expected: {}", e.message))?;
    Ok(Golden {
        name: name.to_string(),
        inputs: request.inputs,
        expected: expected.outputs,
        tolerance: f.tolerance.unwrap_or(Tolerance::DEFAULT),
        tolerance_fp16: f.tolerance_fp16.unwrap_or(Tolerance::DEFAULT_FP16),
    })
}

impl Golden {
    /// The inputs in the model's order, checked, with the request's rows.
    pub fn inputs_for(
        &self,
        meta: &ModelMetadata,
        batching: bool,
    ) -> Result<(Vec<Tensor>, usize), String> {
        meta.order_inputs(self.inputs.clone(), batching)
            .map_err(|e| format!("{}: {e}", self.name))
    }

    /// Checks `outputs` against the expected ones (each expected output must
    /// be there; others are ignored).
    pub fn check(&self, outputs: &[Tensor], fp16: bool) -> Result<(), String> {
        let tol = if fp16 {
            self.tolerance_fp16
        } else {
            self.tolerance
        };
        for want in &self.expected {
            let got = outputs
                .iter()
                .find(|t| t.name == want.name)
                .ok_or_else(|| format!("{}: no output '{}'", self.name, want.name))?;
            compare(got, want, tol)
                .map_err(|e| format!("{}: output '{}': {e}", self.name, want.name))?;
        }
        Ok(())
    }

    /// Runs on one engine instance directly (a batch of this request alone)
    /// and checks the outputs.
    pub async fn run_on(&self, engine: &dyn Engine, fp16: bool) -> Result<(), String> {
        let meta = engine.metadata();
        let (inputs, _) = self.inputs_for(meta, meta.batchable())?;
        let batch = inputs
            .into_iter()
            .map(|t| BatchInput {
                name: t.name,
                datatype: t.datatype,
                shape: t.shape,
                parts: vec![t.data],
            })
            .collect();
        let outputs = engine
            .run(batch)
            .await
            .map_err(|e| format!("{}: {e}", self.name))?;
        self.check(&outputs, fp16)
    }
}

fn compare(got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(), String> {
    if got.datatype != want.datatype || got.shape != want.shape {
        return Err(format!(
            "{} {:?}, expected {} {:?}",
            got.datatype, got.shape, want.datatype, want.shape
        ));
    }
    let (g, w) = (got.data.contiguous(), want.data.contiguous());
    if want.datatype == DataType::Bytes {
        let ge = bytes_elements(&g)?;
        let we = bytes_elements(&w)?;
        return match ge.iter().zip(&we).position(|(a, b)| a != b) {
            Some(i) => Err(format!("element {i} differs")),
            None if ge.len() != we.len() => Err("element counts differ".into()),
            None => Ok(()),
        };
    }
    let (gv, wv) = (values(want.datatype, &g), values(want.datatype, &w));
    let exact = !matches!(
        want.datatype,
        DataType::Fp16 | DataType::Fp32 | DataType::Fp64
    );
    for (i, (a, b)) in gv.iter().zip(&wv).enumerate() {
        let ok = if exact {
            a == b
        } else {
            (a - b).abs() <= tol.atol + tol.rtol * b.abs() || (a.is_nan() && b.is_nan())
        };
        if !ok {
            return Err(format!(
                "element {i} is {a}, expected {b} (atol {}, rtol {})",
                tol.atol, tol.rtol
            ));
        }
    }
    if gv.len() != wv.len() {
        return Err("element counts differ".into());
    }
    Ok(())
}

/// Every element as f64 (exact for the integer types that matter here).
fn values(dt: DataType, b: &[u8]) -> Vec<f64> {
    fn each<const N: usize>(b: &[u8], f: impl Fn([u8; N]) -> f64) -> Vec<f64> {
        b.chunks_exact(N)
            .map(|c| f(c.try_into().unwrap_or([0; N])))
            .collect()
    }
    match dt {
        DataType::Bool | DataType::Uint8 => b.iter().map(|&x| f64::from(x)).collect(),
        DataType::Int8 => b.iter().map(|&x| f64::from(x as i8)).collect(),
        DataType::Uint16 => each(b, |c| f64::from(u16::from_le_bytes(c))),
        DataType::Int16 => each(b, |c| f64::from(i16::from_le_bytes(c))),
        DataType::Uint32 => each(b, |c| f64::from(u32::from_le_bytes(c))),
        DataType::Int32 => each(b, |c| f64::from(i32::from_le_bytes(c))),
        DataType::Uint64 => each(b, |c| u64::from_le_bytes(c) as f64),
        DataType::Int64 => each(b, |c| i64::from_le_bytes(c) as f64),
        DataType::Fp16 => each(b, |c| f64::from(half::f16::from_le_bytes(c))),
        DataType::Fp32 => each(b, |c| f64::from(f32::from_le_bytes(c))),
        DataType::Fp64 => each(b, f64::from_le_bytes),
        DataType::Bytes => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOLDEN: &str = r#"{
      "request": {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]},
      "expected": {"model_name": "m", "outputs": [{"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [0.5, 1.0]}]},
      "tolerance": {"atol": 0.001, "rtol": 0}
    }"#;

    fn y(values: &[f32]) -> Tensor {
        Tensor {
            name: "y".into(),
            datatype: DataType::Fp32,
            shape: vec![1, values.len() as i64],
            data: values
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>()
                .into(),
        }
    }

    #[test]
    fn outputs_within_the_tolerance_pass_and_others_are_named() {
        let g = parse("tests/a.json", GOLDEN.as_bytes()).unwrap();
        assert_eq!(g.inputs[0].name, "x");
        assert!(g.check(&[y(&[0.5005, 0.9995])], false).is_ok());
        let e = g.check(&[y(&[0.5, 1.01])], false).unwrap_err();
        assert!(e.contains("tests/a.json: output 'y': element 1 is"), "{e}");
        // The FP16 default tolerance (0.01 + 1% ) lets it pass on TensorRT.
        assert!(g.check(&[y(&[0.5, 1.01])], true).is_ok());
        let e = g.check(&[], false).unwrap_err();
        assert!(e.contains("no output 'y'"), "{e}");
        let e = g.check(&[y(&[0.5, 1.0, 2.0])], false).unwrap_err();
        assert!(e.contains("[1, 3]"), "{e}");
    }

    #[test]
    fn a_version_without_tests_has_no_goldens_and_bad_files_are_named() {
        let d = tempfile::tempdir().unwrap();
        assert!(load(d.path()).unwrap().is_empty());
        std::fs::create_dir(d.path().join("tests")).unwrap();
        std::fs::write(d.path().join("tests/a.json"), GOLDEN).unwrap();
        std::fs::write(d.path().join("tests/notes.txt"), "not a golden").unwrap();
        assert_eq!(load(d.path()).unwrap().len(), 1);
        std::fs::write(d.path().join("tests/b.json"), r#"{"request": {}}"#).unwrap();
        let e = load(d.path()).unwrap_err();
        assert!(e.starts_with("tests/b.json"), "{e}");
    }
}
