//! The channels-last path's convolution and training BatchNorm as single operations with their
//! own backward on the CPU backends (flex and ndarray), through Burn's backend-extension API.
//!
//! As Burn tensor operations ([`nhwc`](super::nhwc)), a convolution was an im2col gather with a
//! host-built index (a scatter-add backward) and a matmul whose output flex zeroes and then
//! copies into an aligned block; a training BatchNorm about ten element-wise operations forward
//! and twenty backward, each a pass over the activations on one thread with its own output
//! allocation and autodiff node.
//!
//! [`ConvTrain`]: im2col written straight from the `[N, H, W, C]` input (a 1x1 stride-1
//! convolution multiplies the input itself), one `gemm` product into a buffer the product
//! fills. Backward: `dW = columnsᵀ · dY` and `dcolumns = dY · Wᵀ` side by side on the pool's
//! threads, then col2im adds each row back onto the pixels it came from.
//!
//! [`BatchNormTrain`]: two passes forward (column sums, then normalize, add the shortcut where
//! there is one, ReLU) and two backward (column sums of the gradient, then the input's
//! gradient), split over rayon's threads, with the closed-form gradient of a batch
//! normalization:
//!
//! ```text
//! dz = dy · [y > 0]                  (the ReLU's mask; dz = dy without ReLU; dshortcut = dz)
//! dβ = Σ dz        dγ = Σ dz · x̂     (sums over the rows, per channel)
//! dx = γ / σ · (dz − dβ / R − x̂ · dγ / R)
//! ```
//!
//! where `x̂ = (x − μ) / σ`, `σ = √(var + ε)` and `R` is the number of rows (pixels × images).
//!
//! Both are implemented for flex and ndarray (`cpu.rs`, on the kernels of [`crate::cpu::conv_bn`])
//! and for autodiff over any backend that implements them; other backends (wgpu) compose Burn's
//! operations, which `tests/it/fast_path.rs` holds these to (outputs, every gradient, running
//! statistics), on both CPU backends.

// Without a CPU backend none implements the operations, and the generated dispatch leaves their
// arguments unread.
#![cfg_attr(
    not(any(feature = "flex", feature = "ndarray")),
    allow(unused_variables)
)]
// ndarray is deprecated upstream and kept on purpose: users asked for it.
#![allow(deprecated)]

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, NodeGuard, Ops, OpsKind};
use burn::backend::tensor::FloatTensor;
use burn::backend::{
    Autodiff, AutodiffBackend, Backend, Dispatch, ExtensionType, backend_extension,
};
use burn::tensor::{DType, Tensor};

#[cfg(any(feature = "flex", feature = "ndarray"))]
mod cpu;

/// BatchNorm over the columns of a `[rows, channels]` matrix with batch statistics, plus a
/// shortcut of the same shape where given, then a ReLU where `relu`: `(y, mean, var)`, the
/// biased variance, as the running statistics take them.
#[backend_extension(Flex: cfg(feature = "flex"), NdArray: cfg(feature = "ndarray"), Autodiff)]
pub trait BatchNormTrain: Backend {
    /// The forward pass; see the module's documentation.
    fn bn_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        #[extension_type] shortcut: Shortcut<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);
}

/// What is added to the normalized values before the ReLU: a residual block's shortcut, or
/// nothing. (An enum rather than an `Option`, which the extension macro does not route.)
#[derive(ExtensionType)]
pub enum Shortcut<B: Backend> {
    /// A tensor the shape of the input.
    Add(FloatTensor<B>),
    /// No shortcut.
    Zero,
}

impl<B: Backend> Shortcut<B> {
    fn from_option(tensor: Option<FloatTensor<B>>) -> Self {
        tensor.map_or(Self::Zero, Self::Add)
    }

    fn into_option(self) -> Option<FloatTensor<B>> {
        match self {
            Self::Add(tensor) => Some(tensor),
            Self::Zero => None,
        }
    }
}

