//! BatchNorm in training mode, with the ReLU after it, as one operation with its own backward on
//! flex.
//!
//! Written as Burn tensor operations ([`nhwc::batch_norm`](super::nhwc::batch_norm)), a training
//! BatchNorm is about ten element-wise operations forward and twenty backward, each a pass over
//! the activations on one thread, each with its own output allocation and autodiff node. Here
//! the forward is two passes (column sums, then normalize + ReLU) and the backward two (column
//! sums of the gradient, then the input's gradient), split over rayon's threads, with the
//! closed-form gradient of a batch normalization:
//!
//! ```text
//! dz = dy · [y > 0]                  (the ReLU's mask; dz = dy without ReLU)
//! dβ = Σ dz        dγ = Σ dz · x̂     (sums over the rows, per channel)
//! dx = γ / σ · (dz − dβ / R − x̂ · dγ / R)
//! ```
//!
//! where `x̂ = (x − μ) / σ`, `σ = √(var + ε)` and `R` is the number of rows (pixels × images).
//! It is a Burn backend extension: implemented for flex and for autodiff over flex, and used
//! only there (`tests/model.rs` holds it to the plain operations on ndarray and to autodiff's
//! own gradients).

// Without flex no backend implements the operations, and the generated dispatch leaves their
// arguments unread.
#![cfg_attr(not(feature = "flex"), allow(unused_variables))]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, AutodiffBackend, Backend, Dispatch, backend_extension};
use burn::tensor::{DType, Tensor};

#[cfg(feature = "flex")]
mod flex;

/// BatchNorm over the columns of a `[rows, channels]` matrix with batch statistics, optionally
/// followed by a ReLU: `(y, mean, var)`, the biased variance, as the running statistics take
/// them.
#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait BatchNormTrain: Backend {
    /// The forward pass; see the module's documentation.
    fn bn_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// The backward pass, on the backend autodiff wraps.
trait BatchNormTrainBackward: Backend {
    /// `(dx, dγ, dβ)` from the output's gradient and what the forward kept.
    #[allow(clippy::too_many_arguments)]
    fn bn_relu_train_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        y: Option<FloatTensor<Self>>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
    ) -> [FloatTensor<Self>; 3];
}

/// `bn(x)`, then ReLU where `relu`, for `[rows, channels]` f32 `x` on autodiff over flex; the
/// batch mean and biased variance come back beside it (untracked). `None` where the operation
/// does not apply (another backend or dtype): the caller composes Burn's operations instead.
pub(crate) fn batch_norm_train(
    x: Tensor<2>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    epsilon: f64,
    relu: bool,
) -> Option<(Tensor<2>, Tensor<1>, Tensor<1>)> {
    if !applies(&x) || [gamma.dtype(), beta.dtype()] != [DType::F32; 2] {
        return None;
    }
    let (y, mean, var) = <Dispatch as BatchNormTrain>::bn_relu_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        epsilon,
        relu,
    );
    Some((
        Tensor::from_dispatch(y),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(var),
    ))
}

/// Whether the fused operation runs for `x`: f32 on flex, under autodiff.
fn applies(x: &Tensor<2>) -> bool {
    x.dtype() == DType::F32 && x.device().is_autodiff() && on_flex(&x.device())
}

/// Whether `device` is flex's (with or without autodiff).
fn on_flex(device: &burn::tensor::Device) -> bool {
    #[cfg(feature = "flex")]
    {
        use burn::backend::DispatchDevice;
        matches!(
            device.clone().inner().as_dispatch(),
            DispatchDevice::Flex(_)
        )
    }
    #[cfg(not(feature = "flex"))]
    {
        let _ = device;
        false
    }
}

