//! Steering a fine-tune through the learner: gradual unfreezing keeps each stage bit-identical
//! until its release epoch, discriminative rates move each stage by its share of the rate, and a
//! run with them (and each optimizer, and one cycle) resumes as an uninterrupted one.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;

use crate::common::rng_lock;
use crate::common::train::{colours, device, learner, model};
use resnet_transfer::ResNet;
use resnet_transfer::train::{OptimizerKind, TwoPhaseConfig, Unfreeze};

/// Every parameter of `module`, flattened in module order.
fn values<M: Module>(module: &M) -> Vec<f32> {
    struct Collect(Vec<f32>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            let data = param.val().into_data().convert::<f32>();
            self.0.extend(data.try_to_vec::<f32>().unwrap());
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// The model's parts, from the stem to the head, each flattened: `[stem, stage 1..4, head]`.
fn parts(model: &ResNet) -> Vec<Vec<f32>> {
    std::iter::once(values(&model.stem))
        .chain(model.stages.iter().map(values))
        .chain(std::iter::once(values(model.head.as_ref().unwrap())))
        .collect()
}

/// Which parts differ between two models: `[stem, stage 1..4, head]`.
fn moved(a: &ResNet, b: &ResNet) -> Vec<bool> {
    parts(a)
        .iter()
        .zip(parts(b))
        .map(|(x, y)| *x != y)
        .collect()
}

/// With a release every epoch, phase 2's first epoch trains stage 4 alone, the second stages 3
/// and 4, the third 2 to 4, the fourth everything: each frozen part is bit-identical to the
/// start until its release epoch. The history names the first trainable stage of each epoch.
#[test]
fn gradual_unfreezing_releases_one_stage_an_epoch() {
    let _rng = rng_lock();
    let (train, valid) = (colours(6, 31), colours(3, 32));
    let start = model(0.5);
    let config = TwoPhaseConfig::new()
        .with_phase1_epochs(1)
        .with_phase2_lr(1e-3)
        .with_unfreeze(Unfreeze::Gradual(1));
    let mut last = None;
    for epochs in 1..=4 {
        let run = learner(config.clone().with_phase2_epochs(epochs));
        let (after, history) = run.fit(start.clone(), &train, &valid, &device()).unwrap();
        // [stem, stage 1, 2, 3, 4, head]: stage 4 at the first epoch, the stem with stage 1.
        let first = 5 - epochs;
        let want: Vec<bool> = (0..6)
            .map(|part| match part {
                0 => first == 1,
                5 => true,
                stage => stage >= first,
            })
            .collect();
        assert_eq!(moved(&start, &after), want, "after {epochs} phase-2 epochs");
        let from: Vec<Option<usize>> = history.epochs.iter().map(|e| e.released_from).collect();
        let mut expected = vec![None];
        expected.extend((0..epochs).map(|k| Some(4 - k.min(3))));
        assert_eq!(from, expected);
        last = Some(history);
    }
    assert_eq!(last.unwrap().releases(), vec![(3, 3), (4, 2), (5, 1)]);
}

/// One phase-2 step of Adam from fresh moments moves each weight by about the rate (its first
/// update is `lr · g / (|g| + ε)`), so each part's largest move is its rate: the head's, stage
/// 4's half of it, ..., the stem's 1/32 with a decay of 0.5; with no decay, the stem moves as
/// far as the head.
#[test]
fn each_stage_moves_by_its_share_of_the_rate() {
    let _rng = rng_lock();
    // One batch of 16 images: one step.
    let train = colours(4, 33);
    let start = model(0.0);
    let lr = 1e-3;
    let largest_moves = |decay: f64| -> Vec<f64> {
        let config = TwoPhaseConfig::new()
            .with_phase1_epochs(0)
            .with_phase2_epochs(1)
            .with_phase2_lr(lr)
            .with_stage_lr_decay(decay);
        let empty = resnet_transfer::data::ImageSet::default();
        let (after, _) = learner(config)
            .fit(start.clone(), &train, &empty, &device())
            .unwrap();
        parts(&start)
            .iter()
            .zip(parts(&after))
            .map(|(a, b)| {
                (a.iter().zip(&b))
                    .map(|(x, y)| (x - y).abs() as f64)
                    .fold(0.0, f64::max)
            })
            .collect()
    };
    let moves = largest_moves(0.5);
    // [stem, stage 1..4, head] and their powers of the decay.
    for (part, (&got, power)) in moves.iter().zip([5, 4, 3, 2, 1, 0]).enumerate() {
        let want = lr * 0.5f64.powi(power);
        assert!(
            got > 0.9 * want && got < 1.001 * want,
            "part {part} moved at most {got:e}, its rate is {want:e}: {moves:?}"
        );
    }
    let flat = largest_moves(1.0);
    assert!(
        flat[0] > 0.9 * lr,
        "without decay the stem moves by the rate: {flat:?}"
    );
}

/// A run stopped in phase 2 and resumed ends bit-identical to the uninterrupted one, with
/// gradual unfreezing, discriminative rates and weight decay: with SGD and Nesterov momentum
/// (whose velocity the checkpoint must carry) and with AdamW. (One cycle's resume is in
/// `train::resumed_schedules_give_the_same_rates`: its rates depend on the phase's length,
/// which this test's first part shortens.)
#[test]
fn a_steered_run_resumes_as_an_uninterrupted_one() {
    let _rng = rng_lock();
    let (train, valid) = (colours(6, 34), colours(3, 35));
    let start = model(0.5);
    for (optimizer, lr) in [(OptimizerKind::Sgd, 1e-2), (OptimizerKind::AdamW, 1e-3)] {
        let tmp = tempfile::tempdir().unwrap();
        let full = TwoPhaseConfig::new()
            .with_phase1_epochs(1)
            .with_phase2_epochs(3)
            .with_phase2_lr(lr)
            .with_optimizer(optimizer)
            .with_nesterov(optimizer == OptimizerKind::Sgd)
            .with_weight_decay(1e-2)
            .with_unfreeze(Unfreeze::Gradual(1))
            .with_stage_lr_decay(0.5);
        let mut whole = learner(full.clone());
        whole.run_dir = Some(tmp.path().join("whole"));
        let (a, ha) = whole.fit(start.clone(), &train, &valid, &device()).unwrap();

        // Stopped after phase 2's first epoch (stage 4 released), then continued.
        let mut first = learner(full.clone().with_phase2_epochs(1));
        first.run_dir = Some(tmp.path().join("parts"));
        first.fit(start.clone(), &train, &valid, &device()).unwrap();
        let mut rest = learner(full);
        rest.run_dir = Some(tmp.path().join("parts"));
        let (b, hb) = rest.fit(start.clone(), &train, &valid, &device()).unwrap();

        assert_eq!(parts(&a), parts(&b), "{optimizer}");
        assert_eq!(ha.epochs.len(), 4);
        let figures =
            |h: &resnet_transfer::train::History| -> Vec<(f64, Option<f64>, Option<usize>)> {
                h.epochs
                    .iter()
                    .map(|e| (e.lr, e.valid_loss, e.released_from))
                    .collect()
            };
        assert_eq!(figures(&ha), figures(&hb), "{optimizer}");
        // Three phase-2 epochs released stages 4, 3 and 2; stage 1 and the stem stayed.
        assert_eq!(moved(&start, &a), [false, false, true, true, true, true]);
    }
}
