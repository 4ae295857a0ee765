//! `fine_tune` steered from the command line: gradual unfreezing, per-stage rates, AdamW with
//! weight decay and one cycle, as README's "Steering a fine-tune" runs them.

use super::*;

/// Released a stage an epoch, the history names each epoch's first trainable stage, the
/// summary says when each stage came free, the rates of phase 2 rise and fall over the
/// phase (one cycle), and the recipe saved names every choice. Gradual unfreezing and a fixed
/// first stage together are refused.
#[test]
fn fine_tune_releases_a_stage_an_epoch_with_its_own_rates() {
    let tmp = tempfile::tempdir().unwrap();
    let photos = tmp.path().join("photos");
    photo_folders(&photos, 8);
    let backbone = learnable_weights(tmp.path());
    let out = tmp.path().join("run");
    let fine_tune = |more: &[&str]| {
        let mut cmd = fine_tune_on(&photos, &backbone, &out, more);
        cmd.args([
            "--valid-share",
            "0.25",
            "--batch-size",
            "4",
            "--phase1-epochs",
            "1",
        ]);
        cmd.args(["--phase2-epochs", "4", "--phase2-lr", "1e-3"]);
        cmd
    };
    let err = run_err(&mut fine_tune(&[
        "--unfreeze",
        "gradual",
        "--unfreeze-from",
        "3",
    ]));
    assert!(err.contains("--unfreeze-from"), "{err}");
    // A value out of range is refused before training, naming the field and its option.
    let err = run_err(&mut fine_tune(&["--stage-lr-decay", "2"]));
    assert!(
        err.contains("`stage_lr_decay` is 2") && err.contains("(the option --stage-lr-decay)"),
        "{err}"
    );
    assert!(!out.join("checkpoint").exists(), "nothing trained");
    // Negative values reach the check (not clap's "unexpected argument"), and each refusal names
    // the option the user wrote.
    for (args, want) in [
        (&["--weight-decay", "-0.1"][..], "`weight_decay` is -0.1"),
        (
            &["--unfreeze", "gradual", "--unfreeze-every", "0"],
            "(the option --unfreeze-every)",
        ),
        (&["--unfreeze-from", "5"], "(the option --unfreeze-from)"),
        (&["--nesterov"], "(the option --nesterov)"),
    ] {
        let err = run_err(&mut fine_tune(args));
        assert!(err.contains(want), "{args:?}: {err}");
    }

    run_ok(&mut fine_tune(&[
        "--unfreeze",
        "gradual",
        "--unfreeze-every",
        "1",
        "--stage-lr-decay",
        "0.5",
        "--optimizer",
        "adamw",
        "--weight-decay",
        "0.01",
        "--schedule",
        "one-cycle",
    ]));
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("history.json")).unwrap()).unwrap();
    let epochs = history["epochs"].as_array().unwrap();
    let released: Vec<Option<u64>> = epochs.iter().map(|e| e["released_from"].as_u64()).collect();
    assert_eq!(released, [None, Some(4), Some(3), Some(2), Some(1)]);
    // Each epoch's validation figures per class, on cached features (phase 1) and through the
    // whole model (phase 2): they add up to its accuracy, and their F1s to its macro F1.
    for e in epochs {
        let classes = e["valid_classes"].as_array().unwrap();
        assert_eq!(classes.len(), 3, "{e}");
        let images: f64 = classes.iter().map(|c| c["images"].as_f64().unwrap()).sum();
        let right: f64 = (classes.iter())
            .map(|c| c["images"].as_f64().unwrap() * c["recall"].as_f64().unwrap_or(0.0))
            .sum();
        let accuracy = e["valid_accuracy"].as_f64().unwrap();
        assert!((right / images - accuracy).abs() < 1e-9, "{e}");
        let f1: Vec<f64> = classes.iter().filter_map(|c| c["f1"].as_f64()).collect();
        let mean = f1.iter().sum::<f64>() / f1.len() as f64;
        assert!((e["valid_f1"].as_f64().unwrap() - mean).abs() < 1e-9, "{e}");
        assert!(
            e["valid_top5"].is_null(),
            "three classes have no top-5: {e}"
        );
    }
    let rates: Vec<f64> = epochs.iter().map(|e| e["lr"].as_f64().unwrap()).collect();
    assert!(
        (rates[1] - 1e-3 / 25.0).abs() < 1e-12 && rates[2] > rates[1] && rates[4] < rates[2],
        "one cycle over phase 2: {rates:?}"
    );
    let csv = std::fs::read_to_string(out.join("history.csv")).unwrap();
    assert!(
        csv.lines().next().unwrap().ends_with(",released_from"),
        "{csv}"
    );
    assert!(csv.lines().nth(2).unwrap().ends_with(",4"), "{csv}");

    let summary = std::fs::read_to_string(out.join("summary.md")).unwrap();
    assert!(
        summary.contains(
            "gradual unfreezing: stage 4 at the unfreeze point, then stages 3 to 4 at epoch 3, \
             stages 2 to 4 at epoch 4, the whole backbone at epoch 5"
        ),
        "{summary}"
    );
    assert!(summary.contains("| 2 | 2 (stage 4) |"), "{summary}");
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["stage_lr_decay"], 0.5);
    assert_eq!(config["weight_decay"], 0.01);
    assert_eq!(config["unfreeze"], serde_json::json!({ "Gradual": 1 }));
    assert!(
        config["optimizer"]
            .as_str()
            .unwrap()
            .eq_ignore_ascii_case("adamw")
    );
}
