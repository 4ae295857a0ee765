//! The two-phase learner on data whose answer we know: colour classes a narrow ResNet tells
//! apart. Phase 1 lowers the loss with the backbone bit-identical, phase 2 moves the backbone,
//! the feature cache gives the plain path's head, a stopped run resumes, early stopping restores
//! the best weights, and a resumed schedule gives the same rates. (`tests/it/examples/` kills and
//! resumes the real main job.)

use crate::common::rng_lock;
use crate::common::train::{SIDE, colours, device, learner, model};
use resnet_transfer::data::{ImageBatcher, ImageSet, Preprocess};
use resnet_transfer::train::{Schedule, TwoPhaseConfig, evaluate};
use resnet_transfer::{ResNet, ResNetConfig};

fn backbone_weights(model: &ResNet) -> Vec<f32> {
    let mut out = model
        .stem
        .conv
        .conv
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap();
    let last = &model.stages[3].blocks[1].convs[1];
    out.extend(
        last.conv
            .weight
            .val()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
    );
    out.extend(
        last.bn
            .running_var
            .value_sync()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap(),
    );
    out
}

fn head_weights(model: &ResNet) -> Vec<f32> {
    let head = model.head.as_ref().unwrap();
    head.linear
        .weight
        .val()
        .into_data()
        .try_to_vec::<f32>()
        .unwrap()
}

#[test]
fn phase_one_keeps_the_backbone_phase_two_moves_it_and_it_learns() {
    let _rng = rng_lock();
    let (train, valid) = (colours(24, 1), colours(10, 2));
    let start = model(0.5);
    let before = backbone_weights(&start);

    let phase1 = TwoPhaseConfig::new()
        .with_phase1_epochs(4)
        .with_phase2_epochs(0)
        .with_phase1_lr(1e-2);
    let (after1, h1) = learner(phase1)
        .fit(start, &train, &valid, &device())
        .unwrap();
    assert_eq!(
        backbone_weights(&after1),
        before,
        "phase 1 leaves the backbone bit-identical"
    );
    let (first, last) = (&h1.epochs[0], h1.epochs.last().unwrap());
    assert!(
        last.train_loss < first.train_loss,
        "phase 1 lowers the loss: {h1:?}"
    );
    assert!(h1.epochs.iter().all(|e| e.phase == 1 && e.cached_features));

    let phase2 = TwoPhaseConfig::new()
        .with_phase1_epochs(0)
        .with_phase2_epochs(5)
        .with_phase2_lr(1e-3);
    let (after2, h2) = learner(phase2)
        .fit(after1, &train, &valid, &device())
        .unwrap();
    assert_ne!(
        backbone_weights(&after2),
        before,
        "phase 2 moves the backbone"
    );
    assert!(h2.epochs.iter().all(|e| e.phase == 2));

    let eval = evaluate(
        &after2,
        &valid,
        &ImageBatcher::new(Preprocess::Torch),
        16,
        &device().inner(),
    )
    .unwrap();
    assert!(eval.accuracy > 0.8, "far above the 25% of chance: {eval:?}");
}

#[test]
fn feature_cache_gives_the_plain_paths_head() {
    let _rng = rng_lock();
    let (train, valid) = (colours(8, 3), colours(4, 4));
    let config = TwoPhaseConfig::new()
        .with_phase1_epochs(1)
        .with_phase2_epochs(0)
        .with_dropout(0.0);
    let start = model(0.0);
    let (cached, hc) = learner(config.clone())
        .fit(start.clone(), &train, &valid, &device())
        .unwrap();
    let (plain, hp) = learner(config.with_feature_cache(false))
        .fit(start, &train, &valid, &device())
        .unwrap();
    assert!(hc.epochs[0].cached_features && !hp.epochs[0].cached_features);
    let (a, b) = (head_weights(&cached), head_weights(&plain));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(worst < 1e-5, "head weights differ by {worst}");
    assert!((hc.epochs[0].valid_loss.unwrap() - hp.epochs[0].valid_loss.unwrap()).abs() < 1e-5);
}

