//! The operations on the CPU backends: each delegates to the kernels of [`crate::cpu::conv_bn`],
//! which read and write both backends' buffers through
//! [`HostBackend`](crate::cpu::host::HostBackend).

// ndarray is deprecated upstream and kept on purpose: users asked for it.
#![allow(deprecated)]

use burn::backend::tensor::FloatTensor;

use super::{
    BatchNormTrain, BatchNormTrainBackward, ConvTrain, ConvTrainBackward, MaxPoolTrain,
    MaxPoolTrainBackward, Shortcut,
};
use crate::cpu::{conv_bn, pool};

/// Implements the operations and their backward for a [`HostBackend`].
macro_rules! on_host_kernels {
    ($backend:ty) => {
        impl BatchNormTrain for $backend {
            fn bn_relu_train(
                x: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                beta: FloatTensor<Self>,
                shortcut: Shortcut<Self>,
                epsilon: f64,
                relu: bool,
            ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
                let shortcut = shortcut.into_option();
                conv_bn::bn_relu_train::<Self>(x, gamma, beta, shortcut, epsilon, relu)
            }
        }

        impl BatchNormTrainBackward for $backend {
            fn bn_relu_train_backward(
                grad: FloatTensor<Self>,
                x: FloatTensor<Self>,
                y: Option<FloatTensor<Self>>,
                mean: FloatTensor<Self>,
                var: FloatTensor<Self>,
                gamma: FloatTensor<Self>,
                epsilon: f64,
                shortcut: bool,
            ) -> [Option<FloatTensor<Self>>; 4] {
                conv_bn::bn_relu_train_backward::<Self>(
                    grad, x, y, mean, var, gamma, epsilon, shortcut,
                )
            }
        }

        impl ConvTrain for $backend {
            fn conv_nhwc(
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                geometry: [usize; 6],
            ) -> FloatTensor<Self> {
                conv_bn::conv_nhwc::<Self>(x, weight, geometry)
            }
        }

        impl ConvTrainBackward for $backend {
            fn conv_nhwc_backward(
                grad: FloatTensor<Self>,
                x: FloatTensor<Self>,
                weight: FloatTensor<Self>,
                geometry: [usize; 6],
                wanted: [bool; 2],
            ) -> [Option<FloatTensor<Self>>; 2] {
                conv_bn::conv_nhwc_backward::<Self>(grad, x, weight, geometry, wanted)
            }
        }

        impl MaxPoolTrain for $backend {
            fn max_pool_nhwc(x: FloatTensor<Self>, geometry: [usize; 6]) -> FloatTensor<Self> {
                pool::max_pool_nhwc::<Self>(x, geometry)
            }
        }

        impl MaxPoolTrainBackward for $backend {
            fn max_pool_nhwc_backward(
                grad: FloatTensor<Self>,
                x: FloatTensor<Self>,
                y: FloatTensor<Self>,
                geometry: [usize; 6],
            ) -> FloatTensor<Self> {
                pool::max_pool_nhwc_backward::<Self>(grad, x, y, geometry)
            }
        }
    };
}

#[cfg(feature = "flex")]
on_host_kernels!(burn::backend::Flex);
#[cfg(feature = "ndarray")]
on_host_kernels!(burn::backend::NdArray);
