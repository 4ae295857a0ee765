//! The examples run as a user runs them: the main job killed and resumed (after and before its
//! first checkpoint), the defaults on a small set, `fine_tune` on a folder of photos of mixed
//! sizes and formats, and `predict`, `evaluate` and `dataset` with `--json`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::common::{
    assert_same_history, example, history_of, learnable_weights, run_ok, weights, write_cifar,
};

/// `train_cifar10` on a small CIFAR-10 in `data` (which holds the weights too), writing to
/// `out`: three epochs per phase, the plateau schedule with a patience of one epoch, and a
/// phase-2 rate too small to move any weight, so that phase 2's validation loss stays flat and
/// the schedule lowers the rate after its second epoch.
fn main_job(data: &Path, out: &Path) -> Command {
    main_job_with(data, out, &[])
}

/// [`main_job`] with some options given other values (`""` for a flag without one), or added.
fn main_job_with(data: &Path, out: &Path, changes: &[(&str, &str)]) -> Command {
    let weights = data.join("resnet18-w8").display().to_string();
    let out = out.display().to_string();
    let mut options: Vec<(&str, &str)> = vec![
        ("--data-dir", data.to_str().unwrap()),
        ("--weights", &weights),
        ("--train-samples", "100"),
        ("--valid-samples", "30"),
        ("--test-samples", "20"),
        ("--batch-size", "10"),
        ("--phase1-epochs", "3"),
        ("--phase2-epochs", "3"),
        ("--phase1-lr", "1e-2"),
        ("--phase2-lr", "1e-30"),
        ("--schedule", "plateau"),
        ("--plateau-patience", "1"),
        ("--offline", ""),
        ("--quiet", ""),
        ("--out", &out),
    ];
    for &(flag, value) in changes {
        match options.iter_mut().find(|(f, _)| *f == flag) {
            Some(option) => option.1 = value,
            None => options.push((flag, value)),
        }
    }
    let mut cmd = Command::new(example("train_cifar10"));
    for (flag, value) in options {
        cmd.arg(flag);
        if !value.is_empty() {
            cmd.arg(value);
        }
    }
    cmd
}

/// The CIFAR-10 files the main-job tests share, and an uninterrupted run on them.
fn uninterrupted() -> &'static (tempfile::TempDir, PathBuf) {
    static WHOLE: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    WHOLE.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        write_cifar(tmp.path(), 30);
        learnable_weights(tmp.path());
        let out = tmp.path().join("whole");
        run_ok(&mut main_job(tmp.path(), &out));
        (tmp, out)
    })
}

