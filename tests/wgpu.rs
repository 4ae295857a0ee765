//! The learner on wgpu and on Vulkan, in a test process of its own. In the shared test process
//! (`tests/it/`) it failed inside cubecl in 4 of 7 full runs on the software Vulkan driver ("the
//! bytes were never written", then a host read of a file that was gone), each time with other
//! tests' work beside it; cargo runs test binaries one after another, so here nothing else runs
//! (the two tests below take turns under the generator's lock).

#[allow(dead_code)]
#[path = "it/common/mod.rs"]
mod common;

use common::rng_lock;
use common::train::{colours, device, learner, model};
use resnet_transfer::BackendKind;
use resnet_transfer::train::TwoPhaseConfig;

/// The learner on wgpu (a GPU, or in CI the software Vulkan driver) trains as it does on the
/// CPU: see [`trains_as_on_the_cpu`].
#[test]
fn the_learner_on_wgpu_trains_as_on_the_cpu() {
    trains_as_on_the_cpu(BackendKind::Wgpu);
}

/// The learner on Vulkan, its kernels compiled to SPIR-V (a GPU, or in CI the software Vulkan
/// driver), trains as it does on the CPU.
#[cfg(feature = "vulkan")]
#[test]
fn the_learner_on_vulkan_trains_as_on_the_cpu() {
    trains_as_on_the_cpu(BackendKind::Vulkan);
}

/// The learner on `kind` trains as it does on the CPU: both phases (the head on the backbone's
/// features, then full steps through the released model) give ndarray's history within float
/// tolerance. Dropout is off: each backend draws its own masks.
fn trains_as_on_the_cpu(kind: BackendKind) {
    if common::skips(kind) {
        return;
    }
    let _rng = rng_lock();
    let (train, valid) = (colours(4, 1), colours(2, 2));
    let start = model(0.0);
    let config = TwoPhaseConfig::new()
        .with_phase1_epochs(2)
        .with_phase2_epochs(1)
        .with_dropout(0.0)
        .with_phase2_lr(1e-3);
    let (_, cpu) = learner(config.clone())
        .fit(start.clone(), &train, &valid, &device())
        .unwrap();
    let gpu_device = resnet_transfer::device::training_device(kind.name()).unwrap();
    // The learner runs on a worker of rayon's pool, whose panic message libtest does not
    // capture: name it here.
    let fit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        learner(config).fit(start, &train, &valid, &gpu_device)
    }));
    let (trained, gpu) = match fit {
        Ok(result) => result.unwrap(),
        Err(payload) => {
            let message = (payload.downcast_ref::<String>().cloned())
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()));
            panic!("the fit on {kind} panicked: {message:?}");
        }
    };
    assert_eq!(cpu.epochs.len(), 3);
    assert_eq!(gpu.epochs.len(), 3);
    for (a, b) in cpu.epochs.iter().zip(&gpu.epochs) {
        eprintln!("epoch {}: ndarray {a:?}\n         {kind} {b:?}", a.epoch);
        assert_eq!((a.epoch, a.phase), (b.epoch, b.phase));
        let close = |x: f64, y: f64| (x - y).abs() <= 1e-3 * x.abs().max(1.0);
        assert!(close(a.train_loss, b.train_loss), "train loss: {a:?} {b:?}");
        let (va, vb) = (a.valid_loss.unwrap(), b.valid_loss.unwrap());
        assert!(close(va, vb), "valid loss: {a:?} {b:?}");
    }
    assert!(
        gpu.epochs[2].train_loss < gpu.epochs[0].train_loss,
        "it learns: {gpu:?}"
    );
    // The trained model stays on the GPU device.
    let weight = trained.head.as_ref().unwrap().linear.weight.val();
    assert!(!resnet_transfer::device::is_host(&weight.device()));
}