#[test]
fn a_resumed_run_ends_where_an_uninterrupted_one_does() {
    let _rng = rng_lock();
    let (train, valid) = (colours(6, 5), colours(3, 6));
    let tmp = tempfile::tempdir().unwrap();
    let full = TwoPhaseConfig::new()
        .with_phase1_epochs(1)
        .with_phase2_epochs(2)
        .with_phase2_lr(1e-3);
    let start = model(0.5);

    let mut whole = learner(full.clone());
    whole.run_dir = Some(tmp.path().join("whole"));
    let (a, ha) = whole.fit(start.clone(), &train, &valid, &device()).unwrap();

    // The same run, stopped after its first epoch, then continued.
    let mut first = learner(full.clone().with_phase2_epochs(0));
    first.run_dir = Some(tmp.path().join("parts"));
    first.fit(start.clone(), &train, &valid, &device()).unwrap();
    let mut rest = learner(full);
    rest.run_dir = Some(tmp.path().join("parts"));
    let (b, hb) = rest.fit(start, &train, &valid, &device()).unwrap();

    assert_eq!(hb.epochs.len(), 3);
    assert_eq!(head_weights(&a), head_weights(&b));
    assert_eq!(backbone_weights(&a), backbone_weights(&b));
    let strip = |h: &resnet_transfer::train::History| -> Vec<(usize, u8, f64)> {
        h.epochs
            .iter()
            .map(|e| (e.epoch, e.phase, e.valid_loss.unwrap()))
            .collect()
    };
    assert_eq!(strip(&ha), strip(&hb));
    assert!(tmp.path().join("parts/history.csv").is_file());
}

/// The set with every label moved to the next class: the better a model learns the colours, the
/// worse its loss here, so validation loss soon stops improving.
fn mislabelled(set: ImageSet) -> ImageSet {
    let labels = set.labels().iter().map(|&l| (l + 1) % 4).collect();
    ImageSet::new(set.pixels().to_vec(), labels, SIDE, SIDE).unwrap()
}

#[test]
fn early_stopping_stops_and_restores_the_best_weights() {
    let _rng = rng_lock();
    let (train, valid) = (colours(12, 11), mislabelled(colours(6, 12)));
    let config = TwoPhaseConfig::new()
        .with_phase1_epochs(10)
        .with_phase2_epochs(0)
        .with_phase1_lr(1e-2)
        .with_patience(Some(2));
    let start = model(0.5);
    let tmp = tempfile::tempdir().unwrap();
    let mut stopping = learner(config.clone());
    stopping.run_dir = Some(tmp.path().to_path_buf());
    let (stopped, h) = stopping
        .fit(start.clone(), &train, &valid, &device())
        .unwrap();
    let best = h
        .epochs
        .iter()
        .min_by(|a, b| a.valid_loss.unwrap().total_cmp(&b.valid_loss.unwrap()))
        .unwrap()
        .epoch;
    assert_eq!(
        h.epochs.len(),
        best + 2,
        "stopped two epochs after the best: {h:?}"
    );
    assert!(h.epochs.len() < 10);
    assert_eq!(h.restored, vec![best]);

    // The same run cut at its best epoch ends with the same head.
    let cut = config.clone().with_phase1_epochs(best).with_patience(None);
    let (at_best, _) = learner(cut)
        .fit(start.clone(), &train, &valid, &device())
        .unwrap();
    assert_eq!(head_weights(&stopped), head_weights(&at_best));
    // The checkpoint holds the restored weights too, and no file of the best epoch is left over.
    let files = std::fs::read_dir(tmp.path().join("checkpoint"))
        .unwrap()
        .count();
    assert_eq!(
        files, 4,
        "state, model, optimizer and the best epoch's model"
    );

    // Keeping the last weights instead: the head of the last epoch run, not the best.
    let last = config.with_restore_best_weights(false);
    let (kept, hk) = learner(last).fit(start, &train, &valid, &device()).unwrap();
    assert!(hk.restored.is_empty());
    assert_ne!(head_weights(&kept), head_weights(&at_best));
}

