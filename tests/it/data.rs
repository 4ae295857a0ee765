//! CIFAR-10 from files in the exact official formats (made by tests/fixtures/make_cifar10.py),
//! the download path against a local HTTP server, batches in NCHW, and users' photos as Pillow
//! writes them (tests/fixtures/make_photos.py): EXIF-rotated, in every format torchvision reads,
//! cut short, and in messy folders.

use std::path::{Path, PathBuf};

use resnet_transfer::Error;
use resnet_transfer::data::{Cifar10, Downloader, ImageBatcher, Preprocess, stratified_split};
use resnet_transfer::download::{self, Checksum};

use crate::common::cifar::{
    check, copy_dir, expected_label, expected_pixel, fixtures, md5_of, serve,
};

#[test]
fn both_formats_read_exact_pixels_from_folders_and_archives() {
    let root = fixtures();
    for path in [
        root.join("cifar-10-batches-bin"),
        root.join("cifar-10-batches-py"),
        root.join("cifar-10-binary.tar.gz"),
        root.join("cifar-10-python.tar.gz"),
    ] {
        let cifar = Cifar10::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        check(&cifar);
    }
    // A parent folder holding an extracted folder (torchvision's `root`).
    check(&Cifar10::load(&root).unwrap());
}

#[test]
fn batches_are_nchw_and_preprocessed() {
    let cifar = Cifar10::load(fixtures().join("cifar-10-batches-py")).unwrap();
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let batch = ImageBatcher::new(Preprocess::Caffe)
        .batch_of(&cifar.train, &[3, 17], 0, &device)
        .unwrap();
    assert_eq!(batch.images.dims(), [2, 3, 32, 32]);
    let images = batch.images.into_data().try_to_vec::<f32>().unwrap();
    let at = |n: usize, c: usize, y: usize, x: usize| images[((n * 3 + c) * 32 + y) * 32 + x];
    // Image 17 is the second file's image 1; caffe's channel 0 is blue minus 103.939.
    let blue = expected_pixel(3, 1, 2, 4, 9) as f32;
    assert_eq!(at(1, 0, 4, 9), blue - 103.939);
    let red = expected_pixel(1, 3, 0, 0, 1) as f32;
    assert_eq!(at(0, 2, 0, 1), red - 123.68);
    let targets = batch.targets.into_data().try_to_vec::<i64>().unwrap();
    assert_eq!(
        targets,
        vec![expected_label(1, 3) as i64, expected_label(3, 1) as i64]
    );

    let resized = ImageBatcher {
        size: Some(64),
        ..ImageBatcher::new(Preprocess::Unit)
    };
    let batch = resized
        .batch_of(&cifar.test, &[0, 1, 2], 0, &device)
        .unwrap();
    assert_eq!(batch.images.dims(), [3, 3, 64, 64]);
}

#[test]
fn seeded_sample_of_the_generated_set_is_stratified() {
    let cifar = Cifar10::load(fixtures().join("cifar-10-batches-bin")).unwrap();
    let split = stratified_split(cifar.train.labels(), 10, 20, 10, 42).unwrap();
    let sample = cifar.train.select(&split.train);
    assert_eq!(sample.class_counts(10), vec![2; 10]);
    assert_eq!(
        split,
        stratified_split(cifar.train.labels(), 10, 20, 10, 42).unwrap()
    );
}

