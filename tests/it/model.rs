//! The ResNet family: shapes for every depth, parameter counts against the reference frameworks,
//! and freezing by stage tested on what an optimizer step really does.

use crate::common::model::{cpu, narrow_model, seeded, train_step};
use burn::module::Module;
use burn::tensor::{Distribution, Tensor};
use resnet_transfer::model::{DEPTHS, ResNet};
use resnet_transfer::{BatchNormMode, Device, Error, ResNetConfig};

#[test]
fn every_depth_gives_logits_and_features_at_32_and_224() {
    let _rng = seeded(1);
    let device = Device::flex();
    for depth in DEPTHS {
        let config = ResNetConfig::new(depth)
            .with_width(4)
            .with_num_classes(Some(10));
        let model = config.init(&device).unwrap();
        for size in [32, 224] {
            let images = Tensor::<4>::random([2, 3, size, size], Distribution::Default, &device);
            assert_eq!(
                model.forward(images.clone()).dims(),
                [2, 10],
                "depth {depth} at {size}"
            );
            let features = model.features(images);
            assert_eq!(
                features.dims(),
                [2, config.feature_dim()],
                "depth {depth} at {size}"
            );
        }
    }
}

#[test]
fn parameter_counts_match_torchvision_and_keras() {
    let device = cpu();
    let torchvision = ResNetConfig::resnet50(1000).init(&device).unwrap();
    assert_eq!(torchvision.param_counts().learnable, 25_557_032);
    let keras = ResNetConfig::keras_resnet50(1000).init(&device).unwrap();
    let counts = keras.param_counts();
    assert_eq!(counts.total(), 25_636_712);
    assert_eq!(counts.learnable, 25_583_592); // Keras's "trainable params"
    assert_eq!(counts.total(), keras.num_params());
    // torchvision's resnet18 has 11,689,512 parameters.
    let r18 = ResNetConfig::resnet18(1000).init(&device).unwrap();
    assert_eq!(r18.param_counts().learnable, 11_689_512);
}

