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

mod main_job;
mod photos;
mod runs;
mod steering;
mod tools;

/// `train_cifar10` on a small CIFAR-10 in `data` (which holds the weights too), writing to
/// `out`: three epochs per phase, the plateau schedule with a patience of one epoch, and a
/// phase-2 rate too small to move any weight, so that phase 2's validation loss stays flat and
/// the schedule lowers the rate after its second epoch.
pub(super) fn main_job(data: &Path, out: &Path) -> Command {
    main_job_with(data, out, &[])
}

/// [`main_job`] with some options given other values (`""` for a flag without one), or added.
pub(super) fn main_job_with(data: &Path, out: &Path, changes: &[(&str, &str)]) -> Command {
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
    // The plateau's patience goes with its schedule alone (refused without it).
    if !options.contains(&("--schedule", "plateau"))
        && !changes.iter().any(|c| c.0 == "--plateau-patience")
    {
        options.retain(|(flag, _)| *flag != "--plateau-patience");
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
pub(super) fn uninterrupted() -> &'static (tempfile::TempDir, PathBuf) {
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

pub(super) fn next_epoch(out: &Path) -> u64 {
    std::fs::read(out.join("checkpoint/state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["next_epoch"].as_u64())
        .unwrap_or(0)
}

/// Polls `ready` until it holds, then kills `child`; fails if the run ends or stalls first.
pub(super) fn kill_when(mut child: std::process::Child, ready: impl Fn() -> bool) {
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

/// A photo of `class` (0 red stripes, 1 green bars, 2 blue checks), `w` x `h`, with noise.
pub(super) fn photo(class: usize, w: u32, h: u32, seed: u32) -> image::RgbImage {
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
pub(super) fn photo_folders(root: &Path, per_class: u32) -> Vec<PathBuf> {
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

/// `fine_tune` as the photo tests run it: `photos` with `weights` at 32 pixels, offline and
/// quiet, into `out`, then `more` options.
pub(super) fn fine_tune_on(photos: &Path, weights: &Path, out: &Path, more: &[&str]) -> Command {
    let mut cmd = Command::new(example("fine_tune"));
    cmd.arg("--images")
        .arg(photos)
        .arg("--weights")
        .arg(weights);
    cmd.args(["--input-size", "32", "--offline", "--quiet"]);
    cmd.arg("--out").arg(out).args(more);
    cmd
}

/// Parses `predict --json` output.
pub(super) fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Runs a command that must fail; returns its standard error.
pub(super) fn run_err(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{cmd:?} succeeded:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

/// The bytes of the files of a run folder (and its checkpoint), by name.
pub(super) fn snapshot(out: &Path) -> Vec<(String, Vec<u8>)> {
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

/// The number after `marker` in `text` (`+3.33` in "jump: +3.33 points").
pub(super) fn number_after(text: &str, marker: &str) -> f64 {
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