fn next_epoch(out: &Path) -> u64 {
    std::fs::read(out.join("checkpoint/state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["next_epoch"].as_u64())
        .unwrap_or(0)
}

/// Polls `ready` until it holds, then kills `child`; fails if the run ends or stalls first.
fn kill_when(mut child: std::process::Child, ready: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while !ready() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "not ready in time");
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `--devices 0,1`: two replicas (the CPU's one device taking turns, each with half of every
/// batch) end the main job with the uninterrupted one-device run's history.
#[test]
fn a_two_device_main_job_ends_with_the_one_device_history() {
    let (tmp, whole) = uninterrupted();
    let out = tmp.path().join("two-devices");
    run_ok(main_job(tmp.path(), &out).args(["--devices", "0,1"]));
    let (one, restored_one) = history_of(whole);
    let (two, restored_two) = history_of(&out);
    assert_same_history(&one, &two);
    assert_eq!(restored_one, restored_two);
    // An index given twice is refused, named.
    let failed = main_job(tmp.path(), &tmp.path().join("twice"))
        .args(["--devices", "1,1"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        !failed.status.success() && stderr.contains("devices"),
        "{stderr}"
    );
}

#[test]
fn killed_main_job_resumes_and_loses_nothing() {
    let (data, whole) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // Killed in phase 2 after its second epoch, once the schedule has lowered the rate for the
    // third: only the checkpoint knows that.
    let child = main_job(data.path(), &out).spawn().unwrap();
    kill_when(child, || next_epoch(&out) >= 5);
    assert!(!out.join("summary.md").exists(), "killed before the end");

    // Without --resume the run folder is refused, untouched, and the error says what to do.
    let refused = main_job(data.path(), &out).output().unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--resume"));
    let stdout = run_ok(main_job(data.path(), &out).arg("--resume"));
    assert!(
        stdout.contains("test accuracy") && stdout.contains("report"),
        "{stdout}"
    );

    let (resumed, _) = history_of(&out);
    let (expected, _) = history_of(whole);
    assert_eq!(
        resumed.iter().map(|e| e.0).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5, 6],
        "every epoch exactly once"
    );
    assert_same_history(&resumed, &expected);
    assert!(
        resumed[5].2 < resumed[4].2,
        "the plateau schedule lowered the rate after the kill: {resumed:?}"
    );
    for file in [
        "model.bpk",
        "model.json",
        "config.json",
        "history.csv",
        "curves.png",
        "confusion.png",
        "predictions.png",
        "explanations.png",
        "summary.md",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("most confused pair") && summary.contains("jump"),
        "{summary}"
    );
    // The saved model loads in predict's way.
    let device = resnet_transfer::device::device("ndarray").unwrap();
    let saved = resnet_transfer::weights::load(&out, &device).unwrap();
    assert_eq!(saved.card.class_names.len(), 10);
}

#[test]
fn killed_before_its_first_checkpoint_the_main_job_starts_as_a_fresh_run_does() {
    let (data, whole) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // The card is written once the weights are loaded, before the first epoch starts.
    let child = main_job(data.path(), &out).spawn().unwrap();
    kill_when(child, || out.join("model-card.json").is_file());
    assert!(
        !out.join("checkpoint/state.json").exists(),
        "the kill came after the first checkpoint: this test needs a slower first epoch"
    );
    let stdout = run_ok(main_job(data.path(), &out).arg("--resume"));
    assert!(stdout.contains("test accuracy"), "{stdout}");
    // The ImageNet weights, the seed and the schedule as a fresh run: the same history.
    let (resumed, restored) = history_of(&out);
    let (expected, expected_restored) = history_of(whole);
    assert_same_history(&resumed, &expected);
    assert_eq!(restored, expected_restored);
}

#[test]
fn defaults_fit_a_small_set_and_errors_name_the_option() {
    let tmp = tempfile::tempdir().unwrap();
    write_cifar(tmp.path(), 50); // 250 training images, 25 per class
    let job = |out: &str| {
        let mut cmd = Command::new(example("train_cifar10"));
        cmd.arg("--data-dir")
            .arg(tmp.path())
            .arg("--weights")
            .arg(weights());
        cmd.args(["--phase1-epochs", "1", "--phase2-epochs", "0", "--offline"]);
        cmd.arg("--out").arg(tmp.path().join(out));
        cmd
    };
    // No sizes given: 200 training and 50 validation images, said at the start.
    let out = job("defaults").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("200 training, 50 validation"), "{said}");
    let (epochs, _) = history_of(&tmp.path().join("defaults"));
    assert_eq!(epochs.len(), 1);

    let failed = job("too-many")
        .args(["--train-samples", "200", "--valid-samples", "100"])
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    assert!(
        err.contains("valid_samples") && err.contains("at most 50"),
        "{err}"
    );
}

/// A photo of `class` (0 red stripes, 1 green bars, 2 blue checks), `w` x `h`, with noise.
fn photo(class: usize, w: u32, h: u32, seed: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let on = match class {
            0 => (y / 4) % 2 == 0,
            1 => (x / 4) % 2 == 0,
            _ => (x / 6 + y / 6) % 2 == 0,
        };
        let noise = ((x * 31 + y * 17 + seed * 7) % 40) as u8;
        let mut px = [noise, noise, noise];
        if on {
            px[class] = 200 + noise / 2;
        }
        image::Rgb(px)
    })
}

/// Class folders of photos of several sizes, saved as JPEG and as RGB, RGBA and greyscale PNG.
fn photo_folders(root: &Path, per_class: u32) -> Vec<PathBuf> {
    let sizes = [(40, 30), (64, 48), (36, 60), (50, 50)];
    let mut files = Vec::new();
    for (class, name) in ["cherry", "apple", "blueberry"].iter().enumerate() {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..per_class {
            let (w, h) = sizes[i as usize % sizes.len()];
            let img = image::DynamicImage::ImageRgb8(photo(class, w, h, i));
            let path = dir.join(format!("{i}.{}", if i % 4 == 0 { "jpg" } else { "png" }));
            match i % 4 {
                1 => img.to_rgba8().save(&path).unwrap(),
                3 => img.to_luma8().save(&path).unwrap(),
                _ => img.to_rgb8().save(&path).unwrap(),
            }
            files.push(path);
        }
    }
    files
}

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
        err.contains("32x32") && err.contains("1x1") && err.contains("64x64"),
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
        let png = image::open(cams.join(format!("{stem}-cam.png"))).unwrap();
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

