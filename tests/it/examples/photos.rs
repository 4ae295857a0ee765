//! `fine_tune` on folders of photos, and `predict` and `evaluate` on what it trained.

use super::*;

#[test]
fn fine_tune_learns_a_photo_folder_and_its_model_predicts_and_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    let files = photo_folders(&photos, 16);
    std::fs::write(photos.join("apple/broken.jpg"), b"not a jpeg").unwrap();
    let out = tmp.path().join("run");
    let backbone = learnable_weights(tmp.path());
    let fine_tune = |skip: bool, export: &Path| {
        let mut cmd = Command::new(example("fine_tune"));
        cmd.arg("--images")
            .arg(&photos)
            .arg("--weights")
            .arg(&backbone);
        cmd.args([
            "--input-size",
            "32",
            "--valid-share",
            "0.25",
            "--batch-size",
            "8",
        ]);
        cmd.args([
            "--phase1-epochs",
            "4",
            "--phase2-epochs",
            "1",
            "--phase1-lr",
            "1e-2",
        ]);
        cmd.args(["--offline", "--quiet"]).arg("--out").arg(&out);
        if skip {
            cmd.arg("--skip-bad");
        }
        cmd.arg("--export-onnx").arg(export);
        cmd
    };
    // An export that could not be written stops the run before it trains, named.
    let blocked = tmp.path().join("a-file");
    std::fs::write(&blocked, b"not a folder").unwrap();
    let failed = fine_tune(true, &blocked.join("model.onnx"))
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(stderr.contains("a-file"), "{stderr}");
    assert!(!out.exists(), "nothing trained");
    // A file that does not decode stops the run, named.
    let onnx = out.join("model.onnx");
    let failed = fine_tune(false, &onnx).output().unwrap();
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("broken.jpg"));
    // --skip-bad leaves it out and says so.
    let stdout = run_ok(&mut fine_tune(true, &onnx));
    assert!(
        stdout.contains("skipped 1 files") && stdout.contains("broken.jpg"),
        "{stdout}"
    );

    let names = ["apple", "blueberry", "cherry"];
    let card: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("model.json")).unwrap()).unwrap();
    assert_eq!(card["class_names"], serde_json::json!(names));
    let evaluation: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("evaluation.json")).unwrap()).unwrap();
    let accuracy = evaluation["accuracy"].as_f64().unwrap();
    assert!(accuracy > 0.6, "chance is 1/3: {evaluation}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("files skipped (unreadable): 1"),
        "{summary}"
    );
    let confusion = image::open(out.join("confusion.png")).unwrap();
    assert_eq!(confusion.height(), 110 + 3 * 52 + 50, "a row per class");
    image::open(out.join("predictions.png")).unwrap();

    // predict --json: one object per image, top-k best first, the run's class names.
    let mut predict = Command::new(example("predict"));
    predict
        .arg("--weights")
        .arg(&out)
        .args(["--json", "--top-k", "2"]);
    let stdout = run_ok(predict.args(&files[..3]));
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    for line in &lines {
        let top = line["top_k"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        let probs: Vec<f64> = top.iter().map(|s| s["prob"].as_f64().unwrap()).collect();
        assert!(probs[0] >= probs[1] && probs[0] <= 1.0, "{line}");
        assert!(names.contains(&top[0]["label"].as_str().unwrap()));
    }

    // predict --explain: at the run's 32 pixels the last stage is 1x1, which is refused before
    // any photo, naming the sizes; at 64, each photo's object has its 2x2 map and each photo its
    // picture. The run's report says the same in explanations.png.
    image::open(out.join("explanations.png")).unwrap();
    let cams = tmp.path().join("cams");
    let explain = |more: &[&str]| {
        let mut predict = Command::new(example("predict"));
        predict
            .arg("--weights")
            .arg(&out)
            .arg("--explain")
            .arg(&cams);
        predict.args(more).args(&files[..2]);
        predict
    };
    let err = run_err(&mut explain(&[]));
    assert!(
        err.contains("32x32") && err.contains("1x1") && err.contains("more than 32x32"),
        "{err}"
    );
    assert!(!cams.exists(), "refused before anything was written");
    let stdout = run_ok(&mut explain(&["--input-size", "64", "--json"]));
    let explained = json_lines(&stdout);
    assert_eq!(explained.len(), 2);
    for (line, file) in explained.iter().zip(&files) {
        let cam: Vec<Vec<f64>> = serde_json::from_value(line["cam"].clone()).unwrap();
        assert_eq!((cam.len(), cam[0].len(), cam[1].len()), (2, 2, 2), "{line}");
        let values = || cam.iter().flatten().copied();
        assert!(values().all(|v| (0.0..=1.0).contains(&v)), "{line}");
        assert!(
            values().any(|v| v == 1.0) || values().all(|v| v == 0.0),
            "{line}"
        );
        let stem = file.file_stem().unwrap().to_string_lossy();
        let cam_file = cams.join(format!("{stem}-cam.png"));
        assert_eq!(line["cam_file"], cam_file.display().to_string(), "{line}");
        let png = image::open(&cam_file).unwrap();
        assert!(
            png.width() >= 2 * 192,
            "the photo and its heat map side by side"
        );
    }

    // --export-onnx wrote the trained model as ONNX: predict reads it with the run's class
    // names and preprocessing (from the file's metadata) and gives the same answers.
    let mut predict = Command::new(example("predict"));
    predict
        .arg("--weights")
        .arg(&onnx)
        .args(["--json", "--top-k", "2"]);
    let stdout = run_ok(predict.args(&files[..3]));
    for (line, want) in stdout.lines().zip(&lines) {
        let got: serde_json::Value = serde_json::from_str(line).unwrap();
        for (g, w) in
            (got["top_k"].as_array().unwrap().iter()).zip(want["top_k"].as_array().unwrap())
        {
            assert_eq!(g["label"], w["label"], "{got} against {want}");
            let gap = (g["prob"].as_f64().unwrap() - w["prob"].as_f64().unwrap()).abs();
            assert!(gap < 1e-4, "{got} against {want}");
        }
    }
    // The export example on the run folder, BatchNorm kept, reads its file back.
    let kept = tmp.path().join("kept.onnx");
    let mut export = Command::new(example("export_onnx"));
    export.arg("--weights").arg(&out).arg("--out").arg(&kept);
    let stdout = run_ok(export.args(["--batch-norm", "kept", "--offline"]));
    assert!(
        stdout.contains("classes: apple, blueberry, cherry"),
        "{stdout}"
    );
    let worst: f64 = (stdout.split("worst logit difference ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    assert!(worst < 1e-5, "{stdout}");

    // evaluate --images --json on the photos, with the model's own names.
    let mut evaluate = Command::new(example("evaluate"));
    evaluate
        .arg("--model")
        .arg(&out)
        .arg("--images")
        .arg(&photos);
    let stdout = run_ok(evaluate.args(["--skip-bad", "--json"]));
    let result: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(result["classes"], serde_json::json!(names));
    assert_eq!(result["images"], 48);
    let counted: u64 = result["confusion"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap())
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(counted, 48);
    assert!(result["accuracy"].as_f64().unwrap() > 0.6, "{result}");
}

/// `predict` and `evaluate --images` read photos a batch at a time (memory holds one batch,
/// however many photos there are) and answer as one photo at a time does, in order; the class
/// names given must fit the model's classes.
#[test]
fn predict_and_evaluate_run_photos_in_batches_and_refuse_names_that_do_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    // Named after CIFAR-10 classes: the fixture model has 10 classes and no names of its own.
    let mut files = Vec::new();
    for (class, name) in ["cat", "dog", "ship"].iter().enumerate() {
        for i in 0..4u32 {
            let dir = match i % 2 {
                0 => photos.join(name),
                _ => photos.join(name).join("more"),
            };
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(format!("{i}.jpg"));
            photo(class, 40 + 4 * i, 30, i).save(&path).unwrap();
            files.push(path);
        }
    }
    let predict = |batch: &str| {
        let mut cmd = Command::new(example("predict"));
        cmd.arg("--weights").arg(weights());
        cmd.args(["--json", "--logits", "--top-k", "3", "--batch-size", batch]);
        cmd.args(&files);
        cmd
    };
    let alone = json_lines(&run_ok(&mut predict("1")));
    let batched = json_lines(&run_ok(&mut predict("5")));
    assert_eq!(alone.len(), files.len());
    assert_eq!(batched.len(), files.len());
    for ((a, b), file) in alone.iter().zip(&batched).zip(&files) {
        assert_eq!(a["image"], file.display().to_string());
        assert_eq!(a["image"], b["image"]);
        let labels = |v: &serde_json::Value| -> Vec<String> {
            (v["top_k"].as_array().unwrap().iter())
                .map(|s| s["label"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(labels(a), labels(b));
        for (x, y) in (a["logits"].as_array().unwrap().iter()).zip(b["logits"].as_array().unwrap())
        {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!((x - y).abs() <= 1e-4 * y.abs().max(1.0), "{a} against {b}");
        }
    }

    // Sizes of 0 refused by name before anything runs: predict's batch and input side, and
    // evaluate's batch (which ran as 1).
    let zero_side = predict("5").args(["--input-size", "0"]).output().unwrap();
    let zero_batch = predict("0").output().unwrap();
    let mut evaluate_zero = Command::new(example("evaluate"));
    evaluate_zero
        .arg("--model")
        .arg(weights())
        .arg("--images")
        .arg(&photos);
    let evaluate_zero = evaluate_zero.args(["--batch-size", "0"]).output().unwrap();
    for (out, want) in [
        (zero_side, "`input_size` is 0, expected at least 1"),
        (zero_batch, "`batch_size` is 0, expected at least 1"),
        (evaluate_zero, "`batch_size` is 0, expected at least 1"),
    ] {
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(want) && !stderr.contains("pixels"),
            "{stderr}"
        );
    }

    // Three names for a model of ten classes: refused, naming the file and both counts.
    let names = tmp.path().join("names.txt");
    std::fs::write(&names, "cat\ndog\nship\n").unwrap();
    let failed = predict("5").arg("--classes").arg(&names).output().unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success()
            && stderr.contains("names.txt")
            && stderr.contains("3 class names")
            && stderr.contains("10 classes"),
        "{stderr}"
    );

    // evaluate --images: a cut copy and an empty file skipped with their reasons, and batches
    // of 5 scoring as batches of 64.
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/photos/truncated/half.jpg"),
        photos.join("dog/cut.jpg"),
    )
    .unwrap();
    std::fs::write(photos.join("cat/empty.jpg"), b"").unwrap();
    let evaluate = |batch: &str| {
        let mut cmd = Command::new(example("evaluate"));
        cmd.arg("--model")
            .arg(weights())
            .arg("--images")
            .arg(&photos);
        cmd.args(["--json", "--batch-size", batch]);
        cmd
    };
    let failed = evaluate("5").output().unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success() && stderr.contains("empty.jpg"),
        "{stderr}"
    );
    let mut results = Vec::new();
    for batch in ["5", "64"] {
        let out = evaluate(batch).arg("--skip-bad").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(
            stderr.contains("cut.jpg") && stderr.contains("truncated"),
            "{stderr}"
        );
        assert!(
            stderr.contains("empty.jpg") && stderr.contains("empty (0 bytes)"),
            "{stderr}"
        );
        let result: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
        assert_eq!(result["images"], 12);
        results.push(result);
    }
    assert_eq!(results[0]["confusion"], results[1]["confusion"]);
    assert_eq!(results[0]["accuracy"], results[1]["accuracy"]);
    let losses = [&results[0], &results[1]].map(|r| r["loss"].as_f64().unwrap());
    assert!((losses[0] - losses[1]).abs() < 1e-5, "{losses:?}");

    // A class folder the model does not have: refused, naming both lists of classes.
    std::fs::create_dir_all(photos.join("unicorn")).unwrap();
    std::fs::copy(&files[0], photos.join("unicorn/0.jpg")).unwrap();
    let failed = evaluate("5").arg("--skip-bad").output().unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success()
            && stderr.contains(r#"["cat", "dog", "ship", "unicorn"]"#)
            && stderr.contains(r#"["unicorn"]"#)
            && stderr.contains("airplane"),
        "{stderr}"
    );
}

/// `fine_tune` killed after its first epoch, resumed with another split or other photos behind
/// the same options, is refused, each difference named: the resumed run would train on other
/// images than the ones it started with.
#[test]
fn a_fine_tune_resume_on_other_photos_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    photo_folders(&photos, 12);
    let backbone = learnable_weights(tmp.path());
    let out = tmp.path().join("run");
    let fine_tune = |extra: &[&str]| {
        let mut cmd = Command::new(example("fine_tune"));
        cmd.arg("--images")
            .arg(&photos)
            .arg("--weights")
            .arg(&backbone);
        cmd.args(["--input-size", "32", "--batch-size", "8"]);
        cmd.args(["--phase1-epochs", "3", "--phase2-epochs", "20"]);
        cmd.args(["--offline", "--quiet"]).arg("--out").arg(&out);
        cmd.args(extra);
        cmd
    };
    kill_when(fine_tune(&[]).spawn().unwrap(), || next_epoch(&out) >= 1);
    let before = snapshot(&out);

    let stderr = run_err(&mut fine_tune(&["--valid-share", "0.3", "--resume"]));
    for want in [
        "`valid_share` saved 0.2, given 0.3",
        "`train_images` saved 30 images",
        "`valid_images` saved 6 images",
    ] {
        assert!(stderr.contains(want), "{want} not in {stderr}");
    }
    let test = tmp.path().join("test");
    photo_folders(&test, 2);
    let stderr = run_err(&mut fine_tune(&[
        "--test",
        test.to_str().unwrap(),
        "--resume",
    ]));
    let test = std::fs::canonicalize(&test).unwrap();
    assert!(
        stderr.contains(&format!("`test` saved -, given {}", test.display())),
        "{stderr}"
    );
    // The same options over a folder that gained a photo: other images, named.
    let added = photos.join("apple/new.png");
    image::DynamicImage::ImageRgb8(photo(1, 40, 40, 99))
        .save(&added)
        .unwrap();
    let stderr = run_err(&mut fine_tune(&["--resume"]));
    assert!(
        stderr.contains("`train_images` saved 30 images"),
        "{stderr}"
    );
    assert_eq!(snapshot(&out), before, "a refused resume writes nothing");
    // Without the new photo, the run goes on.
    std::fs::remove_file(&added).unwrap();
    let done = next_epoch(&out);
    kill_when(fine_tune(&["--resume"]).spawn().unwrap(), || {
        next_epoch(&out) > done
    });
}

