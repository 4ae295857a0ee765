//! CIFAR-10 from files in the exact official formats (made by tests/fixtures/make_cifar10.py),
//! the download path against a local HTTP server, and batches in NCHW.

use std::path::{Path, PathBuf};

use resnet_transfer::Error;
use resnet_transfer::data::{Cifar10, Downloader, ImageBatcher, Preprocess, stratified_split};
use resnet_transfer::download::{self, Checksum};

const PER_FILE: usize = 8;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cifar10")
}

/// The generator's formula for file `k` (1..5 training, 6 test).
fn expected_label(k: usize, i: usize) -> usize {
    (3 * i + k) % 10
}

fn expected_pixel(k: usize, i: usize, c: usize, y: usize, x: usize) -> u8 {
    ((7 * i + 50 * c + 3 * y + 5 * x + 11 * expected_label(k, i) + 13 * k) % 256) as u8
}

fn check(cifar: &Cifar10) {
    assert_eq!(cifar.train.len(), 5 * PER_FILE);
    assert_eq!(cifar.test.len(), PER_FILE);
    assert_eq!(cifar.class_names[1], "automobile");
    assert_eq!(cifar.class_names.len(), 10);
    for (i, k, c, y, x) in [
        (0, 1, 0, 0, 0),
        (3, 2, 1, 5, 7),
        (7, 5, 2, 31, 31),
        (5, 4, 1, 16, 0),
    ] {
        let n = (k - 1) * PER_FILE + i; // position in the concatenated training set
        assert_eq!(cifar.train.label(n), expected_label(k, i));
        assert_eq!(
            cifar.train.pixel(n, c, y, x),
            expected_pixel(k, i, c, y, x),
            "{i} {k} {c} {y} {x}"
        );
    }
    assert_eq!(
        cifar.test.pixel(6, 2, 9, 30),
        expected_pixel(6, 6, 2, 9, 30)
    );
    assert_eq!(cifar.test.label(6), expected_label(6, 6));
}

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
    let batch = ImageBatcher::new(Preprocess::Caffe).batch_of(&cifar.train, &[3, 17], 0, &device);
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
    let batch = resized.batch_of(&cifar.test, &[0, 1, 2], 0, &device);
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

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
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

/// Serves `body` at every path (or 404s) on 127.0.0.1 until `requests` have been answered.
fn serve(body: Vec<u8>, status: u16, requests: usize) -> (String, std::thread::JoinHandle<()>) {
    let server = tiny_http::Server::http("127.0.0.1:0").unwrap();
    let url = format!("http://{}", server.server_addr().to_ip().unwrap());
    let handle = std::thread::spawn(move || {
        for _ in 0..requests {
            let Ok(Some(request)) = server.recv_timeout(std::time::Duration::from_secs(30)) else {
                return;
            };
            let response = tiny_http::Response::from_data(body.clone()).with_status_code(status);
            let _ = request.respond(response);
        }
    });
    (url, handle)
}

fn md5_of(path: &Path) -> String {
    use md5::{Digest, Md5};
    let digest = Md5::digest(std::fs::read(path).unwrap());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Held by the tests that search the default places (the cache, `~/.keras`): one of them points
/// `HOME` and the cache at folders holding CIFAR-10, which the others must not find meanwhile.
static SEARCH: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn search_lock() -> std::sync::MutexGuard<'static, ()> {
    SEARCH
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets environment variables until dropped, then puts the old values back.
struct EnvVars(Vec<(&'static str, Option<std::ffi::OsString>)>);

impl EnvVars {
    fn set(vars: &[(&'static str, &Path)]) -> Self {
        let old = vars
            .iter()
            .map(|(name, _)| (*name, std::env::var_os(name)))
            .collect();
        for (name, value) in vars {
            // SAFETY: the tests that read these variables hold `search_lock()` meanwhile.
            unsafe { std::env::set_var(name, value) };
        }
        Self(old)
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for (name, value) in &self.0 {
            // SAFETY: as in `set`.
            unsafe {
                match value {
                    Some(v) => std::env::set_var(name, v),
                    None => std::env::remove_var(name),
                }
            }
        }
    }
}

#[test]
fn download_verifies_writes_atomically_and_reads() {
    let _search = search_lock();
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
fn finds_what_keras_downloaded_and_says_where_to_put_it_offline() {
    let _search = search_lock();
    let home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let _env = EnvVars::set(&[
        ("HOME", home.path()),
        ("RESNET_TRANSFER_CACHE", cache.path()),
    ]);
    let err = Cifar10::find_or_download(None, None).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, Error::NotFound { .. }), "{message}");
    assert!(
        message.contains(".keras") && message.contains("cifar-10-binary.tar.gz"),
        "{message}"
    );

    copy_dir(
        &fixtures().join("cifar-10-batches-py"),
        &home.path().join(".keras/datasets/cifar-10-batches-py"),
    );
    let cifar = Cifar10::find_or_download(None, None).unwrap();
    check(&cifar);
    assert!(cifar.source.starts_with(home.path().join(".keras")));
}

#[test]
fn finds_what_keras_3_downloaded_under_keras_home() {
    let _search = search_lock();
    let home = tempfile::tempdir().unwrap();
    let keras_home = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let _env = EnvVars::set(&[
        ("HOME", home.path()),
        ("KERAS_HOME", keras_home.path()),
        ("RESNET_TRANSFER_CACHE", cache.path()),
    ]);
    // Keras 3 under ~/.keras is not where Keras looks when KERAS_HOME is set.
    let keras3 = "datasets/cifar-10-batches-py-target/cifar-10-batches-py";
    copy_dir(
        &fixtures().join("cifar-10-batches-py"),
        &home.path().join(".keras").join(keras3),
    );
    let err = Cifar10::find_or_download(None, None).unwrap_err();
    assert!(
        err.to_string()
            .contains(&keras_home.path().display().to_string()),
        "{err}"
    );
    copy_dir(
        &fixtures().join("cifar-10-batches-py"),
        &keras_home.path().join(keras3),
    );
    let cifar = Cifar10::find_or_download(None, None).unwrap();
    check(&cifar);
    assert_eq!(cifar.source, keras_home.path().join(keras3));

    // Without KERAS_HOME, Keras 3's folder under ~/.keras.
    // SAFETY: this test holds `search_lock()`, as every test that reads the variable does.
    unsafe { std::env::remove_var("KERAS_HOME") };
    let cifar = Cifar10::find_or_download(None, None).unwrap();
    assert_eq!(cifar.source, home.path().join(".keras").join(keras3));
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
    assert_eq!(set.pixel(0, 0, 5, 5), 200);
    assert_eq!(set.pixel(3, 2, 31, 31), 200);

    let dataset = ImageDataset(std::sync::Arc::new(set));
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
