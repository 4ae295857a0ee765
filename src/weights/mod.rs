//! Weights: import from ONNX, and the crate's own saved models.

mod onnx;

pub use onnx::{Imported, InputLayout, describe, import_onnx};