impl<B: BatchNormTrain + BatchNormTrainBackward, C: CheckpointStrategy> BatchNormTrain
    for Autodiff<B, C>
{
    fn bn_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        /// The operation's node: three parents (x, γ, β).
        #[derive(Debug)]
        struct BatchNormReluBackward;

        /// What the backward needs: x, y (for the ReLU's mask), the batch statistics, γ, ε.
        type State<B> = (
            FloatTensor<B>,
            Option<FloatTensor<B>>,
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            f64,
        );

        impl<B: Backend + BatchNormTrainBackward> Backward<B, 3> for BatchNormReluBackward {
            type State = State<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (x, y, mean, var, gamma, epsilon) = ops.state;
                let grad = grads.consume::<B>(&ops.node);
                let outputs = B::bn_relu_train_backward(grad, x, y, mean, var, gamma, epsilon);
                for (parent, grad) in ops.parents.iter().zip(outputs) {
                    if let Some(parent) = parent {
                        grads.register::<B>(parent.id, grad);
                    }
                }
            }
        }

        let nodes = [x.node(), gamma.node(), beta.node()];
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        let (y, mean, var) = B::bn_relu_train(x.clone(), gamma.clone(), beta, epsilon, relu);
        let statistics = (
            Self::from_inner(mean.clone()),
            Self::from_inner(var.clone()),
        );
        let y = match BatchNormReluBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let kept_y = relu.then(|| y.clone());
                prep.finish((x, kept_y, mean, var, gamma, epsilon), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, statistics.0, statistics.1)
    }
}

/// A convolution of channels-last `[N, H, W, C]` input by a `[kh·kw·C, C_out]` weight matrix
/// (see [`Conv`](super::conv::Conv)), as one matrix product over the batch: im2col straight
/// from the input, no gather index, and outputs written by the product itself.
#[backend_extension(Flex: cfg(feature = "flex"), Autodiff)]
pub trait ConvTrain: Backend {
    /// `[N, Ho, Wo, C_out]`; `geometry` is `[kh, kw, stride_y, stride_x, pad_y, pad_x]`.
    fn conv_nhwc(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: [usize; 6],
    ) -> FloatTensor<Self>;
}

/// The convolution's backward, on the backend autodiff wraps.
trait ConvTrainBackward: Backend {
    /// `(dx, dweight)`, each only where asked for.
    fn conv_nhwc_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: [usize; 6],
        wanted: [bool; 2],
    ) -> [Option<FloatTensor<Self>>; 2];
}

/// `conv(x)` for channels-last f32 `x` on flex (with or without autodiff); `None` elsewhere,
/// where the caller composes Burn's operations.
pub(crate) fn conv_nhwc(
    x: Tensor<4>,
    weight: Tensor<2>,
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [ph, pw]: [usize; 2],
) -> Option<Tensor<4>> {
    if !on_flex(&x.device()) || [x.dtype(), weight.dtype()] != [DType::F32; 2] {
        return None;
    }
    let y = <Dispatch as ConvTrain>::conv_nhwc(
        x.into_dispatch(),
        weight.into_dispatch(),
        [kh, kw, sh, sw, ph, pw],
    );
    Some(Tensor::from_dispatch(y))
}

impl<B: ConvTrain + ConvTrainBackward, C: CheckpointStrategy> ConvTrain for Autodiff<B, C> {
    fn conv_nhwc(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        geometry: [usize; 6],
    ) -> FloatTensor<Self> {
        /// The operation's node: two parents (x, weight).
        #[derive(Debug)]
        struct ConvBackward;

        impl<B: Backend + ConvTrainBackward> Backward<B, 2> for ConvBackward {
            type State = (FloatTensor<B>, FloatTensor<B>, [usize; 6]);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (x, weight, geometry) = ops.state;
                let grad = grads.consume::<B>(&ops.node);
                let wanted = [ops.parents[0].is_some(), ops.parents[1].is_some()];
                let outputs = B::conv_nhwc_backward(grad, x, weight, geometry, wanted);
                for (parent, grad) in ops.parents.iter().zip(outputs) {
                    if let (Some(parent), Some(grad)) = (parent, grad) {
                        grads.register::<B>(parent.id, grad);
                    }
                }
            }
        }

        let nodes = [x.node(), weight.node()];
        let (x, weight) = (x.into_primitive(), weight.into_primitive());
        let y = B::conv_nhwc(x.clone(), weight.clone(), geometry);
        match ConvBackward.prepare::<C>(nodes).compute_bound().stateful() {
            OpsKind::Tracked(prep) => prep.finish((x, weight, geometry), y),
            OpsKind::UnTracked(prep) => prep.finish(y),
        }
    }
}
