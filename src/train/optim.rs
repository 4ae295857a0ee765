//! What a step of the learner updates and how much: the optimizer of a phase
//! ([`OptimizerKind`]), weight decay spared to BatchNorm and biases, and each part's learning
//! rate (discriminative rates, [`TwoPhaseConfig::stage_lr_decay`]).

use burn::module::{Module, ModuleVisitor, Param, ParamGroup, ParamId};
use burn::optim::decay::WeightDecayConfig;
use burn::optim::lr_scheduler::module_lr_scheduler::{ModuleLearningRate, ModuleLrScheduler};
use burn::optim::momentum::MomentumConfig;
use burn::optim::{ModuleOptimizer, SgdConfig};
use burn::tensor::Tensor;

use crate::model::ResNet;
use crate::train::adam::FusedAdamConfig;
use crate::train::config::{OptimizerKind, TwoPhaseConfig};

/// The optimizer `config` asks for, for `model`'s parameters: with weight decay, the
/// parameters of one dimension (BatchNorm's scales and shifts, biases) are in a group of their
/// own without it, as timm leaves them.
pub(crate) fn optimizer(config: &TwoPhaseConfig, model: &ResNet) -> ModuleOptimizer {
    let decay = config.weight_decay as f32;
    let adam = |decay: f32| {
        FusedAdamConfig::new()
            .with_weight_decay(decay)
            .with_decoupled_weight_decay(config.optimizer == OptimizerKind::AdamW)
    };
    let sgd = |decay: f32| {
        let momentum = (config.momentum > 0.0).then(|| {
            MomentumConfig::new()
                .with_momentum(config.momentum)
                .with_dampening(0.0)
                .with_nesterov(config.nesterov)
        });
        SgdConfig::new()
            .with_momentum(momentum)
            .with_weight_decay((decay > 0.0).then(|| WeightDecayConfig::new(decay)))
    };
    let spared = ParamGroup::from_ids(one_dimensional(model));
    match (config.optimizer, decay > 0.0) {
        (OptimizerKind::Adam | OptimizerKind::AdamW, false) => adam(0.0).init(),
        (OptimizerKind::Adam | OptimizerKind::AdamW, true) => {
            adam(decay)
                .init()
                .with_group(spared, adam(0.0).build(), None)
        }
        (OptimizerKind::Sgd, false) => sgd(0.0).init(),
        (OptimizerKind::Sgd, true) => sgd(decay).init().with_group(spared, sgd(0.0).build(), None),
    }
}

