//! The main job as a user runs it: killed and resumed, on two replicas, with its defaults, without
//! validation, after early stopping, and on wgpu and Vulkan.

use super::*;

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
    // The summary says the replicas took turns on the one CPU device.
    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains("devices [0, 1]: 2 replicas taking turns"),
        "{summary}"
    );
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

    // An option that only works with another is refused without it, before anything is read
    // or written (a new user's --plateau-factor without the plateau schedule was accepted, did
    // nothing, and then made --resume refuse the run); so is an input side of 0, which
    // panicked in fine_tune.
    for (args, option) in [
        (&["--plateau-factor", "0.5"][..], "--plateau-factor"),
        (&["--momentum", "0.5"][..], "--momentum"),
        (&["--keep-last-weights"][..], "--keep-last-weights"),
        (&["--unfreeze-every", "2"][..], "--unfreeze-every"),
        (&["--export-batch-norm", "kept"][..], "--export-batch-norm"),
        (&["--input-size", "0"][..], "--input-size"),
    ] {
        let out = tmp.path().join("refused");
        let failed = job("refused").args(args).output().unwrap();
        let err = String::from_utf8_lossy(&failed.stderr);
        assert!(
            !failed.status.success()
                && err.contains(&format!("(the option {option})"))
                && !err.contains("panicked"),
            "{args:?}: {err}"
        );
        assert!(!out.exists(), "{args:?} wrote {}", out.display());
    }
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

/// The short recipe the GPU backends' main jobs run: both phases of one epoch, kept checkpoints,
/// and no dropout, whose masks each backend draws its own way, so that a run's epochs agree with
/// flex's to float rounding.
const SHORT: [(&str, &str); 9] = [
    ("--train-samples", "20"),
    ("--valid-samples", "10"),
    ("--test-samples", "10"),
    ("--phase1-epochs", "1"),
    ("--phase2-epochs", "1"),
    ("--phase2-lr", "1e-3"),
    ("--schedule", "constant"),
    ("--dropout", "0"),
    ("--keep-checkpoints", ""),
];

/// [`SHORT`] on `backend`, in the data folder `tmp`, writing to `out`.
fn short_job(tmp: &Path, out: &Path, backend: &str) -> Command {
    let mut options = SHORT.to_vec();
    options.push(("--backend", backend));
    main_job_with(tmp, out, &options)
}

/// Runs [`SHORT`] on flex beside the run in `run` and asserts the same history.
fn assert_trains_as_on_flex(tmp: &Path, run: &Path) {
    let on_flex = tmp.join("flex");
    run_ok(&mut short_job(tmp, &on_flex, "flex"));
    let (gpu_epochs, _) = history_of(run);
    let (flex_epochs, _) = history_of(&on_flex);
    assert_same_history(&gpu_epochs, &flex_epochs);
}

/// Turns on CubeCL's compilation log for the GPU runs started in `dir` (a `cubecl.toml` there,
/// which CubeCL reads from the working folder): each kernel, its source and the language it was
/// compiled to, in the file returned.
fn log_kernels(dir: &Path) -> PathBuf {
    let log = dir.join("kernels.log");
    let config = format!("[compilation.logger]\nlevel = \"full\"\nfile = {log:?}\n");
    std::fs::write(dir.join("cubecl.toml"), config).unwrap();
    log
}

/// How many kernels [`log_kernels`]' log shows compiled to SPIR-V and to WGSL.
fn kernel_languages(log: &Path) -> (usize, usize) {
    let kernels = std::fs::read_to_string(log).unwrap();
    let count = |tag: &str| kernels.matches(&format!("source:\n```{tag}\n")).count();
    (count("spirv"), count("wgsl"))
}

/// The main job on wgpu (a GPU, or in CI the software Vulkan driver) as a user runs it: both
/// phases, a kept checkpoint resumed with one more epoch, the report and an ONNX export, every
/// file where the CPU run puts it. (The learner's numbers are held to the CPU's in
/// `tests/wgpu.rs`.) On Linux its automatic device comes up on Vulkan, where the `vulkan`
/// feature turns CubeCL's SPIR-V compiler on for it too: WGSL only in a build without it.
#[test]
fn the_main_job_runs_on_wgpu_resumes_and_exports() {
    if crate::common::skips(resnet_transfer::BackendKind::Wgpu) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write_cifar(tmp.path(), 10);
    learnable_weights(tmp.path());
    let out = tmp.path().join("wgpu");
    let onnx = tmp.path().join("wgpu.onnx");
    let mut short = SHORT.to_vec();
    short.push(("--backend", "wgpu"));
    let log = log_kernels(tmp.path());
    run_ok(main_job_with(tmp.path(), &out, &short).current_dir(tmp.path()));
    let (spirv, wgsl) = kernel_languages(&log);
    eprintln!("wgpu: {spirv} kernels compiled to SPIR-V, {wgsl} to WGSL");
    if cfg!(target_os = "linux") {
        let vulkan = cfg!(feature = "vulkan");
        assert_eq!(
            (spirv > 0, wgsl > 0),
            (vulkan, !vulkan),
            "SPIR-V {spirv}, WGSL {wgsl}"
        );
    }
    assert_trains_as_on_flex(tmp.path(), &out);
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

    // fine_tune on wgpu, its photos streamed with torchvision's crops of each whole photo.
    let photos = tmp.path().join("photos");
    super::photo_folders(&photos, 4);
    let tuned = tmp.path().join("fine_tune");
    let weights = tmp.path().join("resnet18-w8");
    let mut fine_tune = super::fine_tune_on(&photos, &weights, &tuned, &["--augment"]);
    fine_tune.args(["--backend", "wgpu", "--batch-size", "4"]);
    fine_tune.args(["--phase1-epochs", "1", "--phase2-epochs", "1"]);
    run_ok(&mut fine_tune);
    let summary = std::fs::read_to_string(tuned.join("summary.md")).unwrap();
    assert!(summary.contains("streamed from their files"), "{summary}");
    assert_eq!(history_of(&tuned).0.len(), 2);
}

/// The main job on Vulkan (a GPU, or in CI the software Vulkan driver) as a user runs it, its
/// kernels compiled to SPIR-V, not WGSL: CubeCL's compilation log, which a `cubecl.toml` in the
/// working folder turns on, names each kernel's language. Its epochs are flex's.
#[cfg(feature = "vulkan")]
#[test]
fn the_main_job_on_vulkan_compiles_spirv_and_trains_as_on_flex() {
    if crate::common::skips(resnet_transfer::BackendKind::Vulkan) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    write_cifar(tmp.path(), 10);
    learnable_weights(tmp.path());
    let log = log_kernels(tmp.path());
    let out = tmp.path().join("vulkan");
    run_ok(short_job(tmp.path(), &out, "vulkan").current_dir(tmp.path()));
    let (spirv, wgsl) = kernel_languages(&log);
    assert!(
        spirv > 0 && wgsl == 0,
        "{spirv} kernels compiled to SPIR-V, {wgsl} to WGSL"
    );
    assert_trains_as_on_flex(tmp.path(), &out);
}