#[test]
fn bad_files_give_typed_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bin = tmp.path().join("cifar-10-batches-bin");
    copy_dir(&fixtures().join("cifar-10-batches-bin"), &bin);

    // Truncated: the last record of data_batch_3 loses its tail.
    let file = bin.join("data_batch_3.bin");
    let bytes = std::fs::read(&file).unwrap();
    std::fs::write(&file, &bytes[..bytes.len() - 10]).unwrap();
    match Cifar10::load(&bin) {
        Err(Error::Truncated { path, offset, .. }) => {
            assert_eq!(path, file);
            assert_eq!(offset, 7 * 3073);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // A label of 10 in the second record.
    let mut bytes = bytes.clone();
    bytes[3073] = 10;
    std::fs::write(&file, &bytes).unwrap();
    let err = Cifar10::load(&bin).unwrap_err();
    assert!(
        matches!(&err, Error::BadLabel { label: 10, path, .. } if *path == file),
        "{err}"
    );
    assert!(err.to_string().contains("byte offset 3073"), "{err}");

    // A pickle without `data`, and one whose label is out of range.
    let py = tmp.path().join("py").join("cifar-10-batches-py");
    copy_dir(&fixtures().join("cifar-10-batches-py"), &py);
    let file = py.join("data_batch_2");
    let mut dict = std::collections::BTreeMap::new();
    dict.insert("labels".to_string(), vec![1i64, 2]);
    std::fs::write(
        &file,
        serde_pickle::to_vec(&dict, Default::default()).unwrap(),
    )
    .unwrap();
    let err = Cifar10::load(&py).unwrap_err();
    assert!(
        matches!(&err, Error::BadFormat { path, reason } if *path == file && reason.contains("data")),
        "{err}"
    );

    // A corrupt archive.
    let archive = tmp.path().join("cifar-10-binary.tar.gz");
    let bytes = std::fs::read(fixtures().join("cifar-10-binary.tar.gz")).unwrap();
    std::fs::write(&archive, &bytes[..bytes.len() / 2]).unwrap();
    let err = Cifar10::load(&archive).unwrap_err();
    assert!(
        matches!(&err, Error::BadFormat { path, .. } if *path == archive),
        "{err}"
    );

    // Nothing there at all: the error says what to put where.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let err = Cifar10::load(&empty).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("cifar-10-binary.tar.gz") && message.contains(&*empty.to_string_lossy()),
        "{message}"
    );
}

