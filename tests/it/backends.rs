//! Every compiled backend runs the same model to the same numbers: forward logits within 1e-4
//! of ndarray's (relative to the largest), and one training step giving the same update.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::{GradientsParams, SgdConfig};
use burn::tensor::{Device, Distribution, Int, Tensor, TensorData};
use resnet_transfer::{BackendKind, BatchNormMode, ResNet, ResNetConfig};

/// Every compiled backend but the reference. wgpu and vulkan are compiled in only on request
/// (`--features wgpu`, `--features wgpu,vulkan`) and then always tested: on a GPU, or on a CPU
/// through a software Vulkan driver (`mesa-vulkan-drivers`), as CI does for wgpu.
/// `RESNET_TEST_SKIP_WGPU=1` skips them on a machine with neither.
fn others() -> Vec<BackendKind> {
    BackendKind::compiled()
        .into_iter()
        .filter(|b| *b != BackendKind::NdArray && !crate::common::skips(*b))
        .collect()
}

fn reference() -> Device {
    BackendKind::NdArray.device().unwrap()
}

fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

fn relative(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-12);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

fn model(device: &Device) -> ResNet {
    device.seed(3);
    ResNetConfig::resnet50(10)
        .with_width(8)
        .with_dropout(0.0)
        .init(device)
        .unwrap()
}

fn inputs(device: &Device) -> (Tensor<4>, Tensor<1, Int>) {
    device.seed(4);
    let x = Tensor::<4>::random([4, 3, 64, 64], Distribution::Normal(0.0, 1.0), device);
    let y = Tensor::<1, Int>::from_data(TensorData::from([1i64, 3, 5, 7]), device);
    (x, y)
}

#[test]
fn forward_logits_match_ndarray() {
    let _rng = crate::common::rng_lock();
    let base = reference();
    let m = model(&base).valid();
    let (x, _) = inputs(&base);
    let want = values(m.forward(x.clone()));
    for kind in others() {
        let device = kind.device().unwrap();
        let got = values(
            m.clone()
                .to_device(&device)
                .forward(x.clone().to_device(&device)),
        );
        let err = relative(&got, &want);
        eprintln!("{kind}: forward relative error {err:e}");
        assert!(err < 1e-4, "{kind}: {err}");
    }
}

/// One SGD step, BatchNorm in inference mode as the learner's phase 2 runs it (batch
/// statistics of 4 images are too ill-conditioned to compare backends on); returns the loss and the updated stem and head.
/// SGD's update is the gradient itself (Adam's first step is about lr times its sign, which
/// flips for near-zero gradients), so this compares the backward passes.
fn step(m: ResNet, x: Tensor<4>, y: Tensor<1, Int>, device: &Device) -> (f32, Vec<f32>, Vec<f32>) {
    let m = m
        .fork(device)
        .train()
        .unfreeze_all(BatchNormMode::Inference);
    let (x, y) = (x.to_device(device), y.to_device(device));
    let loss = CrossEntropyLossConfig::new()
        .init(device)
        .forward(m.forward(x), y);
    let value = values(loss.clone())[0];
    let grads = GradientsParams::from_grads(loss.backward(), &m);
    let m = SgdConfig::new().init().step(0.1, m, grads);
    let stem = values(m.stem.conv.conv.weight.val());
    let head = values(m.head.as_ref().unwrap().linear.weight.val());
    (value, stem, head)
}

#[test]
fn one_training_step_updates_alike() {
    let _rng = crate::common::rng_lock();
    let base = reference();
    let m = model(&base);
    let (x, y) = inputs(&base);
    let before = values(m.stem.conv.conv.weight.val());
    let (loss, stem, head) = step(m.clone(), x.clone(), y.clone(), &base.clone().autodiff());
    let update: Vec<f32> = stem.iter().zip(&before).map(|(a, b)| a - b).collect();
    assert!(
        update.iter().any(|u| u.abs() > 1e-6),
        "the step moved the stem"
    );
    for kind in others() {
        let device = kind.device().unwrap().autodiff();
        let (l, s, h) = step(m.clone(), x.clone(), y.clone(), &device);
        let their_update: Vec<f32> = s.iter().zip(&before).map(|(a, b)| a - b).collect();
        let (e_loss, e_update, e_head) = (
            (l - loss).abs() / loss.abs(),
            relative(&their_update, &update),
            relative(&h, &head),
        );
        eprintln!("{kind}: loss {e_loss:e}, stem update {e_update:e}, head {e_head:e}");
        assert!(
            e_loss < 1e-4 && e_head < 1e-4,
            "{kind}: loss {e_loss}, head {e_head}"
        );
        assert!(e_update < 1e-3, "{kind}: stem update differs by {e_update}");
    }
}
