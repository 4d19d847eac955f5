//! The bundled demo model, embedded in the binary so that `nusad` with no
//! model repository configured serves something real.

use std::path::{Path, PathBuf};

pub const DEMO_MODEL_NAME: &str = "tiny-cnn";
const MODEL: &[u8] = include_bytes!("../demo/tiny-cnn/1/model.onnx");
const CONFIG: &[u8] = include_bytes!("../demo/tiny-cnn/config.toml");

/// Writes the demo repository under `data_dir/demo-models` (rewriting files
/// whose content differs) and returns its root.
pub fn materialize_demo(data_dir: &Path) -> std::io::Result<PathBuf> {
    let root = data_dir.join("demo-models");
    let model_dir = root.join(DEMO_MODEL_NAME);
    std::fs::create_dir_all(model_dir.join("1"))?;
    write_if_changed(&model_dir.join("1/model.onnx"), MODEL)?;
    write_if_changed(&model_dir.join("config.toml"), CONFIG)?;
    Ok(root)
}

fn write_if_changed(path: &Path, content: &[u8]) -> std::io::Result<()> {
    let same = std::fs::metadata(path)
        .map(|m| m.len() == content.len() as u64)
        .unwrap_or(false)
        && std::fs::read(path).map(|c| c == content).unwrap_or(false);
    if same {
        return Ok(());
    }
    // Write beside and rename, so a reader never sees half a model.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content)?;
    std::fs::rename(&tmp, path)
}
