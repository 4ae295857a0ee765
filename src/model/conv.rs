//! The convolution a ResNet is made of, its weight stored as the matrix the fast path multiplies.
//!
//! Burn's `Conv2d` keeps its weight `[C_out, C_in, kh, kw]` (PyTorch's and ONNX's layout). The
//! channels-last path multiplies the im2col matrix `[N·H·W, kh·kw·C_in]` by the weight as a
//! `[kh·kw·C_in, C_out]` matrix, so with Burn's layout every step paid for layout copies: the
//! 3x3 weights permuted forward, and every weight gradient transposed back (and the 3x3 ones
//! copied again by the optimizer). Stored as that matrix (Keras's `[kh, kw, C_in, C_out]`
//! kernel, flattened), the weight enters the product as it is and its gradient comes out of it
//! in the parameter's own layout: no copies at all.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::tensor::module::conv2d;
use burn::tensor::ops::ConvOptions;
use burn::tensor::{Device, Tensor};

/// A 2D convolution with symmetric zero padding, no dilation and no groups.
#[derive(Module, Debug)]
pub struct Conv {
    /// The weight as a `[kh·kw·C_in, C_out]` matrix: row `(ky·kw + kx)·C_in + c` holds tap
    /// `(ky, kx)` of input channel `c` (Keras's kernel layout, flattened).
    pub weight: Param<Tensor<2>>,
    /// The per-output-channel bias, if any.
    pub bias: Option<Param<Tensor<1>>>,
    /// Kernel size `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[vertical, horizontal]`.
    pub stride: [usize; 2],
    /// Zero padding on each side, `[vertical, horizontal]`.
    pub padding: [usize; 2],
}

impl Conv {
    /// A new convolution `channels[0] -> channels[1]` with a square kernel, padded by half the
    /// kernel, initialized as Burn's `Conv2d` is (Kaiming uniform, gain 1/√3, over fan-in) and,
    /// like it, lazily: weights that an import then replaces are never drawn.
    pub fn new(
        channels: [usize; 2],
        kernel: usize,
        stride: usize,
        bias: bool,
        device: &Device,
    ) -> Self {
        let [c_in, c_out] = channels;
        let taps = kernel * kernel;
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3f64.sqrt(),
            fan_out_only: false,
        };
        let (fan_in, fan_out) = (Some(c_in * taps), Some(c_out * taps));
        Self {
            weight: init.init_with([taps * c_in, c_out], fan_in, fan_out, device),
            bias: bias.then(|| init.init_with([c_out], fan_in, fan_out, device)),
            kernel: [kernel, kernel],
            stride: [stride, stride],
            padding: [kernel / 2, kernel / 2],
        }
    }

    /// Input and output channels.
    pub fn channels(&self) -> [usize; 2] {
        let [rows, c_out] = self.weight.lazy_shape().dims::<2>();
        [rows / (self.kernel[0] * self.kernel[1]), c_out]
    }

    /// The weight in Burn's, PyTorch's and ONNX's layout, `[C_out, C_in, kh, kw]`.
    pub fn weight_oihw(&self) -> Tensor<4> {
        let [c_out, c_in, kh, kw] = self.dims_oihw();
        self.weight
            .val()
            .reshape([kh, kw, c_in, c_out])
            .permute([3, 2, 0, 1])
    }

    /// The shape of [`weight_oihw`](Self::weight_oihw).
    pub fn dims_oihw(&self) -> [usize; 4] {
        let [c_in, c_out] = self.channels();
        [c_out, c_in, self.kernel[0], self.kernel[1]]
    }

    /// Sets the weight from Burn's, PyTorch's and ONNX's layout `[C_out, C_in, kh, kw]`.
    pub fn set_weight_oihw(&mut self, weight: Tensor<4>) {
        let [c_out, c_in, kh, kw] = weight.dims();
        self.kernel = [kh, kw];
        let matrix = weight
            .permute([2, 3, 1, 0])
            .reshape([kh * kw * c_in, c_out]);
        self.weight = Param::from_tensor(matrix);
    }

    /// Applies the convolution to `[N, C, H, W]` through Burn's own `conv2d`: the reference the
    /// channels-last path is tested against.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<4> {
        let options = ConvOptions::new(self.stride, self.padding, [1, 1], 1);
        conv2d(
            x,
            self.weight_oihw(),
            self.bias.as_ref().map(|b| b.val()),
            options,
        )
    }
}