#[test]
fn download_verifies_writes_atomically_and_reads() {
    let archive = fixtures().join("cifar-10-binary.tar.gz");
    let (url, server) = serve(std::fs::read(&archive).unwrap(), 200, 2);
    let tmp = tempfile::tempdir().unwrap();

    // The official checksum does not match the fixture: an error, and nothing left behind.
    let official = Downloader {
        base_url: url.clone(),
        progress: false,
        checksum: None,
    };
    let err = Cifar10::find_or_download(Some(tmp.path()), Some(&official)).unwrap_err();
    assert!(
        matches!(
            err,
            Error::Checksum {
                algorithm: "md5",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "no half file left"
    );

    // With the mirror's checksum it downloads, and the data reads.
    let mirror = Downloader {
        checksum: Some(Checksum::Md5(md5_of(&archive))),
        ..official
    };
    let cifar = Cifar10::find_or_download(Some(tmp.path()), Some(&mirror)).unwrap();
    check(&cifar);
    let saved = tmp.path().join("cifar-10-binary.tar.gz");
    assert_eq!(
        std::fs::read(&saved).unwrap(),
        std::fs::read(&archive).unwrap()
    );
    server.join().unwrap();

    // Found locally the second time: no server is needed.
    check(&Cifar10::find_or_download(Some(tmp.path()), Some(&mirror)).unwrap());
}

#[test]
fn failed_download_names_the_destination() {
    let (url, server) = serve(b"gone".to_vec(), 404, 1);
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("weights.onnx");
    let err = download::fetch(
        &format!("{url}/weights.onnx"),
        &dest,
        &Checksum::Sha256("00".into()),
        false,
    )
    .unwrap_err();
    match &err {
        Error::Download {
            destination,
            reason,
            ..
        } => {
            assert_eq!(destination, &dest);
            assert!(reason.contains("404"), "{reason}");
        }
        other => panic!("expected Download, got {other:?}"),
    }
    assert!(err.to_string().contains(&*dest.to_string_lossy()));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    server.join().unwrap();
}

#[test]
fn photo_folders_read_resize_and_batch_through_burns_batcher() {
    use burn::data::dataloader::batcher::Batcher;
    use burn::data::dataset::Dataset;
    use resnet_transfer::data::{ImageDataset, read_image_folder};

    let root = tempfile::tempdir().unwrap();
    for (class, colour) in [("cat", [200u8, 30, 30]), ("dog", [30, 30, 200])] {
        std::fs::create_dir_all(root.path().join(class)).unwrap();
        for (i, (w, h)) in [(40u32, 30u32), (64, 64)].into_iter().enumerate() {
            let img = image::RgbImage::from_pixel(w, h, image::Rgb(colour));
            img.save(root.path().join(class).join(format!("{i}.png")))
                .unwrap();
        }
        // Not an image by its ending: skipped.
        std::fs::write(root.path().join(class).join("notes.txt"), "x").unwrap();
    }
    let folder = read_image_folder(root.path(), 32, false).unwrap();
    let (set, names) = (folder.images, folder.class_names);
    assert_eq!(names, vec!["cat", "dog"]);
    assert_eq!(set.len(), 4);
    assert_eq!(set.labels(), &[0, 0, 1, 1]);
    assert_eq!((set.height(), set.width()), (32, 32));
    assert_eq!(set.pixel(0, 0, 5, 5).unwrap(), 200);
    assert_eq!(set.pixel(3, 2, 31, 31).unwrap(), 200);

    let set = std::sync::Arc::new(set);
    let dataset = ImageDataset::new(set.clone(), 0);
    let items = vec![dataset.get(0).unwrap(), dataset.get(3).unwrap()];
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let batch = ImageBatcher::new(Preprocess::Unit).batch(items, &device);
    assert_eq!(batch.images.dims(), [2, 3, 32, 32]);
    let pixels = batch.images.into_data().try_to_vec::<f32>().unwrap();
    assert!((pixels[0] - 200.0 / 255.0).abs() < 1e-6);
    assert_eq!(
        batch.targets.into_data().try_to_vec::<i64>().unwrap(),
        vec![0, 1]
    );

    // With augmentation, Burn's path (dataset and batcher) crops and flips each image as the
    // learner's batches do in an epoch of the same seed.
    let mut augmenting = ImageBatcher::new(Preprocess::Unit);
    augmenting.augment = Some(resnet_transfer::data::Augment::default());
    let epoch = ImageDataset::new(set.clone(), 7);
    let items: Vec<_> = (0..set.len()).map(|i| epoch.get(i).unwrap()).collect();
    let burns = augmenting.batch(items, &device).images;
    let ours = augmenting
        .batch_of(&set, &[0, 1, 2, 3], 7, &device)
        .unwrap()
        .images;
    assert_eq!(burns.into_data(), ours.into_data());

    // A broken image is a typed error naming the file.
    std::fs::write(root.path().join("dog").join("broken.jpg"), b"not a jpeg").unwrap();
    let err = read_image_folder(root.path(), 32, false).unwrap_err();
    assert!(
        matches!(&err, Error::Image { path, .. } if path.ends_with("broken.jpg")),
        "{err}"
    );
    // Skipping bad files leaves it out, says which, and changes nothing else.
    let skipping = read_image_folder(root.path(), 32, true).unwrap();
    assert_eq!(skipping.images.len(), 4);
    assert_eq!(skipping.skipped.len(), 1);
    assert!(skipping.skipped[0].0.ends_with("broken.jpg"));
    assert!(skipping.files[3].ends_with("dog/1.png"));
}

fn photo_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos")
}

/// Mean absolute difference of two images' bytes.
fn mean_abs(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let sum: u64 = a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y) as u64).sum();
    sum as f64 / a.len() as f64
}

/// Phone photos stored as the sensor lay, with the EXIF Orientation tag that turns them upright
/// (every value, in JPEG, and in PNG's eXIf and WebP's EXIF chunks), read as Pillow's
/// `ImageOps.exif_transpose` shows them.
#[test]
fn exif_rotated_photos_read_upright_as_pillow_shows_them() {
    use resnet_transfer::data::read_image;

    let dir = photo_fixtures().join("orientation");
    let size = 48;
    let upright = read_image(&dir.join("upright.jpg"), size).unwrap();
    let names = (2..=8)
        .map(|n| format!("orientation-{n}.jpg"))
        .chain(["orientation-6.png".into(), "orientation-6.webp".into()]);
    for name in names {
        let file = dir.join(&name);
        let read = read_image(&file, size).unwrap();
        // What Pillow shows, decoded losslessly: only the two JPEG decoders' rounding differs.
        let pillow = read_image(&dir.join("pil").join(name.replace('.', "-") + ".png"), size);
        let from_pillow = mean_abs(&read, &pillow.unwrap());
        assert!(from_pillow < 2.0, "{name}: {from_pillow} from Pillow's");
        let from_upright = mean_abs(&read, &upright);
        assert!(from_upright < 6.0, "{name}: {from_upright} from upright");
        // The stored pixels as they lie are far from upright: the tag is what turns them.
        let raw = image::open(&file).unwrap();
        let raw = raw.resize_to_fill(48, 48, image::imageops::FilterType::Triangle);
        let raw: Vec<u8> = (0..3)
            .flat_map(|c| {
                raw.to_rgb8()
                    .pixels()
                    .map(move |p| p.0[c])
                    .collect::<Vec<_>>()
            })
            .collect();
        assert!(mean_abs(&raw, &upright) > 30.0, "{name} is stored turned");
    }
}