/// A class whose only photo the validation share takes would never be trained: refused by name
/// before anything is written, as a user with a lopsided folder meets it.
#[test]
fn a_class_left_without_training_photos_is_refused_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("photos");
    for (class, name, count) in [(0, "apple", 8), (1, "banana", 6), (2, "date", 1)] {
        std::fs::create_dir_all(root.join(name)).unwrap();
        for i in 0..count {
            let path = root.join(name).join(format!("{i}.png"));
            photo(class, 40, 40, i).save(path).unwrap();
        }
    }
    let out = tmp.path().join("run");
    let stderr = run_err(
        Command::new(example("fine_tune"))
            .arg("--images")
            .arg(&root)
            .arg("--weights")
            .arg(weights())
            .args([
                "--valid-share",
                "0.5",
                "--input-size",
                "32",
                "--offline",
                "--quiet",
            ])
            .arg("--out")
            .arg(&out),
    );
    assert!(
        stderr.contains("\"date\"") && stderr.contains("training image"),
        "{stderr}"
    );
    assert!(!out.join("config.json").exists(), "nothing written");
}

/// A folder over the memory budget is streamed from its files and trains exactly as the same
/// photos held in memory do; the summary says which it was. `--augment` streams (its crops come
/// from each whole photo), and with `--cache-decoded` it is refused, naming the option.
#[test]
fn fine_tune_streams_a_folder_over_its_budget_and_trains_as_held() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    photo_folders(&photos, 8);
    let backbone = learnable_weights(tmp.path());
    let fine_tune = |out: &Path, more: &[&str]| {
        let mut cmd = fine_tune_on(&photos, &backbone, out, more);
        cmd.args([
            "--valid-share",
            "0.25",
            "--batch-size",
            "4",
            "--phase1-epochs",
            "2",
        ]);
        cmd.args(["--phase2-epochs", "1", "--phase1-lr", "1e-2"]);
        cmd
    };
    let figures = |out: &Path| -> Vec<(f64, f64, f64)> {
        let (epochs, _) = history_of(out);
        epochs.iter().map(|e| (e.2, e.3, e.4)).collect()
    };
    let summary = |out: &Path| std::fs::read_to_string(out.join("summary.md")).unwrap();
    let (held, streamed) = (tmp.path().join("held"), tmp.path().join("streamed"));
    run_ok(&mut fine_tune(&held, &["--cache-decoded"]));
    run_ok(&mut fine_tune(&streamed, &["--memory-budget", "1K"]));
    assert!(summary(&held).contains("held in memory (--cache-decoded)"));
    assert!(
        summary(&streamed).contains("(more than the memory budget, 1.0 KB)"),
        "{}",
        summary(&streamed)
    );
    assert!(
        summary(&streamed).contains("streamed from their files (more than the memory budget"),
        "{}",
        summary(&streamed)
    );
    // Phase 1's features stayed in the run folder's file (over the budget too), and were
    // removed at the unfreeze point.
    assert_eq!(
        figures(&held),
        figures(&streamed),
        "the same run, bit for bit"
    );
    assert!(!streamed.join("features").exists());

    let err = run_err(&mut fine_tune(
        &tmp.path().join("refused"),
        &["--augment", "--cache-decoded"],
    ));
    assert!(err.contains("(the option --cache-decoded)"), "{err}");
    let augmented = tmp.path().join("augmented");
    run_ok(&mut fine_tune(&augmented, &["--augment"]));
    assert!(summary(&augmented).contains("--augment crops each whole photo"));
}