#[test]
fn resumed_schedules_give_the_same_rates() {
    let _rng = rng_lock();
    let (train, valid) = (colours(6, 13), mislabelled(colours(3, 14)));
    let start = model(0.5);
    for schedule in [Schedule::Cosine, Schedule::OneCycle, Schedule::Plateau] {
        let tmp = tempfile::tempdir().unwrap();
        let full = TwoPhaseConfig::new()
            .with_phase1_epochs(2)
            .with_phase2_epochs(3)
            .with_phase2_lr(1e-3)
            .with_schedule(schedule)
            .with_plateau_patience(1);
        let mut whole = learner(full.clone());
        whole.run_dir = Some(tmp.path().join("whole"));
        let (_, ha) = whole.fit(start.clone(), &train, &valid, &device()).unwrap();

        // Stopped at the unfreeze point, then continued.
        let mut first = learner(full.clone().with_phase2_epochs(0));
        first.run_dir = Some(tmp.path().join("parts"));
        first.fit(start.clone(), &train, &valid, &device()).unwrap();
        let mut rest = learner(full.clone());
        rest.run_dir = Some(tmp.path().join("parts"));
        let (_, hb) = rest.fit(start.clone(), &train, &valid, &device()).unwrap();

        let rates = |h: &resnet_transfer::train::History| -> Vec<f64> {
            h.epochs.iter().map(|e| e.lr).collect()
        };
        assert_eq!(rates(&ha), rates(&hb), "{schedule}");
        let want: Vec<f64> = match schedule {
            Schedule::Plateau => rates(&ha),
            _ => (0..5).map(|e| full.learning_rate(e)).collect(),
        };
        assert_eq!(rates(&hb), want);
        if schedule == Schedule::OneCycle {
            assert!(
                want[1] > want[0] && want[3] > want[2] && want[4] < want[3],
                "rises from its start, then falls, in each phase: {want:?}"
            );
        } else if schedule == Schedule::Cosine {
            assert!(
                want[3] < want[2] && want[4] < want[3],
                "decays in phase 2: {want:?}"
            );
        } else {
            assert!(
                hb.epochs[4].lr < 1e-3,
                "the plateau lowered phase 2's rate: {hb:?}"
            );
        }
    }
}

/// Every parameter of a model, flattened in module order.
fn all_params(model: &ResNet) -> Vec<f32> {
    use burn::module::{Module, ModuleVisitor, Param};
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<burn::tensor::Tensor<D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.0.extend(data.try_to_vec::<f32>().unwrap());
        }
    }
    let mut collect = Collect(Vec::new());
    model.visit(&mut collect);
    collect.0
}

/// The fused Adam the learner uses does Burn's Adam arithmetic: three steps, with and without
/// weight decay, and decoupled (AdamW), on every CPU backend end at the parameters Burn's own
/// Adam and AdamW reach.
#[test]
fn fused_adam_matches_burns_adam() {
    use burn::nn::loss::CrossEntropyLossConfig;
    use burn::optim::decay::WeightDecayConfig;
    use burn::optim::{AdamConfig, AdamWConfig, GradientsParams, ModuleOptimizer};
    use burn::tensor::{Distribution, Int, Tensor, TensorData};
    use resnet_transfer::BackendKind;
    use resnet_transfer::train::FusedAdamConfig;

    let _rng = rng_lock();
    for kind in [BackendKind::NdArray, BackendKind::Flex] {
        let device = kind.device().unwrap().autodiff();
        assert!(
            resnet_transfer::train::FusedAdam::is_fused_on(&device),
            "{kind}"
        );
        let run = |mut optim: ModuleOptimizer| {
            device.seed(21);
            let mut model = ResNetConfig::resnet18(4)
                .with_width(4)
                .with_dropout(0.0)
                .init(&device)
                .unwrap();
            for step in 0..3 {
                let images =
                    Tensor::<4>::random([4, 3, 32, 32], Distribution::Normal(0.0, 1.0), &device);
                let targets =
                    Tensor::<1, Int>::from_data(TensorData::from([0i64, 1, 2, 3]), &device);
                let loss = CrossEntropyLossConfig::new()
                    .init(&device)
                    .forward(model.forward(images), targets);
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(1e-2 / (step + 1) as f64, model, grads);
            }
            all_params(&model)
        };
        let start = {
            device.seed(21);
            let m = ResNetConfig::resnet18(4)
                .with_width(4)
                .init(&device)
                .unwrap();
            all_params(&m)
        };
        // With and without weight decay, coupled or not: the fused loop takes a separate branch
        // for each.
        for (decay, decoupled) in [(0.0, false), (1e-2, false), (0.5, true)] {
            let burns = if decoupled {
                let reference = AdamWConfig::new().with_weight_decay(decay);
                run(reference.init())
            } else {
                let reference = AdamConfig::new()
                    .with_weight_decay((decay > 0.0).then(|| WeightDecayConfig::new(decay)));
                run(reference.init())
            };
            let fused = run(FusedAdamConfig::new()
                .with_weight_decay(decay)
                .with_decoupled_weight_decay(decoupled)
                .init());
            assert_eq!(burns.len(), fused.len());
            let moved = burns.iter().zip(&start).filter(|(a, b)| a != b).count();
            assert!(
                moved > burns.len() / 2,
                "{kind}: Adam moved {moved} of {}",
                burns.len()
            );
            let worst = burns
                .iter()
                .zip(&fused)
                .map(|(a, b)| (a - b).abs() / a.abs().max(1e-3))
                .fold(0f32, f32::max);
            eprintln!(
                "{kind}, decay {decay} (decoupled {decoupled}): fused vs Burn's, worst relative difference {worst:e}"
            );
            // Burn's AdamW divides by the bias corrections where the fused loop folds them into
            // one factor, as Burn's Adam does: float rounding apart, which three steps through
            // BatchNorm magnify to about 1e-3 of the smallest weights. Not applying the decay
            // would move every weight by 3 · lr · 0.5 of itself, over 1e-2 (the one-tensor test
            // in src/train/adam.rs holds the arithmetic to 1e-6).
            let bound = if decoupled { 3e-3 } else { 1e-5 };
            assert!(
                worst < bound,
                "{kind}, decay {decay} ({decoupled}): {worst}"
            );
        }
    }
}

