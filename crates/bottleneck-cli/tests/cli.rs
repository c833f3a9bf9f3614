//! End-to-end tests: the real binary on small generated boards.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::OnceLock;

use bottleneck::data::synthetic::BoardConfig;

mod common;
use common::{
    boards_and_model, read_csv, run, run_ok, scratch, text, tiled_boards_and_model, train_denoiser,
};

/// The settings of the quick models these tests train.
const SMALL: [&str; 4] = ["--epochs", "3", "--width", "8"];

/// Trains a small, quick model on `data` with default settings otherwise.
fn train_small(data: &Path, model: &Path) {
    let mut args = vec![
        "train",
        data.to_str().unwrap(),
        "-o",
        model.to_str().unwrap(),
        "--quiet",
    ];
    args.extend_from_slice(&SMALL);
    run_ok(&args);
}

/// Small boards and a model trained on them, shared by the tests.
fn trained() -> &'static (PathBuf, PathBuf) {
    static CELL: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    CELL.get_or_init(|| {
        let cfg = BoardConfig {
            image_size: 32,
            train_good: 40,
            test_good: 6,
            test_per_defect: 2,
            seed: 5,
            defect_px: None,
        };
        boards_and_model(&scratch("shared"), &cfg, &SMALL)
    })
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
    // 40 training images: a cross-conformal ensemble, every image calibrating.
    let (meta, _) = bottleneck::model::file::read_meta(model).unwrap();
    let k = bottleneck::task::detect::DEFAULT_IMAGE_FOLDS;
    assert_eq!(meta.calibration.folds.len(), k);
    assert_eq!(meta.calibration.scores.len(), 40);
    assert_eq!(meta.scoring.ensemble.len(), k - 1);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    for key in [
        "image_auroc",
        "image_aupr",
        "f1",
        "false_alarm_rate_good",
        "pixel_auroc",
        "aupro",
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
    // More folds than images, folds or a head for a denoiser, and an unknown head are
    // refused by name.
    let m = out.join("m");
    for (extra, named, code) in [
        (&["--folds", "41"][..], "folds", 1),
        (&["--folds", "3", "--task", "denoise"], "folds", 1),
        (&["--head", "segment", "--task", "denoise"], "--head", 1),
        // A usage error, from the argument parser.
        (&["--head", "draem"], "unknown head 'draem'", 2),
    ] {
        let mut args = vec!["train", data.to_str().unwrap(), "-o", m.to_str().unwrap()];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(code), "{extra:?}");
        assert!(text(&o).contains(named), "{extra:?}: {}", text(&o));
    }
    assert!(!m.exists());
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
    // ... and is skipped with --skip-bad, with a warning that reaches stderr when it is not
    // a terminal (a log), where the progress bar is hidden.
    let mut skip = args.to_vec();
    skip.retain(|a| *a != "--quiet");
    skip.push("--skip-bad");
    let o = run(&skip);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_csv(&csv).len(), 2);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("warning: ") && stderr.contains("b.png"),
        "{stderr}"
    );
    // Progress reaches such a log as plain lines: each stage when it starts and when it is
    // done, with its count and time.
    let stages: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("scoring: "))
        .collect();
    assert!(
        stages.first().is_some_and(|l| *l == "scoring: 0/2"),
        "{stderr}"
    );
    assert!(
        stages
            .last()
            .is_some_and(|l| l.starts_with("scoring: 2/2, done in ")),
        "{stderr}"
    );
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

