//! Installing on the device: what an earlier run left is kept or resumed,
//! files shared with an installed version are copied rather than fetched,
//! an installed version is verified rather than fetched again, and files
//! the version does not sign never reach the installed folder.

use nusa_model_dist::{ModelError, Outcome};

use crate::http::{self, Server};
use crate::{files, tree, Fixture, CONFIG, MODEL};

fn outcome<'a>(report: &'a nusa_model_dist::FetchReport, path: &str) -> &'a Outcome {
    &report
        .files
        .iter()
        .find(|f| f.path == path)
        .unwrap()
        .outcome
}

/// Over HTTP: a model file left half-downloaded is resumed with a Range
/// request from its end; a file already complete in staging is not
/// requested at all.
#[tokio::test]
async fn an_interrupted_download_resumes_over_http() {
    let fx = Fixture::new().await;
    let model: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    fx.publish(
        "big",
        "3",
        &[("model.onnx", &model), ("config.toml", CONFIG)],
    )
    .await;
    let staging = fx.staging("big", "3");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), &model[..70_000]).unwrap();
    std::fs::write(staging.join("config.toml"), CONFIG).unwrap();

    let server = Server::start(fx.repo.clone(), None).await;
    let client = http::client(&fx, &server).await.unwrap();
    let report = client.fetch_version("big", "3", &fx.dest).await.unwrap();

    assert_eq!(
        outcome(&report, "model.onnx"),
        &Outcome::Resumed {
            from: 70_000,
            bytes: 130_000
        }
    );
    assert_eq!(outcome(&report, "config.toml"), &Outcome::Kept);
    assert_eq!(server.requests_for("model.onnx"), ["bytes=70000-199999"]);
    assert!(server.requests_for("config.toml").is_empty());
    assert_eq!(
        std::fs::read(fx.installed("big", "3").join("model.onnx")).unwrap(),
        model
    );
}

/// A partial file whose kept prefix is wrong fails the whole-file check
/// after resuming; it is then fetched whole once, and installs correctly.
#[tokio::test]
async fn a_resumed_file_with_a_bad_prefix_is_fetched_again() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    let staging = fx.staging("m", "1");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join("model.onnx"), b"XXXX").unwrap();

    let client = fx.client().await.unwrap();
    let report = client.fetch_version("m", "1", &fx.dest).await.unwrap();
    assert_eq!(
        outcome(&report, "model.onnx"),
        &Outcome::Downloaded {
            bytes: MODEL.len() as u64
        }
    );
    assert_eq!(
        std::fs::read(fx.installed("m", "1").join("model.onnx")).unwrap(),
        MODEL
    );
}

/// A new version sharing files with an installed one copies them (after
/// checking their sha256) instead of fetching; a second fetch of an
/// installed version verifies it in place and fetches nothing; a damaged
/// installed version is reported, not silently kept.
#[tokio::test]
async fn shared_files_are_copied_and_installed_versions_are_not_refetched() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    let mut v2 = files();
    v2[0] = ("model.onnx", b"onnx model bytes, version two");
    fx.publish("m", "2", &v2).await;

    let client = fx.client().await.unwrap();
    client.fetch_version("m", "1", &fx.dest).await.unwrap();
    let report = client.fetch_version("m", "2", &fx.dest).await.unwrap();
    let from_v1 = fx.installed("m", "1");
    assert_eq!(
        outcome(&report, "config.toml"),
        &Outcome::Copied {
            from: from_v1.join("config.toml")
        }
    );
    assert_eq!(
        outcome(&report, "tests/case-1.json"),
        &Outcome::Copied {
            from: from_v1.join("tests/case-1.json")
        }
    );
    assert!(matches!(
        outcome(&report, "model.onnx"),
        Outcome::Downloaded { .. }
    ));

    let again = client.fetch_version("m", "2", &fx.dest).await.unwrap();
    assert!(again.already_installed);
    assert_eq!(again.downloaded_bytes(), 0);

    std::fs::write(fx.installed("m", "1").join("config.toml"), b"edited").unwrap();
    let err = client.fetch_version("m", "1", &fx.dest).await.unwrap_err();
    assert!(
        matches!(err, ModelError::DestinationConflict { .. }),
        "{err}"
    );
}

/// Files in staging that the version does not sign (left over, or planted
/// next to the model) are removed before the folder is installed.
#[tokio::test]
async fn unsigned_files_in_staging_never_reach_the_installed_folder() {
    let fx = Fixture::new().await;
    fx.publish("m", "1", &files()).await;
    let staging = fx.staging("m", "1");
    std::fs::create_dir_all(staging.join("tests")).unwrap();
    std::fs::create_dir_all(staging.join("plugins")).unwrap();
    std::fs::write(staging.join("libevil.so"), b"\x7fELF").unwrap();
    std::fs::write(staging.join("tests/planted.json"), b"{}").unwrap();
    std::fs::write(staging.join("plugins/x.so"), b"\x7fELF").unwrap();

    let client = fx.client().await.unwrap();
    client.fetch_version("m", "1", &fx.dest).await.unwrap();
    let names: Vec<String> = tree(&fx.installed("m", "1"))
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert_eq!(
        names,
        [
            "config.toml",
            "manifest.json",
            "model.onnx",
            "tests/case-1.json"
        ]
    );
}
