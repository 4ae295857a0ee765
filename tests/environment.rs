//! The tests that change the process's environment (`HOME`, `KERAS_HOME`,
//! `RESNET_TRANSFER_CACHE`) to check where the crate looks by default, as Keras and a user's
//! shell would point it. They live in their own test binary: setting a variable while another
//! thread reads the environment (every test that starts a process does) is undefined behaviour,
//! so the rest of the tests (`tests/it/`) never change it.

// Only the fixtures' layout is needed here, not the download server the other binary uses.
#[allow(dead_code)]
#[path = "it/common/cifar.rs"]
mod cifar;

use std::path::Path;

use cifar::{check, copy_dir, fixtures};
use resnet_transfer::Error;
use resnet_transfer::data::Cifar10;

/// Held by every test of this binary while it points the variables at folders of its own, which
/// the others must not see meanwhile.
static SEARCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn search_lock() -> std::sync::MutexGuard<'static, ()> {
    SEARCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets environment variables until dropped, then puts the old values back.
struct EnvVars(Vec<(&'static str, Option<std::ffi::OsString>)>);

impl EnvVars {
    fn set(vars: &[(&'static str, &Path)]) -> Self {
        let old = vars
            .iter()
            .map(|(name, _)| (*name, std::env::var_os(name)))
            .collect();
        for (name, value) in vars {
            // SAFETY: the tests that read these variables hold `search_lock()` meanwhile.
            unsafe { std::env::set_var(name, value) };
        }
        Self(old)
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for (name, value) in &self.0 {
            // SAFETY: as in `set`.
            unsafe {
                match value {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
        }
    }
}

#[test]
fn finds_what_keras_downloaded_and_says_where_to_put_it_offline() {
    let _search = search_lock();
    let home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let _env = EnvVars::set(&[
        ("HOME", home.path()),
        ("RESNET_TRANSFER_CACHE", cache.path()),
    ]);
    let err = Cifar10::find_or_download(None, None).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::NotFound { .. }), "{message}");
    assert!(
        message.contains(".keras") && message.contains("cifar-10-binary.tar.gz"),
        "{message}"
    );

    copy_dir(
        &fixtures().join("cifar-10-batches-py"),
        &home.path().join(".keras/datasets/cifar-10-batches-py"),
    );
    let cifar = Cifar10::find_or_download(None, None).unwrap();
    check(&cifar);
    assert!(cifar.source.starts_with(home.path().join(".keras")));
}

#[test]
fn finds_what_keras_3_downloaded_under_keras_home() {
    let _search = search_lock();
    let home = tempfile::tempdir().unwrap();
    let keras_home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let _env = EnvVars::set(&[
        ("HOME", home.path()),
        ("KERAS_HOME", keras_home.path()),
        ("RESNET_TRANSFER_CACHE", cache.path()),
    ]);
    // Keras 3 under ~/.keras is not where Keras looks when KERAS_HOME is set.
    let keras3 = "datasets/cifar-10-batches-py-target/cifar-10-batches-py";
    copy_dir(
        &fixtures().join("cifar-10-batches-py"),
        &home.path().join(".keras").join(keras3),
    );
    let err = Cifar10::find_or_download(None, None).unwrap_err();
    assert!(
        err.to_string()
            .contains(&keras_home.path().display().to_string()),
        "{err}"
    );
    copy_dir(
        &fixtures().join("cifar-10-batches-py"),
        &keras_home.path().join(keras3),
    );
    let cifar = Cifar10::find_or_download(None, None).unwrap();
    check(&cifar);
    assert_eq!(cifar.source, keras_home.path().join(keras3));

    // Without KERAS_HOME, Keras 3's folder under ~/.keras.
    // SAFETY: this test holds `search_lock()`, as every test that reads the variable does.
    unsafe { std::env::remove_var("KERAS_HOME") };
    let cifar = Cifar10::find_or_download(None, None).unwrap();
    assert_eq!(cifar.source, home.path().join(".keras").join(keras3));
}

#[test]
fn catalog_downloads_verify_sha256() {
    use resnet_transfer::weights::catalog::{CATALOG, WeightsEntry, entry};

    let bytes = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/zoo-v1.onnx"),
    )
    .unwrap();
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/zoo-v1.onnx",
        server.server_addr().to_ip().unwrap()
    );
    let body = bytes.clone();
    let handle = std::thread::spawn(move || {
        for _ in 0..3 {
            if let Ok(Some(request)) = server.recv_timeout(std::time::Duration::from_secs(30)) {
                let _ = request.respond(tiny_http::Response::from_data(body.clone()));
            }
        }
    });
    let sha = {
        use sha2::{Digest, Sha256};
        Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let tmp = tempfile::tempdir().unwrap();
    let _search = search_lock();
    let _env = EnvVars::set(&[("RESNET_TRANSFER_CACHE", tmp.path())]);
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let good = WeightsEntry {
        name: "test",
        file: "zoo.onnx",
        url: Some(leak(url)),
        sha256: Some(leak(sha)),
        ..CATALOG[0]
    };
    let bad = WeightsEntry {
        sha256: Some("00"),
        file: "bad.onnx",
        ..good
    };
    let err = bad.locate(&[], true, false).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Checksum {
                algorithm: "sha256",
                ..
            }
        ),
        "{err}"
    );
    // The message names the file, what was expected, what came and from where, and what to do.
    let message = err.to_string();
    for part in [
        "bad.onnx",
        "expected 00",
        good.sha256.unwrap(),
        good.url.unwrap(),
        "by hand",
    ] {
        assert!(message.contains(part), "`{part}` missing from: {message}");
    }
    let path = good.locate(&[], true, false).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    // Another file under a catalog name is refused offline, naming what to do, and replaced by
    // the right one when downloads are allowed.
    std::fs::write(&path, &bytes[..100]).unwrap();
    let message = good.locate(&[], false, false).unwrap_err().to_string();
    assert!(message.contains("Delete it"), "{message}");
    let again = good.locate(&[], true, false).unwrap();
    assert_eq!(std::fs::read(&again).unwrap(), bytes);
    assert!(!tmp.path().join("weights/bad.onnx").exists());
    handle.join().unwrap();

    // Entries without a URL say which script makes them and where to put the file.
    let keras = entry("keras-resnet50").unwrap();
    let message = keras.locate(&[], true, false).unwrap_err().to_string();
    assert!(message.contains("export_keras_resnet50.py"), "{message}");
    assert_eq!(entry("resnet50-v1-12").unwrap().depth, 50);
}
