//! The fast paths held to Burn's own layers: the channels-last units and their training
//! operations (outputs, every gradient, running statistics) on both CPU backends, the blocks and
//! the stem, and the folded inference model.

use crate::common::model::{
    cpu, floats, max_relative, narrow_model, seeded, train_step, trained_narrow_model,
};
use burn::module::Module;
use burn::tensor::activation::relu;
use burn::tensor::{Distribution, Tensor};
use resnet_transfer::model::{Block, ConvBn, Pooling, ResNet};
use resnet_transfer::{BatchNormMode, Error, ResNetConfig};

/// The channels-last fast path (one matrix product per convolution over the batch, BatchNorm
/// per column) against Burn's own `conv2d` + `BatchNorm`, for every kind of unit a ResNet50 has
/// (7x7 stride 2, 1x1, 3x3, 3x3 stride 2, 1x1 stride 2 shortcut, 3x3 on the 1x1 and 2x2 maps of
/// the last stages at 32x32), with BatchNorm in inference
/// and in training mode: outputs, gradients of input, weight, gamma and beta, and updated
/// statistics, on ndarray and flex.
#[test]
fn channels_last_units_match_burns_conv_and_batch_norm() {
    let _rng = seeded(6);
    for backend in ["ndarray", "flex"] {
        let (device, model) = trained_narrow_model(backend);
        // The same units with BatchNorm in inference mode while the convolutions learn (Keras's
        // fine-tuning): running statistics, but gradients through them.
        let keras = model.clone().unfreeze_all(BatchNormMode::Inference);
        let units = |model: &ResNet| {
            let stage2 = &model.stages[1].blocks[0];
            [
                ("stem 7x7/2", model.stem.conv.clone(), 3, 32),
                ("1x1", stage2.convs[0].clone(), 16, 8),
                ("3x3/2", stage2.convs[1].clone(), 8, 8),
                ("1x1 after", stage2.convs[2].clone(), 8, 4),
                ("shortcut 1x1/2", stage2.shortcut.clone().unwrap(), 16, 8),
                ("3x3", model.stages[0].blocks[1].convs[1].clone(), 4, 8),
                // Enough tiles (3 images of 10x10 tiles, the last partial) for the training
                // step's Winograd F(4x4, 3x3) on x86-64: forward and input gradient.
                (
                    "3x3 on 38x38",
                    model.stages[0].blocks[1].convs[1].clone(),
                    4,
                    38,
                ),
                // On a 1x1 map only the centre tap sees a pixel: the fast path multiplies it
                // alone.
                (
                    "3x3 on 1x1",
                    model.stages[0].blocks[1].convs[1].clone(),
                    4,
                    1,
                ),
                ("3x3/2 on 2x2", stage2.convs[1].clone(), 8, 2),
            ]
        };
        let nhwc = |x: Tensor<4>| x.permute([0, 2, 3, 1]);
        let nchw = |x: Tensor<4>| x.permute([0, 3, 1, 2]);
        // Output, input gradient, weight gradient and gamma gradient, plain or fast.
        // What follows the unit: nothing, a ReLU, or a shortcut added and then a ReLU (a
        // block's last unit), whose gradient then comes last.
        let run_then = |unit: &ConvBn,
                        x: &Tensor<4>,
                        weights: &Tensor<4>,
                        fast: bool,
                        with_relu: bool,
                        shortcut: Option<&Tensor<4>>| {
            let unit = unit.clone();
            let x = x.clone().require_grad();
            let s = shortcut.map(|s| s.clone().require_grad());
            let y = match (fast, with_relu, s.clone()) {
                (true, false, _) => nchw(unit.forward_nhwc(nhwc(x.clone()))),
                (true, true, None) => nchw(unit.forward_nhwc_relu(nhwc(x.clone()))),
                (true, true, Some(s)) => nchw(unit.forward_nhwc_add_relu(nhwc(x.clone()), nhwc(s))),
                (false, false, _) => unit.forward(x.clone()),
                (false, true, None) => relu(unit.forward(x.clone())),
                (false, true, Some(s)) => relu(unit.forward(x.clone()) + s),
            };
            let grads = (y.clone() * weights.clone()).sum().backward();
            let conv_grad = unit.conv.weight.grad(&grads).unwrap();
            let gamma_grad = unit.bn.gamma.grad(&grads).unwrap();
            let beta_grad = unit.bn.beta.grad(&grads).unwrap();
            let mut parts = vec![
                floats(y.inner()),
                floats(x.grad(&grads).unwrap()),
                floats(conv_grad),
                floats(gamma_grad),
                floats(beta_grad),
            ];
            parts.extend(s.map(|s| floats(s.grad(&grads).unwrap())));
            parts
        };
        let run = |unit: &ConvBn, x: &Tensor<4>, weights: &Tensor<4>, fast: bool| {
            run_then(unit, x, weights, fast, false, None)
        };
        let parts = [
            "output",
            "input grad",
            "weight grad",
            "gamma grad",
            "beta grad",
        ];
        for ((name, unit, channels, size), (_, keras_unit, ..)) in
            units(&model).into_iter().zip(units(&keras))
        {
            let x = Tensor::<4>::random(
                [3, channels, size, size],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            // Inference mode, on the inner device.
            let (plain, inner_x) = (unit.clone().valid(), x.clone().inner());
            let reference = plain.forward(inner_x.clone());
            let out_dims = reference.dims();
            let want = floats(reference);
            let got = floats(nchw(plain.forward_nhwc(nhwc(inner_x))));
            let err = max_relative(&got, &want);
            assert!(err < 1e-5, "{backend} {name}, inference: {err}");

            // Inference-mode BatchNorm, convolution learning: same numbers and gradients.
            let weights = Tensor::<4>::random(out_dims, Distribution::Default, &device);
            let want = run(&keras_unit, &x, &weights, false);
            let got = run(&keras_unit, &x, &weights, true);
            for ((part, g), w) in parts.iter().zip(&got).zip(&want) {
                let err = max_relative(g, w);
                assert!(
                    err < 1e-4,
                    "{backend} {name}, inference-mode BatchNorm learning, {part}: {err}"
                );
            }

            // Training mode: batch statistics, gradients, running statistics.
            // Running statistics live in shared state that clones do not copy: the reference run
            // moves them from s0 to s1, then the fast run from s1 to s2. Both add momentum times the
            // same batch statistic, so s2 = (1 - m) s1 + (s1 - (1 - m) s0).
            let stats = || {
                [&unit.bn.running_mean, &unit.bn.running_var]
                    .map(|s| floats(s.value_sync().inner()))
            };
            let s0 = stats();
            let want = run(&unit, &x, &weights, false);
            let s1 = stats();
            let got = run(&unit, &x, &weights, true);
            let s2 = stats();
            for ((part, g), w) in parts.iter().zip(&got).zip(&want) {
                let err = max_relative(g, w);
                assert!(err < 1e-4, "{backend} {name}, training, {part}: {err}");
            }
            let keep = 1.0 - unit.bn.momentum as f32;
            for (k, stat) in ["running mean", "running var"].iter().enumerate() {
                let expected: Vec<f32> = s0[k]
                    .iter()
                    .zip(&s1[k])
                    .map(|(a, b)| keep * b + (b - keep * a))
                    .collect();
                assert_ne!(
                    s1[k], s0[k],
                    "{backend} {name}: the reference run updated the {stat}"
                );
                let err = max_relative(&s2[k], &expected);
                assert!(err < 1e-4, "{backend} {name}, training, {stat}: {err}");
            }

            // Training mode with the ReLU that follows most units (one operation on flex).
            let want = run_then(&unit, &x, &weights, false, true, None);
            let got = run_then(&unit, &x, &weights, true, true, None);
            for ((part, g), w) in parts.iter().zip(&got).zip(&want) {
                let err = max_relative(g, w);
                assert!(
                    err < 1e-4,
                    "{backend} {name}, training + ReLU, {part}: {err}"
                );
            }

            // A block's last unit: the shortcut added before the ReLU (one operation on flex).
            let shortcut = Tensor::<4>::random(out_dims, Distribution::Normal(0.0, 1.0), &device);
            let run_add = |fast| run_then(&unit, &x, &weights, fast, true, Some(&shortcut));
            let (want, got) = (run_add(false), run_add(true));
            for ((part, g), w) in parts.iter().chain(&["shortcut grad"]).zip(&got).zip(&want) {
                let err = max_relative(g, w);
                assert!(
                    err < 1e-4,
                    "{backend} {name}, training + shortcut + ReLU, {part}: {err}"
                );
            }
        }
    }
}

/// A block as Burn's own layers compute it, channels-first: the reference for the fast path.
fn reference_block(block: &Block, x: Tensor<4>) -> Tensor<4> {
    let identity = match &block.shortcut {
        Some(shortcut) => shortcut.forward(x.clone()),
        None => x.clone(),
    };
    let last = block.convs.len() - 1;
    let mut y = x;
    for (i, unit) in block.convs.iter().enumerate() {
        y = unit.forward(y);
        if i < last {
            y = relu(y);
        }
    }
    relu(y + identity)
}

#[test]
fn blocks_match_burns_layers_in_inference_and_when_frozen() {
    let _rng = seeded(7);
    // Inference and the frozen backbone of phase 1, channels-last, against Burn's conv2d,
    // BatchNorm and relu composed channels-first.
    for name in ["ndarray", "flex"] {
        let (device, model) = trained_narrow_model(name);
        let frozen = model.clone().freeze_backbone();
        let valid = model.valid();
        let cases = [
            ("stage 1 first block (shortcut)", 0, 0, 4, 8),
            ("stage 1 identity block", 0, 1, 16, 8),
            ("stage 2 first block (stride 2)", 1, 0, 16, 8),
            ("stage 3 identity block", 2, 1, 64, 2),
        ];
        for (case, stage, block, channels, size) in cases {
            let x = Tensor::<4>::random(
                [3, channels, size, size],
                Distribution::Normal(0.0, 1.0),
                &device,
            );
            let inner = x.clone().inner();
            let b = &valid.stages[stage].blocks[block];
            let want = floats(reference_block(b, inner.clone()));
            let got = floats(b.forward(inner));
            let err = max_relative(&got, &want);
            assert!(err < 1e-5, "{name}, {case}, inference: {err}");

            let b = &frozen.stages[stage].blocks[block];
            let want = floats(reference_block(b, x.clone()));
            let got = floats(b.forward(x));
            let err = max_relative(&got, &want);
            assert!(err < 1e-5, "{name}, {case}, frozen on autodiff: {err}");
        }
    }
}

/// The stem channels-last (windows of the padded images times the weight matrix, BatchNorm per
/// column, ReLU, the pool as the maximum of shifted views) against Burn's `conv2d`, `BatchNorm`
/// and `max_pool2d`: in inference, frozen, and learning in training mode (output, gradients of
/// the weight, gamma and beta, updated statistics), on ndarray and flex.
#[test]
fn stem_matches_burns_layers() {
    let _rng = seeded(8);
    for name in ["ndarray", "flex"] {
        let (device, model) = trained_narrow_model(name);
        let nchw = |x: Tensor<4>| x.permute([0, 3, 1, 2]);
        // Odd and even sides: the pool's last window covers padding on one side only.
        for size in [32, 17, 8] {
            let images =
                Tensor::<4>::random([3, 3, size, size], Distribution::Normal(0.0, 1.0), &device);
            let valid = model.clone().valid();
            let inner = images.clone().inner();
            let want = valid.stem.forward(inner.clone());
            assert!(floats(want.clone()).iter().any(|v| *v > 0.0));
            let err = max_relative(&floats(nchw(valid.stem.forward_nhwc(inner))), &floats(want));
            assert!(err < 1e-5, "{name} {size}x{size}, inference: {err}");

            let frozen = model.clone().freeze_backbone();
            let want = floats(frozen.stem.forward(images.clone()));
            let got = floats(nchw(frozen.stem.forward_nhwc(images.clone())));
            let err = max_relative(&got, &want);
            assert!(err < 1e-5, "{name} {size}x{size}, frozen: {err}");

            // Training mode. Each run moves the shared running statistics once (see
            // channels_last_units_match_burns_conv_and_batch_norm), so the second run's
            // statistics are compared as increments.
            let stem = &model.stem;
            let weights = Tensor::<4>::random(
                stem.forward(images.clone()).dims(),
                Distribution::Default,
                &device,
            );
            let run = |fast: bool| {
                let y = if fast {
                    nchw(stem.forward_nhwc(images.clone()))
                } else {
                    stem.forward(images.clone())
                };
                let grads = (y.clone() * weights.clone()).sum().backward();
                let unit = &stem.conv;
                [
                    floats(y.inner()),
                    floats(unit.conv.weight.grad(&grads).unwrap()),
                    floats(unit.bn.gamma.grad(&grads).unwrap()),
                    floats(unit.bn.beta.grad(&grads).unwrap()),
                ]
            };
            let mean = || floats(stem.conv.bn.running_mean.value_sync().inner());
            let m0 = mean();
            let want = run(false);
            let m1 = mean();
            let got = run(true);
            let m2 = mean();
            for (part, (g, w)) in ["output", "weight grad", "gamma grad", "beta grad"]
                .iter()
                .zip(got.iter().zip(&want))
            {
                let err = max_relative(g, w);
                assert!(err < 1e-4, "{name} {size}x{size}, training, {part}: {err}");
            }
            let keep = 1.0 - stem.conv.bn.momentum as f32;
            let expected: Vec<f32> = m0
                .iter()
                .zip(&m1)
                .map(|(a, b)| keep * b + (b - keep * a))
                .collect();
            let err = max_relative(&m2, &expected);
            assert!(err < 1e-4, "{name} {size}x{size}, running mean: {err}");
        }
    }
}

/// The folded inference path (`ResNet::folded`: BatchNorm in the weights, one product and one
/// epilogue per convolution, on host buffers) against the module in inference mode, for
/// bottleneck and basic blocks, Keras's layout (convolution biases, stride in the first 1x1)
/// and max pooling, at sizes whose maps end at 1x1 and at odd sizes whose padding differs, on
/// ndarray and flex, a batch shared between threads and one image alone.
#[test]
fn fused_model_matches_the_module() {
    let _rng = seeded(11);
    for backend in ["ndarray", "flex"] {
        let device = resnet_transfer::device::device(backend).unwrap().autodiff();
        let configs = [
            ("resnet50", ResNetConfig::resnet50(4)),
            (
                "keras resnet50, max pooling",
                ResNetConfig::keras_resnet50(4).with_pooling(Pooling::Max),
            ),
            ("resnet18", ResNetConfig::resnet18(4)),
        ];
        for (name, config) in configs {
            let model = config
                .with_width(4)
                .with_dropout(0.0)
                .init(&device)
                .unwrap();
            // Steps at a large rate: BatchNorm statistics, gammas and betas not the trivial ones.
            let model = (0..2).fold(model, |m, _| train_step(m, &device)).valid();
            let fused = model.folded().unwrap();
            // Three images: one share of the batch per thread; one: the products split.
            for (batch, size) in [(3, 32), (3, 17), (3, 8), (1, 32)] {
                let images = Tensor::<4>::random(
                    [batch, 3, size, size],
                    Distribution::Normal(0.0, 1.0),
                    &model.stem.conv.conv.weight.device(),
                );
                let want = floats(model.features(images.clone()));
                let got = floats(fused.features(images.clone()).unwrap());
                let err = max_relative(&got, &want);
                assert!(err < 1e-5, "{backend} {name} at {size}, features: {err}");
                let want = floats(model.forward(images.clone()));
                let got = floats(fused.forward(images).unwrap());
                let err = max_relative(&got, &want);
                assert!(err < 1e-5, "{backend} {name} at {size}, logits: {err}");
            }
        }
    }
    let model = narrow_model(&cpu());
    let grey = Tensor::<4>::zeros([1, 1, 32, 32], &cpu());
    match model.folded().unwrap().forward(grey) {
        Err(Error::ShapeMismatch { tensor, found, .. }) => {
            assert_eq!(tensor, "images");
            assert_eq!(found, vec![1, 1, 32, 32]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
}
