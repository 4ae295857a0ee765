//! What the kernels need from a CPU backend: a float tensor's shape, its values as a host slice,
//! and a tensor made from host values. Flex and ndarray both provide them, so both run the same
//! training kernels ([`crate::cpu::conv_bn`]).

use std::borrow::Cow;

use burn::backend::Backend;
use burn::backend::tensor::FloatTensor;

/// A backend whose float tensors live in host memory as f32 buffers.
pub(crate) trait HostBackend: Backend {
    /// The tensor's dimensions.
    fn dims(x: &FloatTensor<Self>) -> Vec<usize>;
    /// The tensor's values in row-major order, copied only where it is a strided view. Only
    /// called on f32 tensors (the operations check the dtype before they dispatch).
    fn values(x: &FloatTensor<Self>) -> Cow<'_, [f32]>;
    /// A tensor owning `values`, of the given dimensions.
    fn from_values(values: Vec<f32>, dims: &[usize]) -> FloatTensor<Self>;
}

#[cfg(feature = "flex")]
impl HostBackend for burn::backend::Flex {
    fn dims(x: &FloatTensor<Self>) -> Vec<usize> {
        x.layout().shape().to_vec()
    }

    fn values(x: &FloatTensor<Self>) -> Cow<'_, [f32]> {
        match x.layout().contiguous_offsets() {
            Some((start, end)) => Cow::Borrowed(&x.storage::<f32>()[start..end]),
            None => Cow::Owned(x.to_contiguous().storage::<f32>().to_vec()),
        }
    }

    fn from_values(values: Vec<f32>, dims: &[usize]) -> FloatTensor<Self> {
        let data = burn::tensor::TensorData::new(values, dims.to_vec());
        burn::backend::flex::FlexTensor::from_data(data)
    }
}

#[cfg(feature = "ndarray")]
#[allow(deprecated)] // ndarray is deprecated upstream and kept on purpose: users asked for it.
impl HostBackend for burn::backend::NdArray {
    fn dims(x: &FloatTensor<Self>) -> Vec<usize> {
        use burn::backend::TensorMetadata;
        x.shape().to_vec()
    }

    fn values(x: &FloatTensor<Self>) -> Cow<'_, [f32]> {
        use burn::backend::ndarray::NdArrayTensor;
        match x {
            NdArrayTensor::F32(storage) => {
                let view = storage.view();
                match view.to_slice() {
                    Some(values) => Cow::Borrowed(values),
                    None => Cow::Owned(view.iter().copied().collect()),
                }
            }
            other => {
                unreachable!("the training operations dispatch f32 tensors only, not {other:?}")
            }
        }
    }

    fn from_values(values: Vec<f32>, dims: &[usize]) -> FloatTensor<Self> {
        let data = burn::tensor::TensorData::new(values, dims.to_vec());
        burn::backend::ndarray::NdArrayTensor::from_data(data)
    }
}
