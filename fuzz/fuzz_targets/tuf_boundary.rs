//! TUF metadata at our boundary: the release and model target name checks
//! (nusa-ota-tuf, nusa-model-dist), a persisted trusted root, targets
//! metadata as the client checks it (delegations refused, unsafe names
//! refused), and a model version's signed manifest.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nusa_model_dist::{check_file_path, check_model, parse_version, Manifest};

fuzz_target!(|data: &[u8]| {
    if let Ok(name) = std::str::from_utf8(data) {
        let _ = nusa_ota_tuf::fuzz_name(name);
        let _ = check_model(name);
        let _ = parse_version(name);
        let _ = check_file_path(name);
        if let Some(Ok((model, version, path))) = nusa_model_dist::fuzz_split_target(name) {
            // What it accepted is a name it would sign.
            assert!(check_model(&model).is_ok());
            assert_eq!(parse_version(&version.to_string()).ok(), Some(version));
            assert!(path == "manifest.json" || check_file_path(&path).is_ok());
        }
    }
    let _ = nusa_ota_tuf::fuzz_metadata(data);
    if let Ok(manifest) = serde_json::from_slice::<Manifest>(data) {
        let _ = manifest.provenance.check();
        let _ = manifest.encrypted("model.onnx");
        for f in &manifest.files {
            let _ = check_file_path(&f.path);
        }
    }
});