/// The largest difference between two parameter lists, and the largest change from `start`.
fn gap_and_change(a: &[f32], b: &[f32], start: &[f32]) -> (f32, f32) {
    let gap = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    let change = a
        .iter()
        .zip(start)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
    (gap, change)
}

/// Data parallel on two replicas (the CPU's one device, taking turns: the machinery of two GPUs
/// without them), each with half of every batch, gives the parameters of one device with the
/// whole batch: for head-only steps on cached features and through the folded frozen backbone,
/// and for full steps with BatchNorm in inference mode. Batches of 16 over 12 images per class
/// leave a last batch of 16 and one of 16; the 40-image validation set is evaluated on the main
/// device only.
#[test]
fn two_replicas_train_as_one_device_does() {
    let _rng = rng_lock();
    let (train, valid) = (colours(12, 5), colours(10, 6));
    let start = model(0.0);
    let before = all_params(&start);
    let cases = [
        (
            "head only, cached features",
            TwoPhaseConfig::new()
                .with_phase1_epochs(2)
                .with_phase2_epochs(0),
        ),
        (
            "head only, through the folded backbone",
            (TwoPhaseConfig::new()
                .with_phase1_epochs(2)
                .with_phase2_epochs(0))
            .with_feature_cache(false),
        ),
        (
            "full steps, BatchNorm in inference mode",
            TwoPhaseConfig::new()
                .with_phase1_epochs(1)
                .with_phase2_epochs(2),
        ),
    ];
    for (name, config) in cases {
        let config = config.with_dropout(0.0).with_phase2_lr(1e-3);
        let (one, h1) = learner(config.clone())
            .fit(start.clone(), &train, &valid, &device())
            .unwrap();
        let (two, h2) = learner(config)
            .with_devices(vec![device(), device()])
            .fit(start.clone(), &train, &valid, &device())
            .unwrap();
        let (gap, change) = gap_and_change(&all_params(&two), &all_params(&one), &before);
        eprintln!("{name}: replicas against one device {gap:e}, change {change:e}");
        assert!(change > 1e-3, "{name}: the step moved nothing ({change})");
        assert!(gap < 1e-5, "{name}: two replicas differ by {gap}");
        for (a, b) in h1.epochs.iter().zip(&h2.epochs) {
            assert!(
                (a.train_loss - b.train_loss).abs() < 1e-5,
                "{name}: {a:?} {b:?}"
            );
            assert!(
                (a.valid_loss.unwrap() - b.valid_loss.unwrap()).abs() < 1e-5,
                "{name}: {a:?} {b:?}"
            );
            assert_eq!(a.train_accuracy, b.train_accuracy, "{name}");
        }
    }

    // A device list that does not start with the training device is refused before training.
    let flex = resnet_transfer::device::training_devices("flex", &[0]).unwrap();
    let err = learner(TwoPhaseConfig::new())
        .with_devices(flex)
        .fit(start, &train, &valid, &device())
        .unwrap_err();
    assert!(err.to_string().contains("devices"), "{err}");
}