/// Parses `predict --json` output.
fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
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

/// Runs a command that must fail; returns its standard error.
fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{cmd:?} succeeded:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The bytes of the files of a run folder (and its checkpoint), by name.
fn snapshot(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in [out.to_path_buf(), out.join("checkpoint")] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() && !path.ends_with("run.lock") {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files.sort();
    files
}

/// A run killed in phase 1, resumed with another value of every option that decides a run, is
/// refused before anything is written, each difference named with the saved and the given
/// value. Resumed with what may change (more epochs, an export, kept checkpoints), it ends;
/// its recipe is the one it started with, and the temporary files a killed write left are gone.
#[test]
fn a_resume_with_another_recipe_is_refused_naming_every_change() {
    let (data, _) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let child = main_job(data.path(), &out).spawn().unwrap();
    kill_when(child, || next_epoch(&out) >= 2);
    // What a kill in the middle of a checkpoint's or a report's write leaves behind.
    let prefix = resnet_transfer::files::TEMP_PREFIX;
    let stale = [
        out.join("checkpoint").join(format!("{prefix}Xy12Ab.bpk")),
        out.join(format!("{prefix}Qr34Cd.json")),
    ];
    for file in &stale {
        std::fs::write(file, vec![0u8; 4096]).unwrap();
    }
    let before = snapshot(&out);
    for name in ["config.json", "job.json", "model-card.json"] {
        assert!(out.join(name).is_file(), "{name} is saved at the start");
    }

    let other_weights = weights().display().to_string();
    let changed = [
        ("--weights", other_weights.as_str()),
        ("--input-size", "64"),
        ("--train-samples", "90"),
        ("--valid-samples", "20"),
        ("--test-samples", "10"),
        ("--batch-size", "5"),
        ("--seed", "7"),
        ("--phase1-epochs", "2"),
        ("--phase1-lr", "1e-3"),
        ("--phase2-lr", "1e-4"),
        ("--unfreeze-from", "3"),
        ("--batch-norm", "training"),
        ("--schedule", "cosine"),
        ("--plateau-factor", "0.5"),
        ("--plateau-patience", "2"),
        ("--patience", "2"),
        ("--keep-last-weights", ""),
        ("--augment", ""),
        ("--resume", ""),
    ];
    let stderr = run_err(&mut main_job_with(data.path(), &out, &changed));
    let weights_saved = std::fs::canonicalize(data.path())
        .unwrap()
        .join("resnet18-w8");
    let weights_given = std::fs::canonicalize(weights()).unwrap();
    let expected = [
        format!(
            "`weights` saved {}, given {}",
            weights_saved.display(),
            weights_given.display()
        ),
        "`input_size` saved 32, given 64".into(),
        "`train_samples` saved 100, given 90".into(),
        "`valid_samples` saved 30, given 20".into(),
        "`test_samples` saved 20, given 10".into(),
        "`batch_size` saved 10, given 5".into(),
        "`seed` saved 42, given 7".into(),
        "`phase1_epochs` saved 3, given 2".into(),
        "`phase1_lr` saved 0.01, given 0.001".into(),
        format!("`phase2_lr` saved {}, given 0.0001", 1e-30),
        "`unfreeze` saved the whole backbone, given from stage 3".into(),
        "`batch_norm` saved inference, given training".into(),
        "`schedule` saved plateau, given cosine".into(),
        "`plateau_factor` saved 0.1, given 0.5".into(),
        "`plateau_patience` saved 1, given 2".into(),
        "`patience` saved none, given 2".into(),
        "`restore_best_weights` saved true, given false".into(),
        "`augment` saved false, given true".into(),
        "`train_images` saved 100 images".into(),
        "`valid_images` saved 30 images".into(),
        "`test_images` saved 20 images".into(),
    ];
    for want in &expected {
        assert!(stderr.contains(want.as_str()), "{want} not in:\n{stderr}");
    }
    assert_eq!(snapshot(&out), before, "a refused resume writes nothing");

    // One change alone is named alone.
    let stderr = run_err(&mut main_job_with(
        data.path(),
        &out,
        &[("--input-size", "64"), ("--resume", "")],
    ));
    assert!(
        stderr.contains("`input_size` saved 32, given 64"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("saved").count(), 1, "{stderr}");
    assert_eq!(snapshot(&out), before);

    // What may change: more epochs than planned, the export, kept checkpoints, quiet.
    let onnx = tmp.path().join("run.onnx");
    let onnx_arg = onnx.display().to_string();
    let stdout = run_ok(&mut main_job_with(
        data.path(),
        &out,
        &[
            ("--phase2-epochs", "4"),
            ("--export-onnx", &onnx_arg),
            ("--keep-checkpoints", ""),
            ("--resume", ""),
        ],
    ));
    assert!(stdout.contains("ONNX export"), "{stdout}");
    assert!(onnx.is_file());
    let (epochs, _) = history_of(&out);
    assert_eq!(
        epochs.iter().map(|e| e.0).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6, 7]
    );
    for (name, bytes) in &before {
        if name.ends_with("config.json")
            || name.ends_with("job.json")
            || name.ends_with("model-card.json")
        {
            assert_eq!(&std::fs::read(name).unwrap(), bytes, "{name} rewritten");
        }
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("epochs planned: 3 + 4 (3 + 3 when the run started"),
        "{summary}"
    );
    for file in &stale {
        assert!(!file.exists(), "{} left", file.display());
    }
    assert!(
        out.join("checkpoint/state.json").is_file(),
        "--keep-checkpoints"
    );
}

/// A run that ends well removes its checkpoint (as Keras's BackupAndRestore does); resumed, it
/// says it is finished rather than starting over, and without --resume the folder is refused.
#[test]
fn a_finished_run_removes_its_checkpoint_and_is_not_resumed() {
    let (data, whole) = uninterrupted();
    assert!(whole.join("model.bpk").is_file());
    assert!(
        !whole.join("checkpoint").exists(),
        "the checkpoint is removed"
    );
    let before = std::fs::read(whole.join("history.json")).unwrap();
    let stderr = run_err(main_job(data.path(), whole).arg("--resume"));
    assert!(stderr.contains("finished run"), "{stderr}");
    let stderr = run_err(&mut main_job(data.path(), whole));
    assert!(stderr.contains("already holds a run"), "{stderr}");
    assert_eq!(std::fs::read(whole.join("history.json")).unwrap(), before);
}

/// A second process, fresh or resuming, is refused while the first holds the run folder, named
/// by its process id; once the first is killed, its lock is taken over and the run goes on.
#[test]
fn a_run_folder_is_held_by_one_process_at_a_time() {
    let (data, _) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // Enough epochs that the first is still training when the others start.
    let slow = [("--phase2-epochs", "100")];
    let mut first = main_job_with(data.path(), &out, &slow).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(300);
    while next_epoch(&out) < 1 {
        assert!(first.try_wait().unwrap().is_none(), "the first run ended");
        assert!(Instant::now() < deadline, "no checkpoint in time");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = first.id().to_string();
    let resumed = [("--phase2-epochs", "100"), ("--resume", "")];
    for changes in [&slow[..], &resumed[..]] {
        let stderr = run_err(&mut main_job_with(data.path(), &out, changes));
        assert!(
            stderr.contains("in use by another run") && stderr.contains(&format!("process {pid}")),
            "{stderr}"
        );
    }
    first.kill().unwrap();
    first.wait().unwrap();
    let done = next_epoch(&out);
    let second = main_job_with(data.path(), &out, &resumed).spawn().unwrap();
    kill_when(second, || next_epoch(&out) > done);
}

/// Output paths are checked before any training: an --export-onnx that names a folder, and an
/// --out that is a file, are refused in words, and nothing is written.
#[test]
fn output_paths_are_checked_before_training() {
    let (data, _) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let folder = tmp.path().display().to_string();
    let stderr = run_err(&mut main_job_with(
        data.path(),
        &out,
        &[("--export-onnx", &folder)],
    ));
    assert!(
        stderr.contains(&format!("--export-onnx {folder} is a folder, not a file")),
        "{stderr}"
    );
    assert!(!out.exists(), "nothing trained");
    let file = tmp.path().join("notes.txt");
    std::fs::write(&file, b"").unwrap();
    let stderr = run_err(&mut main_job(data.path(), &file));
    assert!(
        stderr.contains(&format!("--out {} is a file, not a folder", file.display())),
        "{stderr}"
    );
}

/// `--valid-samples 0` trains without validation, as Keras's fit without validation data:
/// nothing reports a validation figure (history, summary, curves, the jump), and what would
/// watch the validation loss is refused, named. An empty test set is refused, named, and
/// profile_step's batch of 0 is refused by its option rather than a panic.
#[test]
fn without_validation_nothing_reports_what_was_not_measured() {
    let (data, _) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let none = [
        ("--valid-samples", "0"),
        ("--schedule", "constant"),
        ("--phase1-epochs", "2"),
        ("--phase2-epochs", "1"),
    ];
    let stdout = run_ok(&mut main_job_with(data.path(), &out, &none));
    assert!(
        stdout.contains("jump at the unfreeze point: not measured"),
        "{stdout}"
    );
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("history.json")).unwrap()).unwrap();
    for e in history["epochs"].as_array().unwrap() {
        assert!(
            e["valid_loss"].is_null() && e["valid_accuracy"].is_null(),
            "{e}"
        );
    }
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(summary.contains("the jump is not measured"), "{summary}");
    assert!(!summary.contains("points**"), "{summary}");
    let curves = image::open(out.join("curves.png")).unwrap().to_rgb8();
    assert!(
        curves.pixels().all(|p| p.0 != [255, 0, 0]),
        "a validation curve was drawn"
    );

    let refused = |changes: &[(&str, &str)], named: &[&str]| {
        let run = tmp.path().join("refused");
        let stderr = run_err(&mut main_job_with(data.path(), &run, changes));
        for name in named {
            assert!(stderr.contains(name), "{name} not in {stderr}");
        }
        assert!(!run.exists(), "refused before the run folder was made");
    };
    refused(
        &[("--valid-samples", "0"), ("--patience", "2")],
        &["`patience` is 2", "--valid-samples 0"],
    );
    refused(
        &[("--valid-samples", "0")],
        &["`schedule` is plateau", "--valid-samples 0"],
    );
    refused(&[("--test-samples", "0")], &["test_samples"]);

    let stderr = run_err(Command::new(example("profile_step")).args(["--batch", "0"]));
    assert!(
        stderr.contains("--batch") && stderr.contains("at least 1"),
        "{stderr}"
    );
}

