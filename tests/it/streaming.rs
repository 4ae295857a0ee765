//! Photo sets streamed from their files: the same images as held ones, random crops from the
//! whole decoded photo, and a file that disappears mid-run named in an error.

use std::path::Path;

use crate::common::rng_lock;
use crate::common::train::{device, learner, model};
use resnet_transfer::data::{Augment, ImageBatcher, Preprocess, list_image_folder};
use resnet_transfer::train::TwoPhaseConfig;

/// Photos of 640x480 in two class folders: a grey scene whose leftmost 60 columns are pure red,
/// outside the centred 480x480 square that resizing and centre-cropping keeps. The classes
/// differ by the scene's brightness.
fn wide_photos(root: &Path, per_class: u32) {
    for (class, grey) in [("dark", 60u8), ("light", 180u8)] {
        let dir = root.join(class);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let img = image::RgbImage::from_fn(640, 480, |x, y| {
                if x < 60 {
                    image::Rgb([255, 0, 0])
                } else {
                    let v = grey.wrapping_add(((x + 3 * y + i) % 7) as u8);
                    image::Rgb([v, v, v])
                }
            });
            img.save(dir.join(format!("{i}.png"))).unwrap();
        }
    }
}

/// Whether a planar RGB image holds a strongly red pixel.
fn has_red(rgb: &[f32], plane: usize) -> bool {
    (0..plane).any(|p| rgb[p] > 0.9 && rgb[plane + p] < 0.2 && rgb[2 * plane + p] < 0.2)
}

/// A streamed set reads the same pixels as the held one, and its batches without augmentation
/// are the same; with augmentation, its crops come from the whole decoded photo, so some reach
/// the red border the centred square never holds, where the held set's pad-and-crop never does.
#[test]
fn streamed_photos_read_as_held_ones_and_crop_from_the_whole_photo() {
    let tmp = tempfile::tempdir().unwrap();
    wide_photos(tmp.path(), 3);
    let files = list_image_folder(tmp.path()).unwrap();
    let held = files.read(32, false).unwrap().images;
    let streamed = files.stream(32, false).unwrap().images;
    assert!(streamed.is_streamed() && !held.is_streamed());
    assert!(
        streamed.pixels().is_empty(),
        "a streamed set holds no pixels"
    );
    assert_eq!(streamed.labels(), held.labels());
    for i in 0..held.len() {
        assert_eq!(
            streamed.image(i).unwrap(),
            held.image(i).unwrap(),
            "image {i}"
        );
    }
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let plain = ImageBatcher::new(Preprocess::Unit);
    let all: Vec<usize> = (0..held.len()).collect();
    let a = plain.batch_of(&held, &all, 3, &device).unwrap().images;
    let b = plain.batch_of(&streamed, &all, 3, &device).unwrap().images;
    assert_eq!(a.into_data(), b.into_data());

    let augmenting = ImageBatcher {
        augment: Some(Augment::default()),
        ..plain
    };
    let plane = 32 * 32;
    let red_in = |set: &resnet_transfer::data::ImageSet| -> usize {
        (0..20u64)
            .map(|seed| {
                let batch = augmenting.batch_of(set, &all, seed, &device).unwrap();
                let data = batch.images.into_data().convert::<f32>();
                let values = data.as_slice::<f32>().unwrap();
                values
                    .chunks(3 * plane)
                    .filter(|img| has_red(img, plane))
                    .count()
            })
            .sum()
    };
    assert_eq!(red_in(&held), 0, "the held squares never hold the border");
    let streamed_red = red_in(&streamed);
    assert!(
        streamed_red > 0,
        "no crop of 120 reached the border of the whole photo"
    );
    // Seeded: the same epoch seed crops the same way.
    let once = augmenting.batch_of(&streamed, &all, 5, &device).unwrap();
    let again = augmenting.batch_of(&streamed, &all, 5, &device).unwrap();
    assert_eq!(once.images.into_data(), again.images.into_data());
}

/// A photo removed while a streamed set trains is an error naming its file, not a panic, and
/// the model's own training on the same photos held in memory is unaffected.
#[test]
fn a_photo_removed_mid_run_is_named() {
    let _rng = rng_lock();
    let tmp = tempfile::tempdir().unwrap();
    wide_photos(tmp.path(), 4);
    let files = list_image_folder(tmp.path()).unwrap();
    let streamed = files.stream(32, false).unwrap().images;
    let gone = files.files[5].clone();
    std::fs::remove_file(&gone).unwrap();
    let config = TwoPhaseConfig::new()
        .with_phase1_epochs(1)
        .with_phase2_epochs(1);
    let empty = resnet_transfer::data::ImageSet::default();
    // The model's head has 4 classes; labels 0 and 1 are among them.
    let err = learner(config)
        .fit(model(0.5), &streamed, &empty, &device())
        .unwrap_err();
    let name = gone.file_name().unwrap().to_str().unwrap();
    assert!(err.to_string().contains(name), "{err}");
}