/// The backward pass, on the backend autodiff wraps.
trait BatchNormTrainBackward: Backend {
    /// `[dx, dγ, dβ, dshortcut]` from the output's gradient and what the forward kept; the
    /// shortcut's only where `shortcut` (it had one, and it is tracked).
    #[allow(clippy::too_many_arguments)]
    fn bn_relu_train_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        y: Option<FloatTensor<Self>>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        epsilon: f64,
        shortcut: bool,
    ) -> [Option<FloatTensor<Self>>; 4];
}

/// `bn(x) [+ shortcut]`, then ReLU where `relu`, for `[rows, channels]` f32 `x` on autodiff
/// over a CPU backend; the batch mean and biased variance come back beside it (untracked). `None` where
/// the operation does not apply (another backend or dtype): the caller composes Burn's
/// operations instead.
pub(crate) fn batch_norm_train(
    x: Tensor<2>,
    [gamma, beta]: [Tensor<1>; 2],
    shortcut: Option<Tensor<2>>,
    epsilon: f64,
    relu: bool,
) -> Option<(Tensor<2>, Tensor<1>, Tensor<1>)> {
    let f32s = [gamma.dtype(), beta.dtype()] == [DType::F32; 2]
        && shortcut.as_ref().is_none_or(|s| s.dtype() == DType::F32);
    if !applies(&x) || !f32s {
        return None;
    }
    let (y, mean, var) = <Dispatch as BatchNormTrain>::bn_relu_train(
        x.into_dispatch(),
        gamma.into_dispatch(),
        beta.into_dispatch(),
        Shortcut::from_option(shortcut.map(Tensor::into_dispatch)),
        epsilon,
        relu,
    );
    Some((
        Tensor::from_dispatch(y),
        Tensor::from_dispatch(mean),
        Tensor::from_dispatch(var),
    ))
}

/// Whether the fused operation runs for `x`: f32 on a CPU backend, under autodiff.
fn applies(x: &Tensor<2>) -> bool {
    x.dtype() == DType::F32 && x.device().is_autodiff() && crate::device::is_host(&x.device())
}

impl<B: BatchNormTrain + BatchNormTrainBackward, C: CheckpointStrategy> BatchNormTrain
    for Autodiff<B, C>
{
    fn bn_relu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        shortcut: Shortcut<Self>,
        epsilon: f64,
        relu: bool,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let shortcut = shortcut.into_option();
        /// The operation's node: `N` parents, x, γ, β and the shortcut where there is one.
        #[derive(Debug)]
        struct BatchNormReluBackward<const N: usize>;

        /// What the backward needs: x, y (for the ReLU's mask), the batch statistics, γ, ε.
        type State<B> = (
            FloatTensor<B>,
            Option<FloatTensor<B>>,
            FloatTensor<B>,
            FloatTensor<B>,
            FloatTensor<B>,
            f64,
        );

        impl<B: Backend + BatchNormTrainBackward, const N: usize> Backward<B, N>
            for BatchNormReluBackward<N>
        {
            type State = State<B>;

            fn backward(
                self,
                ops: Ops<Self::State, N>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (x, y, mean, var, gamma, epsilon) = ops.state;
                let grad = grads.consume::<B>(&ops.node);
                let shortcut = ops.parents.get(3).is_some_and(Option::is_some);
                let outputs =
                    B::bn_relu_train_backward(grad, x, y, mean, var, gamma, epsilon, shortcut);
                for (parent, grad) in ops.parents.iter().zip(outputs) {
                    if let (Some(parent), Some(grad)) = (parent, grad) {
                        grads.register::<B>(parent.id, grad);
                    }
                }
            }
        }

        let nodes = [x.node(), gamma.node(), beta.node()];
        let shortcut_node = shortcut.as_ref().map(|s| s.node());
        let (x, gamma, beta) = (
            x.into_primitive(),
            gamma.into_primitive(),
            beta.into_primitive(),
        );
        let shortcut = Shortcut::from_option(shortcut.map(|s| s.into_primitive()));
        let (y, mean, var) =
            B::bn_relu_train(x.clone(), gamma.clone(), beta, shortcut, epsilon, relu);
        let statistics = (
            Self::from_inner(mean.clone()),
            Self::from_inner(var.clone()),
        );
        let kept_y = relu.then(|| y.clone());
        let state = (x, kept_y, mean, var, gamma, epsilon);
        // The same node with or without the shortcut as a fourth parent.
        let y = match shortcut_node {
            None => record::<B, C, _, 3>(BatchNormReluBackward::<3>, nodes, state, y),
            Some(shortcut) => {
                let [x, gamma, beta] = nodes;
                let nodes = [x, gamma, beta, shortcut];
                record::<B, C, _, 4>(BatchNormReluBackward::<4>, nodes, state, y)
            }
        };
        (y, statistics.0, statistics.1)
    }
}

