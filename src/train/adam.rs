//! Adam as one fused loop over each parameter tensor on the CPU backends.
//!
//! Burn's [`Adam`] is a dozen whole-tensor operations per parameter tensor; for a ResNet50's 25.6
//! million parameters that was a large share of a training step on `flex`, each operation a
//! pass over memory with its own output. [`FusedAdam`] does the same arithmetic in one pass that reads the
//! parameter, gradient and both moments once, in parallel chunks, on host memory (`flex`,
//! `ndarray`). Elsewhere (wgpu), and for AMSGrad, it is Burn's Adam itself. Its state is Burn's
//! [`AdamState`], so checkpoints are the same records either way.

use burn::config::Config;
use burn::optim::decay::WeightDecayConfig;
use burn::optim::{
    Adam, AdamConfig, AdamState, AdaptiveMomentumState, LearningRate, ModuleOptimizer, Optimizer,
};
use burn::tensor::{DType, Device, Tensor, TensorData};
use rayon::prelude::*;

/// Configuration of [`FusedAdam`]: Burn's [`AdamConfig`] defaults (betas 0.9 and 0.999,
/// epsilon 1e-5), with optional L2 weight decay added to the gradient as Burn does.
#[derive(Config, Debug)]
pub struct FusedAdamConfig {
    /// Decay of the first moment.
    #[config(default = 0.9)]
    pub beta_1: f32,
    /// Decay of the second moment.
    #[config(default = 0.999)]
    pub beta_2: f32,
    /// Added to the second moment's root, for numerical stability.
    #[config(default = 1e-5)]
    pub epsilon: f32,
    /// Weight decay; 0 for none. An L2 penalty added to the gradient (`grad + decay * param`),
    /// or with [`decoupled_weight_decay`](Self::decoupled_weight_decay) AdamW's shrinking of
    /// the weights.
    #[config(default = 0.0)]
    pub weight_decay: f32,
    /// AdamW (Loshchilov and Hutter): the decay applied to the weights themselves
    /// (`param * (1 - lr * decay)`, Burn's `AdamW` arithmetic) rather than to the gradient.
    #[config(default = false)]
    pub decoupled_weight_decay: bool,
}

impl FusedAdamConfig {
    /// One step of Adam on a parameter's values `p`, their gradient `g` and its moments `m` and
    /// `v`, at step `time` (from 1): Burn's Adam term for term, with the bias corrections folded
    /// into one factor and epsilon, on the pool's threads a chunk at a time.
    fn update(&self, lr: f32, time: usize, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        let FusedAdamConfig {
            beta_1,
            beta_2,
            epsilon,
            weight_decay,
            decoupled_weight_decay,
        } = self.clone();
        let (l2, keep) = if decoupled_weight_decay {
            (0.0, (1.0 - lr as f64 * weight_decay as f64) as f32)
        } else {
            (weight_decay, 1.0)
        };
        let correction_2 = (1.0 - beta_2.powi(time as i32)).sqrt();
        let factor = correction_2 / (1.0 - beta_1.powi(time as i32));
        let eps = epsilon * correction_2;
        const CHUNK: usize = 1 << 14;
        p.par_chunks_mut(CHUNK)
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(g.par_chunks(CHUNK))
            .for_each(|(((p, m), v), g)| {
                // Slices zipped rather than indexed, and the decay test out of the loop, so the
                // compiler vectorizes it, square root and division included.
                let update = |p: &mut f32, m: &mut f32, v: &mut f32, g: f32| {
                    *m = beta_1 * *m + (1.0 - beta_1) * g;
                    *v = beta_2 * *v + (1.0 - beta_2) * (g * g);
                    *p -= lr * (*m * factor / (v.sqrt() + eps));
                };
                let lanes = p.iter_mut().zip(m.iter_mut()).zip(v.iter_mut()).zip(g);
                if l2 > 0.0 {
                    for (((p, m), v), &g) in lanes {
                        update(p, m, v, l2 * *p + g);
                    }
                } else if keep != 1.0 {
                    for (((p, m), v), &g) in lanes {
                        *p *= keep;
                        update(p, m, v, g);
                    }
                } else {
                    for (((p, m), v), &g) in lanes {
                        update(p, m, v, g);
                    }
                }
            });
    }
}

impl FusedAdamConfig {
    /// The optimizer for a whole module.
    pub fn init(&self) -> ModuleOptimizer {
        ModuleOptimizer::from(self.build())
    }

    /// The bare optimizer.
    pub fn build(&self) -> FusedAdam {
        let mut reference = AdamConfig::new()
            .with_beta_1(self.beta_1)
            .with_beta_2(self.beta_2)
            .with_epsilon(self.epsilon);
        if self.weight_decay > 0.0 && !self.decoupled_weight_decay {
            reference =
                reference.with_weight_decay(Some(WeightDecayConfig::new(self.weight_decay)));
        }
        FusedAdam {
            config: self.clone(),
            reference: reference.build(),
        }
    }
}