#[test]
fn features_only_model_and_input_errors() {
    let _rng = seeded(8);
    let device = cpu();
    let model = ResNetConfig::resnet18(10)
        .with_width(4)
        .with_num_classes(None)
        .init(&device)
        .unwrap();
    assert_eq!(model.num_classes(), None);
    let images = Tensor::<4>::zeros([1, 3, 32, 32], &device);
    assert_eq!(model.forward(images).dims(), [1, 32]);
    let grey = Tensor::<4>::zeros([1, 1, 32, 32], &device);
    match model.try_forward(grey) {
        Err(Error::ShapeMismatch { tensor, found, .. }) => {
            assert_eq!(tensor, "images");
            assert_eq!(found, vec![1, 1, 32, 32]);
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }
    assert!(matches!(
        ResNetConfig::new(42).init(&device),
        Err(Error::InvalidConfig { field: "depth", .. })
    ));
}

/// A named snapshot of every float in the model: parameters and BatchNorm statistics.
fn snapshot(model: &ResNet) -> Vec<(String, Vec<f32>)> {
    let mut out = Vec::new();
    let stat = |t: Tensor<1>| t.into_data().try_to_vec::<f32>().unwrap();
    for (i, bn) in model.batch_norms().into_iter().enumerate() {
        out.push((
            format!("bn{i}.running_mean"),
            stat(bn.running_mean.value_sync()),
        ));
        out.push((
            format!("bn{i}.running_var"),
            stat(bn.running_var.value_sync()),
        ));
    }
    let mut push = |name: String, t: Vec<f32>| out.push((name, t));
    let unit = |u: &resnet_transfer::model::ConvBn| {
        vec![
            u.conv.weight.val().into_data().try_to_vec::<f32>().unwrap(),
            u.bn.gamma.val().into_data().try_to_vec::<f32>().unwrap(),
            u.bn.beta.val().into_data().try_to_vec::<f32>().unwrap(),
        ]
    };
    for (k, t) in unit(&model.stem.conv).into_iter().enumerate() {
        push(format!("stem.{k}"), t);
    }
    for (s, stage) in model.stages.iter().enumerate() {
        for (b, block) in stage.blocks.iter().enumerate() {
            for (c, u) in block.convs.iter().chain(&block.shortcut).enumerate() {
                for (k, t) in unit(u).into_iter().enumerate() {
                    push(format!("stage{}.block{b}.unit{c}.{k}", s + 1), t);
                }
            }
        }
    }
    let head = model.head.as_ref().unwrap();
    push(
        "head.weight".into(),
        head.linear.weight.val().into_data().try_to_vec().unwrap(),
    );
    out
}

/// One Adam step on a batch of random images, with a large learning rate so that every trainable
/// parameter visibly moves.
/// Which entries of the snapshot changed, by name prefix.
fn changed(before: &[(String, Vec<f32>)], after: &[(String, Vec<f32>)]) -> Vec<String> {
    before
        .iter()
        .zip(after)
        .filter(|(a, b)| {
            a.1.iter()
                .zip(&b.1)
                .any(|(x, y)| x.to_bits() != y.to_bits())
        })
        .map(|(a, _)| a.0.clone())
        .collect()
}

#[test]
fn frozen_backbone_is_bit_identical_and_head_moves() {
    let _rng = seeded(2);
    let device = cpu().autodiff();
    let model = narrow_model(&device).freeze_backbone();
    assert!(
        model
            .batch_norms()
            .iter()
            .all(|bn| !bn.training.is_enabled())
    );
    let before = snapshot(&model);
    let after = snapshot(&train_step(model, &device));
    assert_eq!(changed(&before, &after), vec!["head.weight".to_string()]);
}

#[test]
fn unfreeze_from_stage_4_moves_stage_4_and_head_only() {
    let _rng = seeded(3);
    let device = cpu().autodiff();
    let model = narrow_model(&device)
        .freeze_backbone()
        .unfreeze_from(4, BatchNormMode::Inference)
        .unwrap();
    let before = snapshot(&model);
    let after = snapshot(&train_step(model, &device));
    let moved = changed(&before, &after);
    // Every parameter of stage 4 and the head moved; nothing else did, and no statistic changed.
    let expected: Vec<String> = before
        .iter()
        .map(|e| e.0.clone())
        .filter(|n| n.starts_with("stage4.") || n == "head.weight")
        .collect();
    assert_eq!(moved, expected);
}

#[test]
fn unfreeze_all_with_batch_norm_training_updates_statistics() {
    let _rng = seeded(4);
    let device = cpu().autodiff();
    let model = narrow_model(&device)
        .freeze_backbone()
        .unfreeze_all(BatchNormMode::Training);
    assert!(
        model
            .batch_norms()
            .iter()
            .all(|bn| bn.training.is_enabled())
    );
    let before = snapshot(&model);
    let after = snapshot(&train_step(model, &device));
    let moved = changed(&before, &after);
    let still: Vec<&String> = before
        .iter()
        .map(|e| &e.0)
        .filter(|n| !moved.contains(n))
        .collect();
    assert!(
        still.is_empty(),
        "everything moves, statistics included; still: {still:?}"
    );
}

#[test]
fn unfreeze_all_with_batch_norm_inference_keeps_statistics() {
    let _rng = seeded(5);
    let device = cpu().autodiff();
    let model = narrow_model(&device).unfreeze_all(BatchNormMode::Inference);
    assert!(
        model
            .batch_norms()
            .iter()
            .all(|bn| !bn.training.is_enabled())
    );
    let before = snapshot(&model);
    let after = snapshot(&train_step(model, &device));
    let moved = changed(&before, &after);
    let params: Vec<String> = before
        .iter()
        .map(|e| e.0.clone())
        .filter(|n| !n.contains("running_"))
        .collect();
    assert_eq!(moved, params, "parameters move, statistics do not");
}

#[test]
fn unfreeze_from_rejects_a_missing_stage() {
    let model = narrow_model(&cpu());
    for stage in [0, 5] {
        match model.clone().unfreeze_from(stage, BatchNormMode::Inference) {
            Err(Error::InvalidConfig {
                field: "stage",
                found,
                ..
            }) => {
                assert_eq!(found, stage.to_string())
            }
            other => panic!("expected InvalidConfig for stage {stage}, got {other:?}"),
        }
    }
}
