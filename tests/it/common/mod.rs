//! Helpers shared by the integration tests: the random generator's lock, the examples as a user
//! runs them, and the fixtures they need.

pub mod cifar;
pub mod model;
pub mod train;

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// Builds an example with this test's own features, so cargo finds it built already (`cargo test`
/// builds the examples) instead of compiling Burn again for another feature set.
pub fn example(name: &str) -> PathBuf {
    let features: Vec<&str> = resnet_transfer::BackendKind::compiled()
        .into_iter()
        .map(|kind| kind.name())
        .collect();
    let status = std::process::Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--example",
            name,
            "--no-default-features",
        ])
        .args(["--features", &features.join(",")])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success());
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

/// A narrow torchvision-style ResNet export with seeded weights (`tests/fixtures/make_onnx.py`).
pub fn weights() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/onnx/torch-bn.onnx")
}

/// Burn's random generator is per-backend state that every thread of this test binary shares: a
/// test that seeds it and then draws from it (weights, dropout, images) holds this lock
/// meanwhile, so that what it draws does not depend on what the other tests draw. Every test
/// that runs wgpu in this process holds it too: two tests' wgpu work at once failed in cubecl
/// ("the bytes were never written"), in 4 of 7 full runs on lavapipe.
pub fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());
    RNG.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Whether the tests leave `kind` out: the backends that need a GPU or a software Vulkan driver
/// (wgpu, vulkan) when `RESNET_TEST_SKIP_WGPU` is set, on a machine with neither. CI never sets it:
/// there wgpu runs on the software Vulkan driver.
pub fn skips(kind: resnet_transfer::BackendKind) -> bool {
    use resnet_transfer::BackendKind;
    matches!(kind, BackendKind::Wgpu | BackendKind::Vulkan)
        && std::env::var_os("RESNET_TEST_SKIP_WGPU").is_some()
}

/// A stand-in for ImageNet weights that learns colour classes quickly: a seeded ResNet18 of width
/// 8, saved as a model (`NAME.bpk` + `NAME.json`) in `dir`; `--weights` takes its path.
pub fn learnable_weights(dir: &Path) -> PathBuf {
    use resnet_transfer::data::Preprocess;
    use resnet_transfer::weights::{ModelCard, SavedModel};
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let _rng = rng_lock();
    device.seed(7);
    let config = resnet_transfer::ResNetConfig::resnet18(1000).with_width(8);
    let card = ModelCard {
        config: config.clone(),
        preprocess: Preprocess::Torch,
        input_size: 32,
        class_names: Vec::new(),
        source: "a seeded ResNet18 of width 8".into(),
    };
    let path = dir.join("resnet18-w8");
    let model = config.init(&device).unwrap();
    SavedModel { model, card }.save(&path).unwrap();
    path
}

/// CIFAR-10 binary files of `per_file` colour images each (class = tint), so the main job has
/// data to read.
pub fn write_cifar(dir: &Path, per_file: usize) {
    let dir = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = StdRng::seed_from_u64(9);
    for name in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ] {
        let mut bytes = Vec::new();
        for i in 0..per_file {
            let label = (i % 10) as u8;
            bytes.push(label);
            for c in 0..3 {
                let base = (label as usize * 25 + c * 80) % 256;
                bytes.extend((0..1024).map(|_| ((base + rng.random_range(0..30)) % 256) as u8));
            }
        }
        std::fs::write(dir.join(format!("{name}.bin")), bytes).unwrap();
    }
}

/// The Python that runs onnxruntime: `RESNET_TRANSFER_PYTHON` (CI installs one in a venv and sets
/// it), else `python3` if it has `onnxruntime`, `onnx` and `numpy`; without either `None`, with a
/// message, except under CI, where it fails.
pub fn onnxruntime_python() -> Option<PathBuf> {
    let works = |python: &Path| {
        Command::new(python)
            .args(["-c", "import onnxruntime, onnx, numpy"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if let Some(python) = std::env::var_os("RESNET_TRANSFER_PYTHON") {
        let python = PathBuf::from(python);
        assert!(
            works(&python),
            "RESNET_TRANSFER_PYTHON={} cannot import onnxruntime, onnx and numpy",
            python.display()
        );
        return Some(python);
    }
    let python = PathBuf::from("python3");
    if works(&python) {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must check exports in onnxruntime: set RESNET_TRANSFER_PYTHON"
    );
    eprintln!("onnxruntime not found (set RESNET_TRANSFER_PYTHON): runtime check skipped");
    None
}

/// Runs a command to its end, asserting success; returns its standard output.
pub fn run_ok(cmd: &mut std::process::Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One epoch of a history without its wall-clock time: epoch, phase, learning rate, validation
/// loss and accuracy.
pub type Epoch = (u64, u64, f64, f64, f64);

/// A run folder's history, epoch by epoch, and the restored epochs.
pub fn history_of(run: &Path) -> (Vec<Epoch>, serde_json::Value) {
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("history.json")).unwrap()).unwrap();
    let epochs = history["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["epoch"].as_u64().unwrap(),
                e["phase"].as_u64().unwrap(),
                e["lr"].as_f64().unwrap(),
                e["valid_loss"].as_f64().unwrap(),
                e["valid_accuracy"].as_f64().unwrap(),
            )
        })
        .collect();
    (epochs, history["restored"].clone())
}

/// Asserts two histories agree: the same epochs, phases and rates, losses within float noise.
pub fn assert_same_history(a: &[(u64, u64, f64, f64, f64)], b: &[(u64, u64, f64, f64, f64)]) {
    assert_eq!(a.len(), b.len(), "{a:?}\n{b:?}");
    for (x, y) in a.iter().zip(b) {
        assert_eq!((x.0, x.1), (y.0, y.1));
        assert!(
            (x.2 - y.2).abs() <= 1e-12 * x.2.abs(),
            "rates {x:?} vs {y:?}"
        );
        assert!(
            (x.3 - y.3).abs() <= 1e-4 * x.3.abs().max(1.0),
            "{x:?} vs {y:?}"
        );
        assert!((x.4 - y.4).abs() <= 0.05, "{x:?} vs {y:?}");
    }
}
