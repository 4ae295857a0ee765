//! ResNet50 at 32x32, batch 32 (CIFAR-10) and at 224x224, batch 8 (the fine-tuning guides' size),
//! on each compiled CPU backend: inference, a full training step (forward, backward, Adam) and a
//! head-only step with the backbone frozen; and a single photo at 224x224 (inference).
//!
//! `cargo bench --bench model` reports images per second under the ids
//! `model/<backend>/<infer|train|head>` (32x32), `model/<backend>/<case>-224`, and, for a single
//! photo's latency, `model/<backend>/infer-224-b1`.
//! `RESNET_BENCH_BACKENDS=flex,wgpu` picks the backends (default: the compiled CPU backends),
//! `RESNET_BENCH_SIZES=32` or `=224` one of the two shapes. Each iteration runs on a worker of
//! the CPU backends' thread pool, as the crate's own training and inference loops do
//! (`device::on_pool_worker`).
//!
//! Inference and the head-only step run as the crate runs them: on the CPU backends the frozen
//! network is folded (`ResNet::folded`) and the head-only step differentiates the head alone;
//! `model/<backend>/infer-module` times the module's own forward beside it.

use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::optim::GradientsParams;
use burn::tensor::{Device, Distribution, Int, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use resnet_transfer::device::on_pool_worker;
use resnet_transfer::model::Head;
use resnet_transfer::train::FusedAdamConfig;
use resnet_transfer::{BackendKind, FoldedResNet, ResNet, ResNetConfig};

/// (side, batch, id suffix) of each shape. The last, a single photo at 224x224, is a deployed
/// model's case: inference alone, its latency the time of one iteration.
const SHAPES: [(usize, usize, &str); 3] = [(32, 32, ""), (224, 8, "-224"), (224, 1, "-224-b1")];

fn shapes() -> Vec<(usize, usize, &'static str)> {
    let wanted = std::env::var("RESNET_BENCH_SIZES").unwrap_or_else(|_| "32,224".into());
    SHAPES
        .into_iter()
        .filter(|(side, _, _)| wanted.split(',').any(|w| w.trim() == side.to_string()))
        .collect()
}

fn backends() -> Vec<BackendKind> {
    match std::env::var("RESNET_BENCH_BACKENDS") {
        Ok(list) => list
            .split(',')
            .map(|name| name.parse().expect("RESNET_BENCH_BACKENDS: a backend name"))
            .collect(),
        Err(_) => BackendKind::compiled()
            .into_iter()
            .filter(|b| b.is_host())
            .collect(),
    }
}

fn batch(device: &Device, (side, n): (usize, usize)) -> (Tensor<4>, Tensor<1, Int>) {
    let images = Tensor::random([n, 3, side, side], Distribution::Normal(0.0, 1.0), device);
    let targets = Tensor::<1, Int>::arange(0..n as i64, device).remainder_scalar(10);
    (images, targets)
}

/// Runs `step` on a model that each iteration hands back, as training does.
fn train_loop(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: String,
    model: ResNet,
    device: &Device,
    shape: (usize, usize),
) {
    let (images, targets) = batch(device, shape);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut optim = FusedAdamConfig::new().init();
    let mut slot = Some(model);
    c.bench_function(id, |b| {
        b.iter(|| {
            on_pool_worker(|| {
                let model = slot
                    .take()
                    .expect("the model is handed back every iteration");
                let loss = loss_fn.forward(model.forward(images.clone()), targets.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                slot = Some(optim.step(1e-3, model, grads));
            })
        })
    });
}

/// The head-only step of phase 1 as the learner runs it on a CPU backend: the frozen backbone
/// folded and untracked, the head differentiated and stepped.
fn head_loop(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    id: String,
    model: &ResNet,
    device: &Device,
    shape: (usize, usize),
) {
    let (images, targets) = batch(device, shape);
    let loss_fn = CrossEntropyLossConfig::new().init(device);
    let mut optim = FusedAdamConfig::new().init();
    let backbone: FoldedResNet = model.folded().expect("a foldable ResNet");
    let mut slot: Option<Head> = model.head.clone();
    c.bench_function(id, |b| {
        b.iter(|| {
            on_pool_worker(|| {
                let head = slot
                    .take()
                    .expect("the head is handed back every iteration");
                let features = backbone.features(images.clone()).expect("images");
                let loss = loss_fn.forward(head.forward(features), targets.clone());
                let grads = GradientsParams::from_grads(loss.backward(), &head);
                slot = Some(optim.step(1e-3, head, grads));
            })
        })
    });
}

fn model_bench(c: &mut Criterion) {
    resnet_transfer::device::tune_host_allocator();
    let mut group = c.benchmark_group("model");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    for (side, n, suffix) in shapes() {
        group.throughput(Throughput::Elements(n as u64));
        let shape = (side, n);
        for kind in backends() {
            let device = kind.device().expect("a compiled backend");
            let model = ResNetConfig::resnet50(10).init(&device).unwrap().valid();
            let (images, _) = batch(&device, shape);
            let host = resnet_transfer::device::is_host(&device);
            if host {
                let fused = model.folded().expect("a foldable ResNet");
                group.bench_function(format!("{kind}/infer{suffix}"), |b| {
                    b.iter(|| on_pool_worker(|| fused.forward(images.clone()).unwrap().into_data()))
                });
            }
            let id = format!(
                "{kind}/{}{suffix}",
                if host { "infer-module" } else { "infer" }
            );
            // A single photo: the path a deployed model runs (folded on the CPU), nothing else.
            if !(n == 1 && host) {
                group.bench_function(id, |b| {
                    b.iter(|| on_pool_worker(|| model.forward(images.clone()).into_data()))
                });
            }
            if n == 1 {
                continue;
            }

            let train = device.autodiff();
            let model = ResNetConfig::resnet50(10).init(&train).unwrap();
            let id = format!("{kind}/train{suffix}");
            train_loop(&mut group, id, model.clone(), &train, shape);
            let frozen = model.freeze_backbone();
            let id = format!("{kind}/head{suffix}");
            if host {
                head_loop(&mut group, id, &frozen, &train, shape);
            } else {
                train_loop(&mut group, id, frozen, &train, shape);
            }
        }
    }
    group.finish();
}

criterion_group!(benches, model_bench);
criterion_main!(benches);