/// A convolution of channels-last `[N, H, W, C]` input by a `[kh·kw·C, C_out]` weight matrix
/// (see [`Conv`](super::conv::Conv)), as one matrix product over the batch: im2col straight
/// from the input, no gather index, and outputs written by the product itself.
#[backend_extension(Flex: cfg(feature = "flex"), NdArray: cfg(feature = "ndarray"), Autodiff)]
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

/// `conv(x)` for channels-last f32 `x` on a CPU backend (with or without autodiff); `None`
/// elsewhere, where the caller composes Burn's operations.
pub(crate) fn conv_nhwc(
    x: Tensor<4>,
    weight: Tensor<2>,
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [ph, pw]: [usize; 2],
) -> Option<Tensor<4>> {
    if !crate::device::is_host(&x.device()) || [x.dtype(), weight.dtype()] != [DType::F32; 2] {
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
        record::<B, C, _, 2>(ConvBackward, nodes, (x, weight, geometry), y)
    }
}

/// A max pool of channels-last `[N, H, W, C]` input over each window's pixels (padding never
/// wins), as one operation each way ([`crate::cpu::pool`]).
#[backend_extension(Flex: cfg(feature = "flex"), NdArray: cfg(feature = "ndarray"), Autodiff)]
pub trait MaxPoolTrain: Backend {
    /// `[N, Ho, Wo, C]`; `geometry` is `[kh, kw, stride_y, stride_x, pad_y, pad_x]`.
    fn max_pool_nhwc(x: FloatTensor<Self>, geometry: [usize; 6]) -> FloatTensor<Self>;
}

/// The pool's backward, on the backend autodiff wraps.
trait MaxPoolTrainBackward: Backend {
    /// `dx` from the output's gradient, the input and the output.
    fn max_pool_nhwc_backward(
        grad: FloatTensor<Self>,
        x: FloatTensor<Self>,
        y: FloatTensor<Self>,
        geometry: [usize; 6],
    ) -> FloatTensor<Self>;
}

/// `max_pool(x)` for channels-last f32 `x` on a CPU backend (with or without autodiff), padded
/// by `padding` on both sides, less than the kernel; `None` elsewhere, where the caller composes
/// Burn's operations.
pub(crate) fn max_pool_nhwc(
    x: Tensor<4>,
    [kh, kw]: [usize; 2],
    [sh, sw]: [usize; 2],
    [ph, pw]: [usize; 2],
) -> Option<Tensor<4>> {
    let fits = ph < kh && pw < kw && sh * sw > 0;
    if !fits || !crate::device::is_host(&x.device()) || x.dtype() != DType::F32 {
        return None;
    }
    let geometry = [kh, kw, sh, sw, ph, pw];
    let y = <Dispatch as MaxPoolTrain>::max_pool_nhwc(x.into_dispatch(), geometry);
    Some(Tensor::from_dispatch(y))
}

