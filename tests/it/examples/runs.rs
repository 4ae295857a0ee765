//! Run folders: a resume with another recipe, a finished run, one process at a time, output paths
//! checked before training.

use super::*;

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
        ("--plateau-factor", "0.5"),
        ("--plateau-patience", "2"),
        ("--patience", "2"),
        ("--keep-last-weights", ""),
        ("--augment", ""),
        ("--stage-lr-decay", "0.5"),
        ("--optimizer", "sgd"),
        ("--weight-decay", "1e-4"),
        ("--momentum", "0.8"),
        ("--nesterov", ""),
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
        "`phase2_lr` saved 1e-30, given 0.0001".into(),
        "`unfreeze` saved the whole backbone, given from stage 3".into(),
        "`batch_norm` saved inference, given training".into(),
        "`plateau_factor` saved 0.1, given 0.5".into(),
        "`plateau_patience` saved 1, given 2".into(),
        "`patience` saved none, given 2".into(),
        "`restore_best_weights` saved unused (no patience), given false (the last epoch's: \
         --keep-last-weights)"
            .into(),
        "`augment` saved false, given true".into(),
        "`stage_lr_decay` saved 1, given 0.5".into(),
        "`optimizer` saved adam, given sgd".into(),
        "`weight_decay` saved 0, given 0.0001".into(),
        "`momentum` saved unused (optimizer adam), given 0.8".into(),
        "`nesterov` saved unused (optimizer adam), given true".into(),
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

    // Another schedule: the plateau's factor and patience, which only it uses, go unused too.
    let stderr = run_err(&mut main_job_with(
        data.path(),
        &out,
        &[("--schedule", "cosine"), ("--resume", "")],
    ));
    for want in [
        "`schedule` saved plateau, given cosine",
        "`plateau_factor` saved 0.1, given unused (schedule cosine)",
        "`plateau_patience` saved 1, given unused (schedule cosine)",
    ] {
        assert!(stderr.contains(want), "{want} not in:\n{stderr}");
    }
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