/// The ids of `module`'s parameters of one dimension.
fn one_dimensional<M: Module>(module: &M) -> Vec<ParamId> {
    struct Collect(Vec<ParamId>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            if D == 1 {
                self.0.push(param.id);
            }
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// The ids of all of `module`'s parameters.
fn ids<M: Module>(module: &M) -> Vec<ParamId> {
    struct Collect(Vec<ParamId>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
            self.0.push(param.id);
        }
    }
    let mut collect = Collect(Vec::new());
    module.visit(&mut collect);
    collect.0
}

/// The learning rate of each part of a model: the head at the step's rate, each part of the
/// backbone at a power of [`TwoPhaseConfig::stage_lr_decay`] of it (stage 4 the first, the stem
/// the fifth).
#[derive(Clone)]
pub(crate) struct PartRates {
    /// Each backbone part's parameters and its factor; empty when the decay is 1.
    parts: Vec<(ParamGroup, f64)>,
}

impl PartRates {
    /// The parts of `model` and their factors under `decay`.
    pub(crate) fn new(model: &ResNet, decay: f64) -> Self {
        if decay == 1.0 {
            return Self { parts: Vec::new() };
        }
        let stages = model.stages.len();
        let mut parts: Vec<(ParamGroup, f64)> = (model.stages.iter().enumerate())
            .map(|(i, stage)| {
                let factor = decay.powi((stages - i) as i32);
                (ParamGroup::from_ids(ids(stage)), factor)
            })
            .collect();
        let stem = decay.powi(stages as i32 + 1);
        parts.push((ParamGroup::from_ids(ids(&model.stem)), stem));
        Self { parts }
    }

    /// Every part's rate for a step at `lr` (the head's).
    pub(crate) fn at(&self, lr: f64) -> ModuleLearningRate {
        let mut scheduler = ModuleLrScheduler::new(lr);
        for (group, factor) in &self.parts {
            scheduler = scheduler.with_group(group.clone(), lr * factor);
        }
        scheduler.step()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ResNetConfig;
    use burn::optim::GradientsParams;

    /// Every parameter of `model` and its values, in module order.
    fn params(model: &ResNet) -> Vec<(usize, Vec<f32>)> {
        struct Collect(Vec<(usize, Vec<f32>)>);
        impl ModuleVisitor for Collect {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                let values = param
                    .val()
                    .into_data()
                    .convert::<f32>()
                    .try_to_vec()
                    .unwrap();
                self.0.push((D, values));
            }
        }
        let mut collect = Collect(Vec::new());
        model.visit(&mut collect);
        collect.0
    }

    /// A zero gradient for every parameter: what moves them is weight decay alone.
    fn zero_grads(model: &ResNet) -> GradientsParams {
        struct Zeros(GradientsParams);
        impl ModuleVisitor for Zeros {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                self.0.register(param.id, param.val().inner().zeros_like());
            }
        }
        let mut zeros = Zeros(GradientsParams::new());
        model.visit(&mut zeros);
        zeros.0
    }

    /// With a zero gradient, one step of each optimizer moves the weights of two or more
    /// dimensions by its decay (AdamW and SGD by exactly `lr * decay` of themselves, Adam's L2
    /// by about `lr`) and leaves BatchNorm's scales and shifts and the biases where they were.
    #[test]
    fn weight_decay_spares_batch_norm_and_biases() {
        let device = crate::device::training_device("ndarray").unwrap();
        let model = ResNetConfig::resnet18(3)
            .with_width(4)
            .with_conv_bias(true)
            .init(&device)
            .unwrap();
        let before = params(&model);
        assert!(before.iter().filter(|(d, _)| *d == 1).count() > 40);
        let (lr, decay) = (0.1, 0.5);
        for kind in OptimizerKind::ALL {
            let config = TwoPhaseConfig::new()
                .with_optimizer(kind)
                .with_weight_decay(decay);
            let mut optim = optimizer(&config, &model);
            let after = params(&optim.step(lr, model.clone(), zero_grads(&model)));
            for ((dims, a), (_, b)) in before.iter().zip(&after) {
                for (&a, &b) in a.iter().zip(b) {
                    if *dims == 1 {
                        assert_eq!(a, b, "{kind}: a parameter of one dimension moved");
                        continue;
                    }
                    let moved = (a - b).abs() as f64;
                    let shrink = decay * a.abs() as f64;
                    let want = match kind {
                        // The penalty is the gradient; Adam's first step is `lr·g/(|g| + ε)`.
                        OptimizerKind::Adam => lr * shrink / (shrink + 1e-5),
                        _ => lr * shrink,
                    };
                    assert!(
                        (moved - want).abs() <= 1e-3 * want + 1e-7,
                        "{kind}: {a} moved by {moved}, not {want}"
                    );
                }
            }
        }
    }

    /// The head at the step's rate, stage 4 at `F` times it, ..., the stem at `F⁵`; with `F` = 1
    /// one rate for all.
    #[test]
    fn each_part_gets_its_power_of_the_decay() {
        let device = crate::device::default_device().unwrap();
        let model = ResNetConfig::resnet18(3)
            .with_width(4)
            .init(&device)
            .unwrap();
        let rates = PartRates::new(&model, 0.5).at(1e-3);
        let rate_of = |part: Vec<ParamId>| {
            let mut seen: Vec<f64> = part
                .into_iter()
                .map(|id| rates.lr_from_param(id, None))
                .collect();
            seen.dedup();
            seen
        };
        let head = model.head.as_ref().unwrap();
        assert_eq!(rate_of(ids(head)), [1e-3]);
        for (i, stage) in model.stages.iter().enumerate() {
            let want = 1e-3 * 0.5f64.powi(4 - i as i32);
            assert_eq!(rate_of(ids(stage)), [want], "stage {}", i + 1);
        }
        assert_eq!(rate_of(ids(&model.stem)), [1e-3 * 0.5f64.powi(5)]);
        let one = PartRates::new(&model, 1.0).at(1e-3);
        assert_eq!(
            one.lr_from_param(model.stem.conv.conv.weight.id, None),
            1e-3
        );
    }
}