impl<B: MaxPoolTrain + MaxPoolTrainBackward, C: CheckpointStrategy> MaxPoolTrain
    for Autodiff<B, C>
{
    fn max_pool_nhwc(x: FloatTensor<Self>, geometry: [usize; 6]) -> FloatTensor<Self> {
        /// The operation's node: one parent (x).
        #[derive(Debug)]
        struct MaxPoolBackward;

        impl<B: Backend + MaxPoolTrainBackward> Backward<B, 1> for MaxPoolBackward {
            /// The input and the output (which the layers around it keep anyway: the
            /// BatchNorm before it for its ReLU's mask, the convolution after it), the geometry.
            type State = (FloatTensor<B>, FloatTensor<B>, [usize; 6]);

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let (x, y, geometry) = ops.state;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(parent) = &ops.parents[0] {
                    let dx = B::max_pool_nhwc_backward(grad, x, y, geometry);
                    grads.register::<B>(parent.id, dx);
                }
            }
        }

        let nodes = [x.node()];
        let x = x.into_primitive();
        let y = B::max_pool_nhwc(x.clone(), geometry);
        record::<B, C, _, 1>(MaxPoolBackward, nodes, (x, y.clone(), geometry), y)
    }
}

/// Records `output` as the result of `op` on the `nodes` it read: with `state` for the backward
/// where a parent is tracked, as a constant otherwise.
fn record<B: Backend, C: CheckpointStrategy, Op: Backward<B, N>, const N: usize>(
    op: Op,
    nodes: [NodeGuard; N],
    state: Op::State,
    output: FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => prep.finish(state, output),
        OpsKind::UnTracked(prep) => prep.finish(output),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BackendKind;
    use burn::nn::PaddingConfig2d;
    use burn::nn::pool::MaxPool2dConfig;
    use burn::tensor::Distribution;

    /// The pool against Burn's `max_pool2d` (channels first) on inputs of both signs, odd and
    /// even sides (windows over padding on one side or both), output and input gradient, on
    /// both CPU backends.
    #[test]
    fn max_pool_matches_burns() {
        for kind in BackendKind::compiled() {
            let device = crate::device::training_device(kind.name()).unwrap();
            if !crate::device::is_host(&device) {
                continue;
            }
            for ([kernel, stride, pad], side) in [([3, 2, 1], 9), ([3, 2, 1], 8), ([2, 1, 0], 5)] {
                let dims = [2, side, side + 1, 5];
                let x = Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device)
                    .require_grad();
                let got = max_pool_nhwc(x.clone(), [kernel; 2], [stride; 2], [pad; 2]).unwrap();
                let pool = MaxPool2dConfig::new([kernel; 2])
                    .with_strides([stride; 2])
                    .with_padding(PaddingConfig2d::Explicit(pad, pad, pad, pad))
                    .init();
                let want = pool
                    .forward(x.clone().permute([0, 3, 1, 2]))
                    .permute([0, 2, 3, 1]);
                assert_eq!(got.dims(), want.dims(), "{kind:?} {side}");
                let weights = Tensor::<4>::random(got.dims(), Distribution::Default, &device);
                let grad = |y: Tensor<4>| {
                    let grads = (y * weights.clone()).sum().backward();
                    x.grad(&grads).unwrap().into_data()
                };
                let what = format!("{kind:?}, {kernel}x{kernel}/{stride} pad {pad}, side {side}");
                got.clone()
                    .into_data()
                    .assert_eq(&want.clone().into_data(), true);
                grad(got).assert_approx_eq::<f32>(&grad(want), Default::default());
                eprintln!("{what}: ok");
            }
        }
    }

    #[test]
    fn both_cpu_backends_run_the_operations_and_wgpu_composes_burns() {
        for kind in BackendKind::compiled() {
            let device = crate::device::training_device(kind.name()).unwrap();
            let x = Tensor::<4>::ones([1, 4, 4, 2], &device);
            let weight = Tensor::<2>::ones([2, 3], &device);
            let conv = conv_nhwc(x, weight, [1, 1], [1, 1], [0, 0]);
            let rows = Tensor::<2>::ones([4, 3], &device);
            let [gamma, beta] = [Tensor::<1>::ones([3], &device), Tensor::zeros([3], &device)];
            let bn = batch_norm_train(rows, [gamma, beta], None, 1e-5, true);
            let host = crate::device::is_host(&device);
            assert_eq!((conv.is_some(), bn.is_some()), (host, host), "{kind:?}");
        }
    }
}