/// `evaluate --images` on a model of many classes (30 here; ImageNet's 1,000 printed 7 MB)
/// prints only the classes the set holds or was predicted as, and leaves the confusion matrix to
/// `--json`, which keeps every class.
#[test]
fn evaluate_on_many_classes_prints_the_classes_at_hand() {
    use resnet_transfer::data::Preprocess;
    use resnet_transfer::weights::{ModelCard, SavedModel};

    let device = resnet_transfer::device::device("ndarray").unwrap();
    let config = resnet_transfer::ResNetConfig::resnet18(30).with_width(4);
    let names: Vec<String> = (0..30).map(|i| format!("class{i:02}")).collect();
    let tmp = tempfile::tempdir().unwrap();
    let model = tmp.path().join("model");
    SavedModel {
        model: config.init(&device).unwrap(),
        card: ModelCard {
            config,
            preprocess: Preprocess::Torch,
            input_size: 32,
            class_names: names.clone(),
            source: "random".into(),
        },
    }
    .save(&model)
    .unwrap();
    let photos = tmp.path().join("photos");
    for (class, shade) in [("class03", 40u8), ("class17", 200)] {
        std::fs::create_dir_all(photos.join(class)).unwrap();
        for i in 0..3u8 {
            image::RgbImage::from_fn(40, 36, |x, y| {
                image::Rgb([shade, (x as u8).wrapping_mul(i + 1), y as u8])
            })
            .save(photos.join(class).join(format!("{i}.png")))
            .unwrap();
        }
    }
    let evaluate = || {
        let mut cmd = Command::new(example("evaluate"));
        cmd.arg("--model").arg(&model).arg("--images").arg(&photos);
        cmd
    };
    let text = run_ok(&mut evaluate());
    assert!(
        text.contains("class03") && text.contains("class17"),
        "{text}"
    );
    assert!(
        text.contains("classes with no images and no predictions left out"),
        "{text}"
    );
    assert!(
        text.contains("confusion matrix: 30 x 30, in --json"),
        "{text}"
    );
    // The two classes, at most two more predicted, and the lines around them.
    assert!(text.lines().count() < 16, "{text}");
    let json: serde_json::Value =
        serde_json::from_str(run_ok(evaluate().arg("--json")).trim()).unwrap();
    assert_eq!(json["per_class"].as_array().unwrap().len(), 30);
    assert_eq!(json["confusion"].as_array().unwrap().len(), 30);
}