/// The learning-rate finder: the model given is untouched, the swept loss falls then rises (or
/// the sweep stops where it diverged), and phase 2 (the whole network) trained at the suggested
/// rate lowers the loss where the sweep's highest rate makes it worse. (Phase 1's head on these
/// easy colours' features keeps learning at any rate Adam takes: no rise to find there.)
#[test]
fn the_learning_rate_finder_suggests_a_rate_that_trains() {
    use resnet_transfer::train::LrFinderConfig;

    let _rng = rng_lock();
    let (train, valid) = (colours(8, 1), colours(4, 2));
    let start = model(0.0);
    let before = head_weights(&start);
    let config = TwoPhaseConfig::new()
        .with_phase1_epochs(0)
        .with_phase2_epochs(3)
        .with_dropout(0.0);
    let sweep = learner(config.clone())
        .find_lr(&start, &train, &LrFinderConfig::new(2), &device())
        .unwrap();
    assert_eq!(head_weights(&start), before, "the model given is untouched");
    let best = sweep.smoothed.iter().cloned().fold(f64::INFINITY, f64::min);
    let last = *sweep.smoothed.last().unwrap();
    assert!(
        last > 1.5 * best,
        "the curve rises at the end: best {best}, last {last}"
    );
    assert!(sweep.lrs.windows(2).all(|w| w[1] > w[0]));
    eprintln!("steepest {:e}, valley {:e}", sweep.steepest, sweep.valley);

    let final_loss = |lr: f64| {
        let (_, history) = learner(config.clone().with_phase2_lr(lr))
            .fit(start.clone(), &train, &valid, &device())
            .unwrap();
        let losses: Vec<f64> = history.epochs.iter().map(|e| e.train_loss).collect();
        eprintln!("lr {lr:e}: train losses {losses:?}");
        losses
    };
    let at_valley = final_loss(sweep.valley);
    let too_high = final_loss(*sweep.lrs.last().unwrap());
    assert!(
        at_valley[2] < at_valley[0],
        "the suggested rate trains: {at_valley:?}"
    );
    assert!(
        too_high[2].is_nan() || too_high[2] >= at_valley[2],
        "the sweep's highest rate trains worse: {too_high:?} against {at_valley:?}"
    );
}

/// A seed gives the same new head on every backend (it is drawn on the host, not by each
/// backend's own generator), and another seed another head.
#[test]
fn a_seed_gives_the_same_head_on_every_backend() {
    use resnet_transfer::BackendKind;
    use resnet_transfer::train::with_new_head;
    let _rng = rng_lock();
    let kinds = BackendKind::compiled()
        .into_iter()
        .filter(|kind| !crate::common::skips(*kind));
    let head = |kind: BackendKind, seed: u64| {
        let device = kind.device().unwrap();
        let backbone = ResNetConfig::resnet18(1000)
            .with_width(4)
            .init(&device)
            .unwrap();
        let model = with_new_head(backbone, 5, 0.5, seed, &device);
        let bias = model.head.as_ref().unwrap().linear.bias.as_ref().unwrap();
        let mut values = head_weights(&model);
        values.extend(bias.val().into_data().try_to_vec::<f32>().unwrap());
        values
    };
    let first = head(BackendKind::NdArray, 3);
    // ResNet18 of width 4: 32 features into the head.
    let bound = 1.0 / 32f32.sqrt();
    assert!(first.iter().all(|v| v.abs() <= bound), "within ±1/√in");
    for kind in kinds {
        assert_eq!(head(kind, 3), first, "{kind}");
    }
    assert_ne!(head(BackendKind::Flex, 4), first);
}

/// A rate far too high drives the loss to NaN: the run stops with `Diverged`, naming the epoch,
/// before checkpointing it, so the run folder's checkpoint still reads (a resume gives the same
/// error, not a broken checkpoint).
#[test]
fn a_diverging_run_stops_before_its_checkpoint() {
    let _rng = rng_lock();
    let (train, valid) = (colours(8, 1), colours(4, 2));
    let tmp = tempfile::tempdir().unwrap();
    let config = TwoPhaseConfig::new()
        .with_phase1_epochs(4)
        .with_phase2_epochs(0)
        .with_phase1_lr(1e38)
        .with_feature_cache(false);
    let mut run = learner(config);
    run.run_dir = Some(tmp.path().to_path_buf());
    let err = run.fit(model(0.0), &train, &valid, &device()).unwrap_err();
    let resnet_transfer::Error::Diverged { epoch, phase, .. } = err else {
        panic!("{err}");
    };
    assert_eq!(phase, 1);
    assert!(err.to_string().contains("--phase1-lr"), "{err}");
    assert!(err.to_string().contains("in a new --out"), "{err}");
    assert!(!err.to_string().contains("  "), "no runs of spaces: {err}");
    let again = run.fit(model(0.0), &train, &valid, &device()).unwrap_err();
    assert!(
        matches!(again, resnet_transfer::Error::Diverged { epoch: e, .. } if e == epoch),
        "{again}"
    );
}
