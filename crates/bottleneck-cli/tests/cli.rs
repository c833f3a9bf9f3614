//! End-to-end tests: the real binary on small generated boards.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use bottleneck::data::synthetic::{BoardConfig, generate_boards};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_bottleneck"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("binary runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("bn-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Trains a small, quick model on `data` with default settings otherwise.
fn train_small(data: &Path, model: &Path) {
    let o = run(&[
        "train",
        data.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        "--epochs",
        "3",
        "--width",
        "8",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
}

/// Small boards and a model trained on them, shared by the tests.
fn trained() -> &'static (PathBuf, PathBuf) {
    static CELL: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CELL.get_or_init(|| {
        let dir = scratch("shared");
        let data = dir.join("boards");
        let cfg = BoardConfig {
            image_size: 32,
            train_good: 40,
            test_good: 6,
            test_per_defect: 2,
            seed: 5,
        };
        generate_boards(&data, &cfg).unwrap();
        let model = dir.join("model.safetensors");
        train_small(&data, &model);
        (data, model)
    })
}

fn read_csv(path: &Path) -> Vec<Vec<String>> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn score_writes_one_row_per_image_in_input_order_with_maps() {
    let (data, model) = trained();
    let out = scratch("score");
    let csv = out.join("scores.csv");
    let maps = out.join("maps");
    let test = data.join("test");
    let o = run(&[
        "score",
        model.to_str().unwrap(),
        test.to_str().unwrap(),
        "-o",
        csv.to_str().unwrap(),
        "--maps",
        maps.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = read_csv(&csv);
    assert_eq!(rows[0], ["path", "score", "p_value", "is_anomaly"]);
    let paths: Vec<&str> = rows[1..].iter().map(|r| r[0].as_str()).collect();
    assert_eq!(paths.len(), 6 + 2 * 6);
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "rows follow the sorted input order");
    assert!(paths.contains(&"good/000.png"));
    for r in &rows[1..] {
        let p: f64 = r[2].parse().unwrap();
        assert!(p > 0.0 && p <= 1.0, "p-value {p}");
        assert!(r[3] == "0" || r[3] == "1");
        let score: f32 = r[1].parse().unwrap();
        assert!(score.is_finite());
    }
    let heat = image::open(maps.join("short/000_heatmap.png")).unwrap();
    assert_eq!((heat.width(), heat.height()), (32, 32));
    assert!(maps.join("short/000_map.npy").is_file());
}

#[test]
fn eval_prints_metrics_json() {
    let (data, model) = trained();
    let o = run(&[
        "eval",
        model.to_str().unwrap(),
        data.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    for key in [
        "image_auroc",
        "image_aupr",
        "f1",
        "false_alarm_rate_good",
        "pixel_auroc",
    ] {
        let x = v[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} missing: {v}"));
        assert!((0.0..=1.0).contains(&x), "{key} = {x}");
    }
    assert_eq!(v["images"], 18);
}

#[test]
fn same_seed_gives_identical_scores() {
    let (data, model) = trained();
    let out = scratch("determinism");
    let again = out.join("again.safetensors");
    train_small(data, &again);
    let test = data.join("test");
    let mut outputs = Vec::new();
    for (i, m) in [model, &again].iter().enumerate() {
        let csv = out.join(format!("s{i}.csv"));
        let o = run(&[
            "score",
            m.to_str().unwrap(),
            test.to_str().unwrap(),
            "-o",
            csv.to_str().unwrap(),
            "--quiet",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        outputs.push(std::fs::read(&csv).unwrap());
    }
    assert_eq!(outputs[0], outputs[1]);
}

#[test]
fn bad_inputs_are_one_line_errors_with_nonzero_exit() {
    let (data, model) = trained();
    let out = scratch("errors");
    // Missing path.
    let o = run(&[
        "train",
        "/no/such/dir",
        "-o",
        out.join("m").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("/no/such/dir"), "{}", text(&o));
    // Empty folder.
    let empty = out.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let o = run(&[
        "train",
        empty.to_str().unwrap(),
        "-o",
        out.join("m").to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("no images found"), "{}", text(&o));
    // Not a model file.
    let fake = out.join("fake.safetensors");
    std::fs::write(&fake, b"definitely not a model").unwrap();
    let csv = out.join("s.csv");
    let o = run(&[
        "score",
        fake.to_str().unwrap(),
        data.to_str().unwrap(),
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("not a bottleneck model file"),
        "{}",
        text(&o)
    );
    // A corrupt image stops scoring, names the file, and keeps the previous output intact.
    let imgs = out.join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    std::fs::copy(data.join("test/good/000.png"), imgs.join("a.png")).unwrap();
    std::fs::write(imgs.join("b.png"), b"truncated").unwrap();
    std::fs::write(&csv, b"previous results\n").unwrap();
    let args = [
        "score",
        model.to_str().unwrap(),
        imgs.to_str().unwrap(),
        "-o",
        csv.to_str().unwrap(),
        "--quiet",
    ];
    let o = run(&args);
    assert!(!o.status.success());
    assert!(text(&o).contains("b.png"), "{}", text(&o));
    assert_eq!(std::fs::read(&csv).unwrap(), b"previous results\n");
    assert_eq!(
        std::fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .count(),
        0
    );
    // ... and is skipped with --skip-bad.
    let mut skip = args.to_vec();
    skip.push("--skip-bad");
    let o = run(&skip);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_csv(&csv).len(), 2);
}

#[test]
fn contamination_sets_the_threshold_rule_and_conflicts_with_fpr() {
    let (data, _) = trained();
    let out = scratch("contamination");
    let model = out.join("m.safetensors");
    let (d, m) = (data.to_str().unwrap(), model.to_str().unwrap());
    let base = [
        "train", d, "-o", m, "--epochs", "1", "--width", "8", "--quiet",
    ];
    let o = run(&[&base[..], &["--contamination", "0.25", "--fpr", "0.1"]].concat());
    assert!(!o.status.success(), "both rules at once must be refused");
    let o = run(&[&base[..], &["--contamination", "0.25"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&["eval", m, d, "--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["fpr_target"], 0.25);
    let o = run(&[&base[..], &["--contamination", "1.5"]].concat());
    assert!(!o.status.success());
    assert!(
        text(&o).contains("--contamination must be between 0 and 1"),
        "{}",
        text(&o)
    );
}
