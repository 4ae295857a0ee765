//! The catalog of weights offline, and `dataset`.

use super::*;

#[test]
fn catalog_names_resolve_and_say_where_to_put_the_file_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("x.png");
    photo(0, 20, 20, 0).save(&image).unwrap();
    // Run where no ./weights folder holds the file.
    let out = Command::new(example("predict"))
        .args(["--weights", "resnet50-v1-12", "--offline"])
        .arg(&image)
        .env("RESNET_TRANSFER_CACHE", tmp.path())
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("resnet50-v1-12.onnx") && err.contains(&tmp.path().display().to_string()),
        "{err}"
    );
    // Another file put there under the name is refused, since a catalog name means the
    // catalog's file (as Keras's `get_file` checks its cache), saying what to do ...
    std::fs::create_dir_all(tmp.path().join("weights")).unwrap();
    let other = tmp.path().join("weights/resnet50-v1-12.onnx");
    std::fs::copy(weights(), &other).unwrap();
    let out = Command::new(example("predict"))
        .args(["--weights", "resnet50-v1-12", "--offline"])
        .arg(&image)
        .env("RESNET_TRANSFER_CACHE", tmp.path())
        .current_dir(tmp.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("checksum") && err.contains("pass its path"),
        "{err}"
    );
    // ... and, given by its path, the same file loads.
    let mut predict = Command::new(example("predict"));
    predict
        .arg("--weights")
        .arg(&other)
        .args(["--offline", "--json"]);
    predict
        .env("RESNET_TRANSFER_CACHE", tmp.path())
        .current_dir(tmp.path());
    let stdout = run_ok(predict.arg(&image));
    assert!(stdout.contains("top_k"), "{stdout}");
}

#[test]
fn dataset_prints_json_and_draws_the_grid() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar(tmp.path(), 20);
    let grid = tmp.path().join("grid.png");
    let mut dataset = Command::new(example("dataset"));
    dataset
        .arg("--data-dir")
        .arg(tmp.path())
        .arg("--grid")
        .arg(&grid);
    let stdout = run_ok(dataset.args(["--json", "--offline", "--per-class", "3"]));
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(json["train"]["count"], 100);
    assert_eq!(json["test"]["count"], 20);
    let per_class: Vec<u64> = serde_json::from_value(json["train"]["per_class"].clone()).unwrap();
    assert_eq!(per_class, vec![10; 10]);
    // Ten rows of images down a column through the first image of each row (past the class
    // names), each tinted by its class: write_cifar's red is 25 * class plus noise below 30.
    let png = image::open(&grid).unwrap().to_rgb8();
    let x = 110 + 6 + 50;
    let mut runs: Vec<Vec<u8>> = Vec::new();
    let mut inside = false;
    for y in 40..png.height() {
        let p = png.get_pixel(x, y).0;
        let image_pixel = p != [255, 255, 255];
        if image_pixel && !inside {
            runs.push(Vec::new());
        }
        if image_pixel {
            runs.last_mut().unwrap().push(p[0]);
        }
        inside = image_pixel;
    }
    runs.retain(|r| r.len() > 50);
    assert_eq!(runs.len(), 10, "a row per class");
    for (class, run) in runs.iter().enumerate() {
        let mean = run.iter().map(|&v| v as f64).sum::<f64>() / run.len() as f64;
        let base = 25.0 * class as f64;
        assert!(
            mean > base + 5.0 && mean < base + 25.0,
            "row {class}: red {mean}"
        );
    }
}

/// `predict --skip-bad`: unreadable photos (not a photo, missing) are listed with their reason
/// and the rest answered in order, across batches; without it the first stops the run, named;
/// with nothing readable the run fails.
#[test]
fn predict_skip_bad_lists_unreadable_photos_and_answers_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let good: Vec<PathBuf> = (0..2)
        .map(|i| {
            let path = tmp.path().join(format!("good{i}.png"));
            photo(i, 24, 20, 0).save(&path).unwrap();
            path
        })
        .collect();
    let bad = tmp.path().join("notes.jpg");
    std::fs::write(&bad, "not a photo").unwrap();
    let missing = tmp.path().join("missing.png");
    let predict = || {
        let mut predict = Command::new(example("predict"));
        predict
            .arg("--weights")
            .arg(weights())
            .args(["--json", "--batch-size", "2"]);
        predict
    };
    let stderr = run_err(predict().arg(&good[0]).arg(&bad));
    assert!(stderr.contains("notes.jpg"), "{stderr}");

    let out = predict()
        .arg("--skip-bad")
        .args([&bad, &good[0], &missing, &good[1]])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let answered: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["image"].to_string())
        .collect();
    assert_eq!(answered.len(), 2, "{answered:?}");
    assert!(answered[0].contains("good0") && answered[1].contains("good1"));
    for file in [&bad, &missing] {
        let line = format!("skipped {}: ", file.display());
        assert!(stderr.contains(&line), "{line} not in {stderr}");
    }

    let stderr = run_err(predict().arg("--skip-bad").args([&bad, &missing]));
    assert!(stderr.contains("none of the 2 photos"), "{stderr}");
}