/// Adam with Burn's exact arithmetic, fused into one parallel loop per tensor on host memory.
#[derive(Clone)]
pub struct FusedAdam {
    config: FusedAdamConfig,
    reference: Adam,
}

impl FusedAdam {
    /// Whether steps on `device` take the fused loop (host memory: `flex`, `ndarray`) rather
    /// than Burn's Adam (wgpu). AMSGrad state always takes Burn's Adam.
    pub fn is_fused_on(device: &Device) -> bool {
        crate::device::is_host(device)
    }
}

/// Floats of a tensor, without a copy where the backend hands its buffer over.
fn floats<const D: usize>(tensor: Tensor<D>) -> Option<TensorData> {
    let data = tensor.into_data();
    (data.dtype() == DType::F32).then_some(data)
}

impl Optimizer for FusedAdam {
    type State<const D: usize> = AdamState<D>;

    fn step<const D: usize>(
        &self,
        lr: LearningRate,
        tensor: Tensor<D>,
        grad: Tensor<D>,
        state: Option<Self::State<D>>,
    ) -> (Tensor<D>, Option<Self::State<D>>) {
        let device = tensor.device();
        let fused = crate::device::is_host(&device)
            && tensor.dtype() == DType::F32
            && grad.dtype() == DType::F32
            && state
                .as_ref()
                .is_none_or(|s| s.momentum.max_moment_2.is_none());
        if !fused {
            let tensor = if self.config.decoupled_weight_decay && self.config.weight_decay > 0.0 {
                // Burn's `AdamW`: the weights shrunk, then Adam's step.
                tensor.mul_scalar(1.0 - lr * self.config.weight_decay as f64)
            } else {
                tensor
            };
            return self.reference.step(lr, tensor, grad, state);
        }
        let shape = tensor.shape();
        let (time, moments) = match state {
            Some(state) => (
                state.momentum.time,
                Some((state.momentum.moment_1, state.momentum.moment_2)),
            ),
            None => (0, None),
        };
        let (Some(mut param), Some(grad)) = (floats(tensor), floats(grad)) else {
            unreachable!("dtypes checked above");
        };
        let n = shape.num_elements();
        let zeros = || TensorData::new(vec![0f32; n], shape.clone());
        let (mut m, mut v) = match moments.map(|(m, v)| (floats(m), floats(v))) {
            Some((Some(m), Some(v))) => (m, v),
            _ => (zeros(), zeros()),
        };
        let time = time + 1;
        self.config.update(
            lr as f32,
            time,
            param.as_mut_slice::<f32>().expect("f32 checked"),
            grad.as_slice::<f32>().expect("f32 checked"),
            m.as_mut_slice::<f32>().expect("f32 checked"),
            v.as_mut_slice::<f32>().expect("f32 checked"),
        );
        let tensor = Tensor::from_data(param, &device);
        let momentum = AdaptiveMomentumState::new(
            time,
            Tensor::from_data(m, &device),
            Tensor::from_data(v, &device),
        );
        (tensor, Some(AdamState::new(momentum)))
    }

    fn to_device<const D: usize>(mut state: Self::State<D>, device: &Device) -> Self::State<D> {
        state.momentum = state.momentum.to_device(device);
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::optim::AdamWConfig;

    /// On one tensor, three steps of the fused loop with decoupled decay are Burn's `AdamW`'s.
    #[test]
    fn decoupled_decay_is_burns_adamw() {
        let device = crate::device::training_device("ndarray").unwrap().inner();
        let values: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let start = Tensor::<1>::from_data(TensorData::new(values.clone(), [64]), &device);
        let grad = |k: usize| {
            let g: Vec<f32> = (0..64)
                .map(|i| ((i * 13 + k * 5) % 17) as f32 / 9.0 - 0.9)
                .collect();
            Tensor::<1>::from_data(TensorData::new(g, [64]), &device)
        };
        let fused = FusedAdamConfig::new()
            .with_weight_decay(0.5)
            .with_decoupled_weight_decay(true)
            .build();
        let burns = AdamWConfig::new().with_weight_decay(0.5).build();
        let (mut a, mut b) = (start.clone(), start);
        let (mut sa, mut sb) = (None, None);
        for k in 0..3 {
            let lr = 1e-2 / (k + 1) as f64;
            (a, sa) = fused.step(lr, a, grad(k), sa);
            (b, sb) = burns.step(lr, b, grad(k), sb);
        }
        let (a, b) = (
            a.into_data().try_to_vec::<f32>(),
            b.into_data().try_to_vec::<f32>(),
        );
        let worst = a
            .unwrap()
            .iter()
            .zip(b.unwrap())
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-6, "{worst}");
    }
}
