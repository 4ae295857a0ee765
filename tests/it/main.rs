//! The integration tests, one binary with a module per subject so that Burn is linked once.
//!
//! Tests run in parallel threads of this one process. Burn's random generator is shared by all of
//! them, so a test that seeds it holds [`common::rng_lock`]; none of them changes the process's
//! environment (those are `tests/environment.rs`, a binary of their own).

mod backends;
mod common;
mod data;
mod examples;
mod explain;
mod export;
mod fast_path;
mod fuzz;
mod model;
mod onnx;
mod steering;
mod streaming;
mod train;