/// The number after `marker` in `text` (`+3.33` in "jump: +3.33 points").
fn number_after(text: &str, marker: &str) -> f64 {
    let rest = text
        .split(marker)
        .nth(1)
        .unwrap_or_else(|| panic!("{marker} not in {text}"));
    let number: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || "+-.".contains(*c))
        .collect();
    number
        .parse()
        .unwrap_or_else(|_| panic!("no number after {marker} in {text}"))
}

/// Phase 1 stopped early: at a rate that overshoots, with a patience of one epoch, it stops
/// after its 6th epoch of 8 and restores its 5th, whose validation accuracy is not the 6th's.
/// The history numbers phase 2 from epoch 9, as planned; the curves stand every epoch at that
/// number and the unfreeze marker just before epoch 9; the jump, printed, in the summary and on
/// the curves, is measured from epoch 5's validation accuracy, the weights phase 2 started from.
#[test]
fn after_early_stopping_in_phase_one_the_curves_and_the_jump_follow_the_history() {
    let (data, _) = uninterrupted();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let stdout = run_ok(&mut main_job_with(
        data.path(),
        &out,
        &[
            ("--phase1-epochs", "8"),
            ("--phase2-epochs", "2"),
            ("--phase1-lr", "1"),
            ("--phase2-lr", "1e-3"),
            ("--patience", "1"),
            ("--schedule", "constant"),
        ],
    ));
    let (epochs, restored) = history_of(&out);
    let accuracy = |epoch: u64| epochs.iter().find(|e| e.0 == epoch).unwrap().4;
    let last1 = epochs
        .iter()
        .filter(|e| e.1 == 1)
        .map(|e| e.0)
        .max()
        .unwrap();
    assert!(last1 < 8, "phase 1 stopped early: {epochs:?}");
    let from = (restored.as_array().unwrap().iter())
        .map(|r| r.as_u64().unwrap())
        .find(|&r| r <= last1)
        .expect("phase 1 restored its best epoch");
    assert!(from < last1, "{epochs:?}, restored {restored}");
    assert!(
        (accuracy(from) - accuracy(last1)).abs() > 0.01,
        "this run must tell the restored epoch from the last: {epochs:?}"
    );
    let first2 = epochs.iter().find(|e| e.1 == 2).unwrap();
    assert_eq!(first2.0, 9, "phase 2 starts at the epoch the plan gave it");
    let jump = 100.0 * (first2.4 - accuracy(from));

    let printed = number_after(&stdout, "jump at the unfreeze point: ");
    assert!(
        (printed - jump).abs() < 0.006,
        "printed {printed}, want {jump}"
    );
    assert!(stdout.contains(&format!("(from epoch {from})")), "{stdout}");
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    let summarized = number_after(&summary, "'s): **");
    assert!(
        (summarized - jump).abs() < 0.006,
        "summary {summarized}, want {jump}:\n{summary}"
    );

    // The curves' loss panel: the x axis (the longest black row) spans epochs 0.5 to the last
    // + 0.5; the marker (its grey running down the chart) must stand at epoch 8.5.
    let png = image::open(out.join("curves.png")).unwrap().to_rgb8();
    let panel = png.width() / 2;
    let (mut axis, mut best) = ((0, 0), 0);
    for y in 0..png.height() {
        let mut start = None;
        for x in 0..=panel {
            let black = x < panel && png.get_pixel(x, y).0 == [0, 0, 0];
            match (black, start) {
                (true, None) => start = Some(x),
                (false, Some(s)) => {
                    if x - s > best {
                        (axis, best) = ((s, x - 1), x - s);
                    }
                    start = None;
                }
                _ => {}
            }
        }
    }
    let last = epochs.last().unwrap().0 as f64;
    let epoch_at = |x: u32| 0.5 + (x - axis.0) as f64 / (axis.1 - axis.0) as f64 * last;
    let marker: Vec<u32> = (0..panel)
        .filter(|&x| {
            let grey = (0..png.height())
                .filter(|&y| {
                    let p = png.get_pixel(x, y).0;
                    p.iter().zip([102u8; 3]).all(|(a, b)| a.abs_diff(b) <= 8)
                })
                .count();
            grey > 200
        })
        .collect();
    assert!(!marker.is_empty(), "no unfreeze marker");
    for x in marker {
        let at = epoch_at(x);
        assert!(
            (at - 8.5).abs() < 0.15,
            "marker at epoch {at}, axis {axis:?}"
        );
    }
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

/// The main job on wgpu (a GPU, or in CI the software Vulkan driver) as a user runs it: both
/// phases, a kept checkpoint resumed with one more epoch, the report and an ONNX export, every
/// file where the CPU run puts it. (The learner's numbers are held to the CPU's in
/// `train::the_learner_on_wgpu_trains_as_on_the_cpu`.)
#[test]
fn the_main_job_runs_on_wgpu_resumes_and_exports() {
    if std::env::var_os("RESNET_TEST_SKIP_WGPU").is_some() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write_cifar(tmp.path(), 10);
    learnable_weights(tmp.path());
    let out = tmp.path().join("wgpu");
    let onnx = tmp.path().join("wgpu.onnx");
    let short = [
        ("--backend", "wgpu"),
        ("--train-samples", "20"),
        ("--valid-samples", "10"),
        ("--test-samples", "10"),
        ("--phase1-epochs", "1"),
        ("--phase2-epochs", "1"),
        ("--phase2-lr", "1e-3"),
        ("--schedule", "constant"),
        ("--keep-checkpoints", ""),
    ];
    run_ok(&mut main_job_with(tmp.path(), &out, &short));
    let mut more = short.to_vec();
    more.extend([
        ("--phase2-epochs", "2"),
        ("--resume", ""),
        ("--export-onnx", onnx.to_str().unwrap()),
    ]);
    let stdout = run_ok(&mut main_job_with(tmp.path(), &out, &more));
    assert!(stdout.contains("test accuracy"), "{stdout}");
    let (history, _) = history_of(&out);
    assert_eq!(
        history.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
        vec![(1, 1), (2, 2), (3, 2)],
        "phase 1, then phase 2 extended by the resume"
    );
    for file in [
        "model.bpk",
        "curves.png",
        "confusion.png",
        "predictions.png",
        "summary.md",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    assert!(std::fs::metadata(&onnx).unwrap().len() > 1000, "the export");
}