/// Sensor readings as CSV: `id,site,<sensors>`, with `gap` of the sensor cells written NA.
fn sensor_csv(path: &Path, n: usize, faulty: bool, seed: u64, gap: f64) {
    use bottleneck::data::synthetic::{SENSORS, sensor_rows};
    let mut text = format!("id,site,{}\n", SENSORS.join(","));
    let mut k = 0u64;
    for (i, (row, _)) in sensor_rows(n, faulty, seed).iter().enumerate() {
        text.push_str(&format!("s{seed}-{i},north"));
        for v in row {
            // A fixed pseudo-random pattern of gaps.
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if ((k >> 33) as f64 / (1u64 << 31) as f64) < gap {
                text.push_str(",NA");
            } else {
                text.push_str(&format!(",{v}"));
            }
        }
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

#[test]
fn tables_train_score_explain_encode_and_impute_end_to_end() {
    let dir = scratch("tables");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    sensor_csv(&dir.join("train.csv"), 400, false, 1, 0.05);
    sensor_csv(&dir.join("test.csv"), 30, true, 2, 0.0);
    // A text column that is neither excluded nor the id is named.
    let o = run(&[
        "train",
        &p("train.csv"),
        "-o",
        &p("m.safetensors"),
        "--id-column",
        "id",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("non-numeric column 'site' (row 1: 'north')"),
        "{}",
        text(&o)
    );
    let o = run(&[
        "train",
        &p("train.csv"),
        "-o",
        &p("m.safetensors"),
        "--id-column",
        "id",
        "--exclude",
        "site",
        "--epochs",
        "30",
        // 400 rows: a cross-conformal ensemble, all 400 calibrating, which honours the
        // default 0.01; a single split's 60 held-out rows could only reach 0.016. The
        // faulty rows are mild: ask for 0.02.
        "--fpr",
        "0.02",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let (meta, _) = bottleneck::model::file::read_table_meta(&dir.join("m.safetensors")).unwrap();
    assert_eq!(meta.calibration.folds.len(), 5);
    assert_eq!(meta.calibration.scores.len(), 400);

    let o = run(&[
        "score",
        &p("m.safetensors"),
        &p("test.csv"),
        "-o",
        &p("s.csv"),
        "--explain",
        "2",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = read_csv(&dir.join("s.csv"));
    assert_eq!(
        rows[0].join(","),
        "id,score,p_value,is_anomaly,explain_1,share_1,explain_2,share_2"
    );
    assert_eq!(rows.len(), 31);
    assert_eq!(rows[1][0], "s2-0");
    let flagged = rows[1..].iter().filter(|r| r[3] == "1").count();
    assert!(flagged >= 20, "{flagged}/30 faulty rows flagged");

    // Codes as Parquet, readable again as a table (id first, then z0..).
    let o = run(&[
        "encode",
        &p("m.safetensors"),
        &p("test.csv"),
        "-o",
        &p("codes.parquet"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[
        "train",
        &p("codes.parquet"),
        "-o",
        &p("codes.safetensors"),
        "--id-column",
        "id",
        "--epochs",
        "2",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[
        "encode",
        &p("m.safetensors"),
        &p("test.csv"),
        "-o",
        &p("codes.csv"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let codes = read_csv(&dir.join("codes.csv"));
    assert_eq!(codes[0][..2], ["id".to_string(), "z0".to_string()]);
    assert_eq!(codes.len(), 31);

    // Impute keeps every observed cell as written and fills every gap.
    sensor_csv(&dir.join("gappy.csv"), 50, false, 3, 0.2);
    let o = run(&[
        "impute",
        &p("m.safetensors"),
        &p("gappy.csv"),
        "-o",
        &p("filled.csv"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let before = read_csv(&dir.join("gappy.csv"));
    let after = read_csv(&dir.join("filled.csv"));
    assert_eq!(before.len(), after.len());
    let mut filled = 0;
    for (b, a) in before.iter().zip(&after) {
        for (x, y) in b.iter().zip(a) {
            if x == "NA" {
                assert!(y.parse::<f32>().is_ok(), "{y}");
                filled += 1;
            } else {
                assert_eq!(x, y);
            }
        }
    }
    assert!(filled > 40, "{filled}");
    assert!(
        text(&o).contains(&format!("{filled} cells filled")),
        "{}",
        text(&o)
    );

    // An image model cannot impute; a table missing a column is named.
    let (_, image_model) = trained();
    let o = run(&[
        "impute",
        image_model.to_str().unwrap(),
        &p("gappy.csv"),
        "-o",
        &p("x.csv"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("this needs a table model"),
        "{}",
        text(&o)
    );
    let o = run(&[
        "score",
        image_model.to_str().unwrap(),
        &p("gappy.csv"),
        "-o",
        &p("x.csv"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("is an image model"), "{}", text(&o));
    std::fs::write(dir.join("short.csv"), "id,temp_in\na,1\n").unwrap();
    let o = run(&[
        "score",
        &p("m.safetensors"),
        &p("short.csv"),
        "-o",
        &p("x.csv"),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("missing columns the model was trained on: temp_out"),
        "{}",
        text(&o)
    );
    assert!(!dir.join("x.csv").exists());
}

#[test]
fn bad_table_cells_name_row_and_column_or_are_skipped() {
    let dir = scratch("badcells");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();
    sensor_csv(&dir.join("train.csv"), 200, false, 4, 0.0);
    let mut text_in = std::fs::read_to_string(dir.join("train.csv")).unwrap();
    text_in = text_in.replacen("s4-5,north,", "s4-5,north,oops", 1);
    text_in.push_str("s4-x,north,inf,1,2,3,4,5,6,7\ns4-y,north,NA,NA,NA,NA,NA,NA,NA,NA\n");
    std::fs::write(dir.join("bad.csv"), &text_in).unwrap();
    let args = |skip: bool| {
        let mut a = vec![
            "train".to_string(),
            p("bad.csv"),
            "-o".into(),
            p("m.safetensors"),
            "--id-column".into(),
            "id".into(),
            "--exclude".into(),
            "site".into(),
            "--epochs".into(),
            "2".into(),
        ];
        if skip {
            a.push("--skip-bad".into());
        }
        a
    };
    let a = args(false);
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(o.status.code(), Some(1));
    // 'oops...' makes temp_in a text column: named with its row.
    assert!(text(&o).contains("'temp_in' (row 6: 'oops"), "{}", text(&o));
    // With the text cell fixed, the infinite value and the empty row are named in turn.
    std::fs::write(dir.join("bad.csv"), text_in.replacen("oops", "", 1)).unwrap();
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        text(&o).contains("row 201, column 'temp_in': inf is not a finite number"),
        "{}",
        text(&o)
    );
    let a = args(true);
    let o = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("row 202: every feature is missing"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("skipped 2 bad rows"), "{}", text(&o));
    assert!(dir.join("m.safetensors").exists());
}

#[test]
fn encode_gives_one_code_per_image_path_first() {
    let (data, model) = trained();
    let out = scratch("encode-images");
    let csv = out.join("codes.csv");
    let test_dir = data.join("test");
    let o = run(&[
        "encode",
        model.to_str().unwrap(),
        test_dir.to_str().unwrap(),
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = read_csv(&csv);
    let images = bottleneck::data::images::find_images(&test_dir).unwrap();
    assert_eq!(rows.len(), images.len() + 1);
    assert_eq!(rows[0][0], "path");
    assert_eq!(rows[0].len(), 1 + 32, "path and 32 codes: {:?}", rows[0]);
    assert!(rows[1][0].starts_with("good/") || rows[1][0].contains('/'));
    let codes: Vec<f32> = rows[1][1..].iter().map(|v| v.parse().unwrap()).collect();
    assert!(codes.iter().any(|&v| v != 0.0));
    // .npy holds the codes only: a 2-D float32 array of the same shape.
    let npy = out.join("codes.npy");
    let o = run(&[
        "encode",
        model.to_str().unwrap(),
        test_dir.to_str().unwrap(),
        "-o",
        npy.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let bytes = std::fs::read(&npy).unwrap();
    let header = String::from_utf8_lossy(&bytes[..128]);
    assert!(
        header.contains(&format!("'shape': ({}, 32)", images.len())),
        "{header}"
    );
}

#[test]
fn denoise_trains_cleans_in_the_input_format_and_never_overwrites() {
    let (data, detector) = trained();
    let dir = scratch("denoise");
    let model = dir.join("denoiser.safetensors");
    let good = data.join("train/good");
    let o = train_denoiser(&good, &model, "3");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("held-out PSNR"), "{}", text(&o));

    // A 16-bit gray PNG of an odd size and an 8-bit colour JPEG, in a nested folder.
    let input = dir.join("noisy");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    let gray = image::ImageBuffer::from_fn(45, 37, |x, y| {
        image::Luma([((x * 1400 + y * 300) % 65535) as u16])
    });
    gray.save(input.join("a.png")).unwrap();
    let colour =
        image::RgbImage::from_fn(40, 30, |x, y| image::Rgb([x as u8 * 6, y as u8 * 8, 90]));
    colour.save(input.join("sub/b.jpg")).unwrap();
    let out = dir.join("clean");
    let o = run(&[
        "denoise",
        model.to_str().unwrap(),
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let a = image::open(out.join("a.png")).unwrap();
    assert_eq!(
        (a.width(), a.height(), a.color()),
        (45, 37, image::ColorType::L16)
    );
    let b = image::open(out.join("sub/b.jpg")).unwrap();
    assert_eq!(
        (b.width(), b.height(), b.color()),
        (40, 30, image::ColorType::Rgb8)
    );

    // One file to one named file; the input itself is refused as output.
    let single = dir.join("single.png");
    let a_in = input.join("a.png");
    let o = run(&[
        "denoise",
        model.to_str().unwrap(),
        a_in.to_str().unwrap(),
        "-o",
        single.to_str().unwrap(),
    ]);
    assert!(o.status.success() && single.is_file(), "{}", text(&o));
    let before = std::fs::read(&a_in).unwrap();
    for (from, to) in [(&a_in, &a_in), (&input, &input)] {
        let o = run(&[
            "denoise",
            model.to_str().unwrap(),
            from.to_str().unwrap(),
            "-o",
            to.to_str().unwrap(),
        ]);
        assert!(
            !o.status.success() && text(&o).contains("overwrite"),
            "{}",
            text(&o)
        );
    }
    assert_eq!(
        std::fs::read(&a_in).unwrap(),
        before,
        "the input is untouched"
    );

    // Each model refuses the other's job by name.
    let o = run(&[
        "denoise",
        detector.to_str().unwrap(),
        a_in.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("needs a denoising model"),
        "{}",
        text(&o)
    );
    let csv = dir.join("s.csv");
    let o = run(&[
        "score",
        model.to_str().unwrap(),
        input.to_str().unwrap(),
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("bottleneck denoise"),
        "{}",
        text(&o)
    );
    let o = run(&[
        "train",
        good.to_str().unwrap(),
        "--noise",
        "blur:2",
        "--task",
        "denoise",
        "-o",
        csv.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("blur:2"),
        "{}",
        text(&o)
    );
}

#[test]
fn index_and_search_rank_images_and_append_without_rebuilding() {
    let (data, model) = trained();
    let dir = scratch("search");
    let cat = dir.join("boards.bnidx");
    let good = data.join("train/good");
    let o = run(&[
        "index",
        model.to_str().unwrap(),
        good.to_str().unwrap(),
        "-o",
        cat.to_str().unwrap(),
        "--graph-from",
        "20",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("approximate search graph"),
        "{}",
        text(&o)
    );

    // A training image finds itself first; lines are ranked by distance.
    let query = std::fs::read_dir(&good)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let o = run(&[
        "search",
        cat.to_str().unwrap(),
        query.to_str().unwrap(),
        "-k",
        "5",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).to_string();
    let lines: Vec<Vec<&str>> = stdout
        .lines()
        .skip(1)
        .map(|l| l.split('\t').collect())
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(
        lines[0][2].ends_with(query.file_name().unwrap().to_str().unwrap()),
        "{stdout}"
    );
    let d: Vec<f32> = lines.iter().map(|l| l[3].parse().unwrap()).collect();
    assert!(d.windows(2).all(|w| w[0] <= w[1]) && d[0] < 1e-4, "{d:?}");

    // Append the test images: the graph grows, the JSON output lists them.
    let test = data.join("test");
    let o = run(&[
        "index",
        model.to_str().unwrap(),
        test.to_str().unwrap(),
        "-o",
        cat.to_str().unwrap(),
        "--append",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[
        "search",
        cat.to_str().unwrap(),
        test.to_str().unwrap(),
        "-k",
        "1",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(rows.len() >= 6);
    for r in &rows {
        assert_eq!(r["query"], r["hits"][0]["name"], "{r}");
    }

    // Wrong kinds and wrong files are named.
    let table = dir.join("rows.csv");
    std::fs::write(&table, "a,b\n1,2\n").unwrap();
    let o = run(&["search", cat.to_str().unwrap(), table.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("reads images"),
        "{}",
        text(&o)
    );
    let o = run(&["search", model.to_str().unwrap(), query.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("not a bottleneck catalogue"),
        "{}",
        text(&o)
    );
}

/// Fails unless every reference in a report stays inside the file: no URL but the SVG
/// namespace, and every `src` a `data:` URI.
fn assert_self_contained(html: &str) {
    let rest = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!rest.contains("http://") && !rest.contains("https://"));
    assert!(!rest.contains("href=") && !rest.contains("url("));
    for (i, _) in rest.match_indices("src=\"") {
        assert!(rest[i + 5..].starts_with("data:image/png;base64,"));
    }
}

/// Fails unless `o` failed with exit code 1 and one line on stderr containing `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
    assert_eq!(o.status.code(), Some(1), "{}", text(o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(needle), "{stderr}");
}

#[test]
fn report_writes_a_self_contained_page_for_an_mvtec_root_and_beside_score() {
    let (data, model) = trained();
    let dir = scratch("report");
    let (m, d) = (model.to_str().unwrap(), data.to_str().unwrap());
    let page = dir.join("report.html");
    let o = run(&["report", m, d, "-o", page.to_str().unwrap(), "--top", "5"]);
    assert!(o.status.success(), "{}", text(&o));
    let html = std::fs::read_to_string(&page).unwrap();
    // Loss curve, score histogram, ROC and PR; five images, each with its heatmap.
    assert_eq!(html.matches("<svg").count(), 4);
    assert_eq!(html.matches("alt=\"image\"").count(), 5);
    assert_eq!(html.matches("alt=\"heatmap\"").count(), 5);
    assert_self_contained(&html);
    // Trained without --knn: the latent part's check and its verdict.
    assert!(
        html.contains("Latent part") && html.contains("the latent distance ranks"),
        "no latent check in the report"
    );
    // The root's 18 test images, with eval's AUROC.
    let e = run(&["eval", m, d, "--quiet"]);
    let v: serde_json::Value = serde_json::from_slice(&e.stdout).unwrap();
    let auroc = v["image_auroc"].as_f64().unwrap();
    assert!(text(&o).contains(": 18 images, "), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("AUROC {auroc:.4}")),
        "{} vs eval {auroc}",
        text(&o)
    );

    // One pass of `score` writes the CSV and the report of the same images; a test
    // folder is labelled by its subfolders.
    let csv = dir.join("scores.csv");
    let beside = dir.join("beside.html");
    let test = data.join("test");
    let o = run(&[
        "score",
        m,
        test.to_str().unwrap(),
        "-o",
        csv.to_str().unwrap(),
        "--report",
        beside.to_str().unwrap(),
        "--top",
        "3",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let rows = read_csv(&csv);
    assert_eq!(rows.len(), 19);
    let flagged = rows[1..].iter().filter(|r| r[3] == "1").count();
    assert!(
        text(&o).contains(&format!("18 images, {flagged} flagged, AUROC {auroc:.4}")),
        "{}",
        text(&o)
    );
    let html = std::fs::read_to_string(&beside).unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
    assert_eq!(html.matches("alt=\"heatmap\"").count(), 3);
    assert_self_contained(&html);
    // --top and --label belong to --report.
    let o = run(&["score", m, d, "-o", csv.to_str().unwrap(), "--label", "x"]);
    assert!(!o.status.success());
}

#[test]
fn report_labels_table_rows_by_column_and_refuses_denoisers_and_missing_labels() {
    let (data, image_model) = trained();
    let dir = scratch("report-errors");
    let p = |name: &str| dir.join(name).to_str().unwrap().to_string();

    // A denoiser is refused by name before any work; nothing is written.
    let o = train_denoiser(
        &data.join("train/good"),
        &dir.join("denoiser.safetensors"),
        "1",
    );
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&[
        "report",
        &p("denoiser.safetensors"),
        data.to_str().unwrap(),
        "-o",
        &p("r.html"),
        "--quiet",
    ]);
    assert_one_line_error(&o, "report needs an anomaly-detection model");
    assert!(!dir.join("r.html").exists());
    // Image labels come from folders, not columns.
    let o = run(&[
        "report",
        image_model.to_str().unwrap(),
        data.to_str().unwrap(),
        "-o",
        &p("r.html"),
        "--label",
        "fault",
        "--quiet",
    ]);
    assert_one_line_error(&o, "--label fault names a table column");

    // A table model, and test rows with a 0/1 fault column appended.
    sensor_csv(&dir.join("train.csv"), 300, false, 1, 0.0);
    let o = run(&[
        "train",
        &p("train.csv"),
        "-o",
        &p("m.safetensors"),
        "--id-column",
        "id",
        "--exclude",
        "site",
        "--epochs",
        "20",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    sensor_csv(&dir.join("normal.csv"), 20, false, 2, 0.0);
    sensor_csv(&dir.join("faulty.csv"), 20, true, 3, 0.0);
    let mut labelled = String::new();
    for (name, label) in [("normal.csv", "0"), ("faulty.csv", "1")] {
        let body = std::fs::read_to_string(dir.join(name)).unwrap();
        let mut lines = body.lines();
        let header = lines.next().unwrap();
        if labelled.is_empty() {
            labelled = format!("{header},fault\n");
        }
        for line in lines {
            labelled.push_str(&format!("{line},{label}\n"));
        }
    }
    std::fs::write(dir.join("test.csv"), labelled).unwrap();
    let o = run(&[
        "score",
        &p("m.safetensors"),
        &p("test.csv"),
        "-o",
        &p("s.csv"),
        "--report",
        &p("r.html"),
        "--label",
        "fault",
        "--top",
        "4",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_csv(&dir.join("s.csv")).len(), 41);
    assert!(text(&o).contains(": 40 rows, "), "{}", text(&o));
    assert!(text(&o).contains("AUROC"), "{}", text(&o));
    let html = std::fs::read_to_string(dir.join("r.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
    assert_eq!(html.matches("<tr><td>").count(), 4);
    assert_self_contained(&html);

    // A label column the file lacks is named; neither the CSV nor the report is written.
    std::fs::remove_file(dir.join("r.html")).unwrap();
    std::fs::remove_file(dir.join("s.csv")).unwrap();
    let o = run(&[
        "score",
        &p("m.safetensors"),
        &p("train.csv"),
        "-o",
        &p("s.csv"),
        "--report",
        &p("r.html"),
        "--label",
        "fault",
        "--quiet",
    ]);
    assert_one_line_error(&o, "label column 'fault' not found; columns are: id, site");
    assert!(!dir.join("r.html").exists() && !dir.join("s.csv").exists());
    let o = run(&[
        "report",
        &p("m.safetensors"),
        &p("train.csv"),
        "-o",
        &p("r.html"),
        "--label",
        "fault",
        "--quiet",
    ]);
    assert_one_line_error(&o, "label column 'fault' not found");
}

#[test]
fn no_command_writes_over_its_own_inputs() {
    let (data, model) = trained();
    let model_bytes = std::fs::read(model).unwrap();
    let image = data.join("train/good/000.png");
    let image_bytes = std::fs::read(&image).unwrap();
    let test = data.join("test");
    let (m, t, d, i) = (
        model.to_str().unwrap(),
        test.to_str().unwrap(),
        data.to_str().unwrap(),
        image.to_str().unwrap(),
    );
    let spelt = format!("{}/../model.safetensors", data.display());
    let maps = test.join("maps");
    let cases: [(Vec<&str>, &str); 6] = [
        (vec!["score", m, t, "-o", m], "write over the input"),
        (vec!["score", m, t, "-o", &spelt], "write over the input"),
        (vec!["train", d, "-o", i], "a file in the input folder"),
        (vec!["encode", m, d, "-o", i], "a file in the input folder"),
        (vec!["report", m, t, "-o", m], "write over the input"),
        (
            vec![
                "score",
                m,
                t,
                "-o",
                "/dev/null",
                "--maps",
                maps.to_str().unwrap(),
            ],
            "overlaps the input",
        ),
    ];
    for (mut args, needle) in cases {
        args.push("--quiet");
        let o = run(&args);
        assert_one_line_error(&o, needle);
    }
    assert_eq!(std::fs::read(model).unwrap(), model_bytes, "model intact");
    assert_eq!(std::fs::read(&image).unwrap(), image_bytes, "image intact");
    assert!(!maps.exists());
}

/// CRC-32 (PNG's chunk checksum), bit by bit.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// A small PNG whose header claims `w` x `h` pixels (a decompression bomb as the decoder
/// would see it: the claim is all that is read before the size is refused).
fn png_claiming(path: &Path, w: u32, h: u32) {
    let mut bytes = Vec::new();
    image::GrayImage::new(1, 1)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Png,
        )
        .unwrap();
    // Signature (8), IHDR length (4) and type (4), then width and height.
    bytes[16..20].copy_from_slice(&w.to_be_bytes());
    bytes[20..24].copy_from_slice(&h.to_be_bytes());
    let crc = crc32(&bytes[12..29]);
    bytes[29..33].copy_from_slice(&crc.to_be_bytes());
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn oversized_and_unreadable_images_are_refused_or_skipped_from_the_first_file_on() {
    let (data, model) = trained();
    let dir = scratch("probe");
    let good = dir.join("good");
    std::fs::create_dir_all(&good).unwrap();
    // The first file in order is unreadable, the second claims 400 megapixels.
    std::fs::write(good.join("000.png"), b"junk").unwrap();
    png_claiming(&good.join("001.png"), 20_000, 20_000);
    for i in 0..12 {
        std::fs::copy(
            data.join(format!("train/good/{i:03}.png")),
            good.join(format!("{:03}.png", i + 2)),
        )
        .unwrap();
    }
    let m = dir.join("m.safetensors");
    let (g, ms) = (good.to_str().unwrap(), m.to_str().unwrap());
    let o = run(&[&["train", g, "-o", ms, "--quiet"][..], &SMALL].concat());
    assert_one_line_error(&o, "000.png");
    let o = run(&[&["train", g, "-o", ms, "--skip-bad"][..], &SMALL].concat());
    assert!(o.status.success(), "{}", text(&o));
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("000.png") && stderr.contains("001.png"),
        "{stderr}"
    );
    assert!(stderr.contains("400.0 megapixels"), "{stderr}");

    let csv = dir.join("scores.csv");
    let args = [
        "score",
        model.to_str().unwrap(),
        g,
        "-o",
        csv.to_str().unwrap(),
    ];
    let o = run(&[&args[..], &["--quiet"]].concat());
    assert!(!o.status.success());
    let o = run(&[&args[..], &["--skip-bad", "--max-megapixels", "1"]].concat());
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_csv(&csv).len(), 1 + 12);
}

#[test]
fn tiles_give_maps_at_the_image_size_and_refuse_what_they_cannot_do() {
    let dir = scratch("tiles");
    let (data, model) = tiled_boards_and_model(&dir);
    let model = model.to_str().unwrap();
    let maps = dir.join("maps");
    let csv = dir.join("scores.csv");
    run_ok(&[
        "score",
        model,
        data.join("test").to_str().unwrap(),
        "-o",
        csv.to_str().unwrap(),
        "--maps",
        maps.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(read_csv(&csv).len(), 1 + 2 + 6);
    let heat = image::open(maps.join("short/000_heatmap.png")).unwrap();
    assert_eq!((heat.width(), heat.height()), (48, 48));
    // The raw map holds one float32 per pixel of the image (after the .npy header).
    let npy = std::fs::metadata(maps.join("short/000_map.npy"))
        .unwrap()
        .len();
    assert!((48 * 48 * 4..48 * 48 * 4 + 256).contains(&npy), "{npy}");
    let o = run(&["eval", model, data.to_str().unwrap(), "--quiet"]);
    assert!(o.status.success(), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["pixel_resolution"], 48);
    assert!(e["aupro"].as_f64().is_some(), "{e}");
    // Codes are per tile: encode and ONNX export are refused, and write nothing.
    let onnx = dir.join("m.onnx");
    let o = run(&["export", model, "-o", onnx.to_str().unwrap()]);
    assert!(
        !o.status.success() && text(&o).contains("tiles"),
        "{}",
        text(&o)
    );
    assert!(!onnx.exists());
    let codes = dir.join("codes.csv");
    let o = run(&[
        "encode",
        model,
        data.join("test").to_str().unwrap(),
        "-o",
        codes.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success() && text(&o).contains("tile"),
        "{}",
        text(&o)
    );
    assert!(!codes.exists());
    // --scale needs --tile.
    let o = run(&[
        "train",
        data.to_str().unwrap(),
        "-o",
        dir.join("x.safetensors").to_str().unwrap(),
        "--scale",
        "0.5",
    ]);
    assert!(
        !o.status.success() && text(&o).contains("scale"),
        "{}",
        text(&o)
    );
}
