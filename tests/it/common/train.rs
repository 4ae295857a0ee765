//! The learner tests' data and model: colour classes a narrow ResNet tells apart (shared by
//! `tests/it/train.rs` and `tests/wgpu.rs`).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use resnet_transfer::data::{ImageBatcher, ImageSet, Preprocess};
use resnet_transfer::train::{TwoPhase, TwoPhaseConfig, with_new_head};
use resnet_transfer::{Device, ResNet, ResNetConfig};

pub const SIDE: usize = 32;

/// `per_class` images of each of 4 classes: a red, green, blue or grey tint with noise and a
/// random bright square, so the classes are easy but not trivial.
pub fn colours(per_class: usize, seed: u64) -> ImageSet {
    let tints = [[200, 40, 40], [40, 200, 40], [40, 40, 200], [90, 90, 90]];
    let mut rng = StdRng::seed_from_u64(seed);
    let plane = SIDE * SIDE;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for i in 0..4 * per_class {
        let class = i % 4;
        let (sy, sx) = (rng.random_range(0..24), rng.random_range(0..24));
        for tint in tints[class] {
            for p in 0..plane {
                let (y, x) = (p / SIDE, p % SIDE);
                let square = (sy..sy + 8).contains(&y) && (sx..sx + 8).contains(&x);
                let v = if square {
                    255
                } else {
                    tint + rng.random_range(-40..40)
                };
                pixels.push(v.clamp(0, 255) as u8);
            }
        }
        labels.push(class);
    }
    ImageSet::new(pixels, labels, SIDE, SIDE).unwrap()
}

pub fn device() -> Device {
    resnet_transfer::device::training_device("ndarray").unwrap()
}

pub fn model(dropout: f64) -> ResNet {
    let inner = device().inner();
    let backbone = ResNetConfig::resnet18(1000)
        .with_width(8)
        .init(&inner)
        .unwrap();
    with_new_head(backbone, 4, dropout, 7, &inner)
}

pub fn learner(config: TwoPhaseConfig) -> TwoPhase {
    let mut learner = TwoPhase::new(
        config.with_batch_size(16),
        ImageBatcher::new(Preprocess::Torch),
    );
    learner.progress = false;
    learner
}
