//! What the end-to-end test files share: running the real binary, scratch folders, and
//! boards with a model trained on them. Each test file uses part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use bottleneck::data::synthetic::{BoardConfig, generate_boards};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bottleneck"))
}

pub fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

/// stdout then stderr of a finished run.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs the binary and fails the test with its output unless it succeeds.
pub fn run_ok(args: &[&str]) {
    let o = run(args);
    assert!(o.status.success(), "{}", text(&o));
}

/// The cells of a CSV file without quoting, a row per line (header first).
pub fn read_csv(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

/// An empty folder for one test, named after it and this test process.
pub fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bn-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes `boards` under `dir/boards` and trains `dir/model.safetensors` on them with
/// `train_args` (epochs, width...); returns both paths.
pub fn boards_and_model(
    dir: &Path,
    boards: &BoardConfig,
    train_args: &[&str],
) -> (PathBuf, PathBuf) {
    let data = dir.join("boards");
    generate_boards(&data, boards).unwrap();
    let model = dir.join("model.safetensors");
    let mut args = vec![
        "train",
        data.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(train_args);
    run_ok(&args);
    (data, model)
}

/// Small 48 px boards with 3-5 px defects under `dir` and a quick model reading them in
/// 16 px tiles.
pub fn tiled_boards_and_model(dir: &Path) -> (PathBuf, PathBuf) {
    let cfg = BoardConfig {
        image_size: 48,
        train_good: 12,
        test_good: 2,
        test_per_defect: 1,
        seed: 9,
        defect_px: Some((3.0, 5.0)),
    };
    boards_and_model(
        dir,
        &cfg,
        &["--tile", "16", "--epochs", "2", "--width", "8"],
    )
}

/// Trains a small Gaussian (sigma 0.1) denoiser on the images in `clean` for `epochs`
/// epochs, to `model`; returns the run for its output and status.
pub fn train_denoiser(clean: &Path, model: &Path, epochs: &str) -> Output {
    run(&[
        "train",
        clean.to_str().unwrap(),
        "--task",
        "denoise",
        "--noise",
        "gaussian:0.1",
        "--epochs",
        epochs,
        "--width",
        "8",
        "-o",
        model.to_str().unwrap(),
    ])
}
