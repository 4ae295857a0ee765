//! Helpers of the model tests (`tests/it/model.rs`, `tests/it/fast_path.rs`).

use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Distribution, Int, Tensor, TensorData};
use resnet_transfer::{Device, ResNet, ResNetConfig};

pub fn cpu() -> Device {
    resnet_transfer::device::device("ndarray").unwrap()
}

/// Takes [`rng_lock`](super::rng_lock) and seeds both CPU backends: held while a test draws.
pub fn seeded(seed: u64) -> std::sync::MutexGuard<'static, ()> {
    let guard = super::rng_lock();
    for name in ["ndarray", "flex"] {
        resnet_transfer::device::device(name).unwrap().seed(seed);
    }
    guard
}

pub fn train_step(model: ResNet, device: &Device) -> ResNet {
    let images = Tensor::<4>::random([4, 3, 32, 32], Distribution::Normal(0.0, 1.0), device);
    let targets = Tensor::<1, Int>::from_data(TensorData::from([0i64, 1, 2, 3]), device);
    let logits = model.forward(images);
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(logits, targets);
    let grads = GradientsParams::from_grads(loss.backward(), &model);
    let mut optim = AdamConfig::new().init();
    optim.step(1e-2, model, grads)
}

pub fn narrow_model(device: &Device) -> ResNet {
    ResNetConfig::resnet50(4)
        .with_width(4)
        .with_dropout(0.0)
        .init(device)
        .unwrap()
}

/// A narrow model on `backend`'s training device after a few steps at a large rate, so that its
/// BatchNorm statistics, gammas and betas are not the trivial ones.
pub fn trained_narrow_model(backend: &str) -> (Device, ResNet) {
    let device = resnet_transfer::device::device(backend).unwrap().autodiff();
    let model = (0..3).fold(narrow_model(&device), |m, _| train_step(m, &device));
    (device, model)
}

pub fn floats<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

pub fn max_relative(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}
