//! Fuzzing the two CIFAR-10 parsers and the photo reader with proptest: arbitrary bytes, and real
//! files with bytes flipped and tails cut, must give a dataset (or pixels) or a typed error, never
//! a panic.
//! `PROPTEST_CASES=100000 cargo test --test it fuzz::` runs a longer campaign.

use std::path::Path;

use proptest::prelude::*;
use resnet_transfer::Error;
use resnet_transfer::data::cifar10::{parse_binary, parse_pickle};
use resnet_transfer::data::{ImageSet, read_image};

fn fixture(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/cifar10")
        .join(name);
    std::fs::read(path).unwrap()
}

/// Photos as Pillow writes them (tests/fixtures/make_photos.py), one of each format.
const PHOTOS: [&str; 8] = [
    "truncated/complete.jpg",
    "truncated/complete-progressive.jpg",
    "truncated/complete.png",
    "truncated/complete.webp",
    "truncated/complete.gif",
    "truncated/complete.bmp",
    "truncated/complete.tif",
    "orientation/orientation-6.jpg",
];

fn photo(name: &str) -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/photos")
        .join(name);
    std::fs::read(path).unwrap()
}

fn consistent(set: &ImageSet) {
    assert_eq!(set.pixels().len(), set.len() * 3072);
    assert!(set.labels().iter().all(|&l| l < 10));
}

/// Flips bytes of `base` at the given positions and cuts it at `cut`.
fn mutate(base: &[u8], flips: &[(usize, u8)], cut: usize) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for &(at, value) in flips {
        let at = at % bytes.len();
        bytes[at] ^= value;
    }
    bytes.truncate(cut % (bytes.len() + 1));
    bytes
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn binary_parser_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..10_000)) {
        if let Ok(set) = parse_binary(Path::new("fuzz.bin"), &bytes) {
            consistent(&set);
        }
    }

    #[test]
    fn pickle_parser_takes_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..4_096)) {
        if let Ok(set) = parse_pickle(Path::new("fuzz"), &bytes) {
            consistent(&set);
        }
    }

    #[test]
    fn mutated_official_files_never_panic(
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..6),
        cut in any::<usize>(),
    ) {
        let pickle = mutate(&fixture("cifar-10-batches-py/data_batch_1"), &flips, cut);
        if let Ok(set) = parse_pickle(Path::new("data_batch_1"), &pickle) {
            consistent(&set);
        }
        let binary = mutate(&fixture("cifar-10-batches-bin/data_batch_1.bin"), &flips, cut);
        match parse_binary(Path::new("data_batch_1.bin"), &binary) {
            Ok(set) => consistent(&set),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn valid_records_always_parse(labels in proptest::collection::vec(0u8..10, 0..20), fill in any::<u8>()) {
        let mut bytes = Vec::new();
        for &l in &labels {
            bytes.push(l);
            bytes.extend(std::iter::repeat_n(fill, 3072));
        }
        let set = parse_binary(Path::new("ok.bin"), &bytes).unwrap();
        prop_assert_eq!(set.labels().iter().map(|&l| l as u8).collect::<Vec<_>>(), labels);
    }

    #[test]
    fn mutated_photos_never_panic(
        which in 0..PHOTOS.len(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..6),
        cut in any::<usize>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("photo.jpg");
        std::fs::write(&file, mutate(&photo(PHOTOS[which]), &flips, cut)).unwrap();
        match read_image(&file, 16) {
            Ok(rgb) => prop_assert_eq!(rgb.len(), 3 * 16 * 16),
            Err(Error::Image { path, .. }) => prop_assert_eq!(path, file),
            Err(e) => prop_assert!(false, "{}", e),
        }
    }
}