/// Files cut short are refused, named, as Pillow refuses them ("image file is truncated"),
/// never read as a partly grey picture; complete ones, and a JPEG followed by a motion photo's
/// video, read.
#[test]
fn photos_cut_short_are_refused_naming_the_file() {
    use resnet_transfer::data::read_image;

    let dir = photo_fixtures().join("truncated");
    let cut = [
        "half.jpg",
        "half-progressive.jpg",
        "no-eoi.jpg",
        "half.png",
        "half.webp",
        "half.gif",
        "half.bmp",
        "half.tif",
    ];
    for name in cut {
        let file = dir.join(name);
        match read_image(&file, 32) {
            Err(Error::Image { path, reason }) => {
                assert_eq!(path, file);
                let message = Error::Image { path, reason }.to_string();
                assert!(message.contains(name), "{message}");
            }
            other => panic!("{name}: expected an image error, got {other:?}"),
        }
    }
    for name in [
        "complete.jpg",
        "complete-progressive.jpg",
        "complete.png",
        "complete.webp",
        "complete.gif",
        "complete.bmp",
        "complete.tif",
        "motion-photo.jpg",
    ] {
        read_image(&dir.join(name), 32).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    let message = read_image(&dir.join("half.jpg"), 32)
        .unwrap_err()
        .to_string();
    assert!(message.contains("truncated"), "{message}");
}

/// The formats torchvision's loader reads, each as Pillow writes it, decoded by content: a PNG
/// named `.jpg` reads as the PNG it is, and a GIF gives its first frame.
#[test]
fn every_format_torchvision_reads_decodes_by_its_content() {
    use resnet_transfer::data::{IMAGE_EXTENSIONS, read_image, read_image_folder};

    let dir = photo_fixtures().join("formats");
    let size = 48;
    let reference = read_image(&dir.join("picture.png"), size).unwrap();
    for (name, lossy) in [
        ("picture.bmp", false),
        ("picture.gif", false),
        ("picture.tif", false),
        ("picture.ppm", false),
        ("png-named.jpg", false),
        ("picture.jpg", true),
        ("jpeg-named.png", true),
        ("picture.webp", true),
    ] {
        let read = read_image(&dir.join(name), size).unwrap_or_else(|e| panic!("{name}: {e}"));
        let diff = mean_abs(&read, &reference);
        assert!(
            if lossy { diff < 6.0 } else { diff == 0.0 },
            "{name}: {diff}"
        );
    }
    let grey = read_image(&dir.join("grey.png"), size).unwrap();
    assert_eq!(read_image(&dir.join("picture.pgm"), size).unwrap(), grey);

    // Every ending is a photo's in a class folder.
    let root = tempfile::tempdir().unwrap();
    let class = root.path().join("pictures");
    copy_dir(&dir, &class);
    let folder = read_image_folder(root.path(), size, false).unwrap();
    assert_eq!(folder.images.len(), 11);
    for ending in IMAGE_EXTENSIONS {
        let file = class.join(format!("copy.{}", ending.to_uppercase()));
        std::fs::copy(dir.join("picture.png"), file).unwrap();
    }
    let folder = read_image_folder(root.path(), size, false).unwrap();
    assert_eq!(folder.images.len(), 11 + IMAGE_EXTENSIONS.len());
}

/// A folder as users have them: photos in sub-folders, hidden folders and files (Jupyter's
/// checkpoints, Finder's `.DS_Store` and `._` files), notes, and then a copy cut short, an
/// empty file and a link to a photo since deleted, which `skip_bad` leaves out with reasons.
#[test]
fn a_messy_photo_folder_reads_as_torchvision_would_and_skip_bad_skips_what_cannot_be_read() {
    use resnet_transfer::data::{list_image_folder, read_image_folder};

    let photos = photo_fixtures();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    let put = |from: &str, to: &str| {
        let to = r.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(photos.join(from), to).unwrap();
    };
    put("formats/picture.jpg", "cat/IMG_0001.JPG");
    put(
        "orientation/orientation-6.jpg",
        "cat/2024/holiday/IMG_0002.jpg",
    );
    put("formats/picture.webp", "cat/2024/IMG_0003.webp");
    put("formats/png-named.jpg", "dog/download.jpg");
    put("truncated/complete.png", "dog/Screenshot 1.png");
    // What Finder, Jupyter and an editor leave behind: none of it is a photo or a class.
    put(
        "formats/picture.jpg",
        ".ipynb_checkpoints/IMG_0001-checkpoint.jpg",
    );
    put("formats/picture.jpg", "dog/.thumbnails/download.jpg");
    std::fs::write(r.join("cat/.DS_Store"), b"\0\0\0\x01Bud1\0\0\x10\0").unwrap();
    std::fs::write(
        r.join("cat/._IMG_0001.JPG"),
        b"\0\x05\x16\x07\0\x02\0\0Mac OS X        ",
    )
    .unwrap();
    std::fs::write(r.join("dog/README.txt"), "photos from the shelter").unwrap();
    std::fs::write(r.join("notes.md"), "two classes").unwrap();

    let folder = read_image_folder(r, 32, false).unwrap();
    assert_eq!(folder.class_names, ["cat", "dog"]);
    let relative: Vec<String> = (folder.files.iter())
        .map(|f| f.strip_prefix(r).unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        relative,
        [
            "cat/2024/IMG_0003.webp",
            "cat/2024/holiday/IMG_0002.jpg",
            "cat/IMG_0001.JPG",
            "dog/Screenshot 1.png",
            "dog/download.jpg",
        ]
    );
    assert_eq!(folder.images.labels(), &[0, 0, 0, 1, 1]);

    // An interrupted copy, an empty file, a link to a deleted photo.
    put("truncated/half.jpg", "dog/copying.jpg");
    std::fs::write(r.join("dog/zero.png"), b"").unwrap();
    let mut bad = vec!["copying.jpg", "zero.png"];
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(r.join("deleted.jpg"), r.join("dog/linked.jpg")).unwrap();
        bad.push("linked.jpg");
    }
    let err = read_image_folder(r, 32, false).unwrap_err();
    assert!(
        matches!(&err, Error::Image { path, .. } if path.ends_with("dog/copying.jpg")),
        "{err}"
    );
    let skipping = read_image_folder(r, 32, true).unwrap();
    assert_eq!(skipping.files, folder.files);
    assert_eq!(skipping.images, folder.images);
    let skipped: Vec<(String, &str)> = (skipping.skipped.iter())
        .map(|(p, why)| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                why.as_str(),
            )
        })
        .collect();
    assert_eq!(skipped.len(), bad.len(), "{skipped:?}");
    for (name, why) in &skipped {
        let expected = match name.as_str() {
            "copying.jpg" => "truncated",
            "zero.png" => "empty",
            _ => "does not exist",
        };
        assert!(why.contains(expected), "{name}: {why}");
    }

    // A class whose photos were all skipped is refused, named; so is a class with no photo.
    put("truncated/half.png", "bird/cut.png");
    let err = read_image_folder(r, 32, true).unwrap_err().to_string();
    assert!(err.contains("`bird`") && err.contains("cut.png"), "{err}");
    std::fs::remove_file(r.join("bird/cut.png")).unwrap();
    std::fs::write(r.join("bird/.DS_Store"), b"\0\0\0\x01Bud1").unwrap();
    let err = list_image_folder(r).unwrap_err();
    assert!(
        matches!(&err, Error::NotFound { .. }) && err.to_string().contains("`bird`"),
        "{err}"
    );
}
