//! Hostile model files: every field of every kind of model file's metadata is changed to
//! values a careless edit or a damaged copy gives (zero, negative, huge, wrong type, empty,
//! shortened, reordered, missing), the checksum made again so the change reaches the
//! checks, and the file loaded. Each must be a clear error naming the file, or a model that
//! loads and runs on a small input without a panic and with sane verdicts. A mutation that
//! aborts or allocates without bound kills the test run, which fails it too.
//!
//! All of them (about 3,000, a few seconds) run by default; `BOTTLENECK_MUTATIONS` bounds
//! the count per kind, drawn with a fixed seed.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::time::{Duration, Instant};

use bottleneck::data::audio::Audio;
use bottleneck::model::Head;
use bottleneck::model::file::rewrite_metadata;
use bottleneck::progress::Silent;
use bottleneck::score::{Calibration, ThresholdRule};
use bottleneck::task::{AudioDenoiser, AudioDetector, Denoiser, Detector, TableModel};
use bottleneck::{
    AnomalyDetector, AudioDenoiseParams, AudioParams, DenoiseParams, DetectParams, Device, Model,
    Table, TableParams, Transformer, Verdict,
};
use image::{DynamicImage, GrayImage, Luma};
use ndarray::Array2;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// One change to the metadata: where (JSON pointer) and what.
#[derive(Debug, Clone)]
struct Mutation {
    pointer: String,
    value: Option<Value>,
}

fn number_variants(n: &serde_json::Number) -> Vec<Value> {
    let mut out = vec![
        json!(0),
        json!(-1),
        json!(1),
        json!(0.5),
        json!(1e30),
        json!(-1e30),
        json!(1_000_000_000u64),
        json!(1u64 << 40),
        json!(u64::MAX),
        json!("7"),
        Value::Null,
    ];
    if let Some(f) = n.as_f64() {
        out.extend([json!(f * 2.0), json!(f + 1.0), json!(-f), json!(f * 1e-6)]);
    }
    out
}

/// Every mutation of `value` at `pointer` and below it (arrays longer than four elements
/// are entered at their first and last element only).
fn mutations(value: &Value, pointer: &str, out: &mut Vec<Mutation>) {
    let at = |v: Value| Mutation {
        pointer: pointer.to_string(),
        value: Some(v),
    };
    match value {
        Value::Number(n) => out.extend(number_variants(n).into_iter().map(at)),
        Value::String(_) => out.extend([json!(""), json!("zzz"), json!(3)].map(at)),
        Value::Bool(b) => out.extend([json!(!b), json!(1)].map(at)),
        Value::Null => out.extend([json!(0), json!(1e30), json!([])].map(at)),
        Value::Array(items) => {
            let mut shortened = items.clone();
            shortened.pop();
            let mut longer = items.clone();
            if let Some(first) = items.first() {
                longer.push(first.clone());
            }
            let mut reversed = items.clone();
            reversed.reverse();
            let mut first_huge = items.clone();
            if let Some(v) = first_huge.first_mut() {
                *v = json!(1e30);
            }
            out.extend(
                [
                    json!([]),
                    Value::Array(shortened),
                    Value::Array(longer),
                    Value::Array(reversed),
                    Value::Array(first_huge),
                    json!(3),
                ]
                .map(at),
            );
            let n = items.len();
            let entered: Vec<usize> = if n > 4 {
                vec![0, n - 1]
            } else {
                (0..n).collect()
            };
            for i in entered {
                mutations(&items[i], &format!("{pointer}/{i}"), out);
            }
        }
        Value::Object(fields) => {
            if !pointer.is_empty() {
                out.extend([Value::Null, json!({})].map(at));
            }
            for (k, v) in fields {
                let child = format!("{pointer}/{k}");
                out.push(Mutation {
                    pointer: child.clone(),
                    value: None,
                });
                mutations(v, &child, out);
            }
        }
    }
}

fn apply(meta: &mut Value, m: &Mutation) {
    match &m.value {
        Some(v) => {
            if let Some(slot) = meta.pointer_mut(&m.pointer) {
                *slot = v.clone();
            }
        }
        None => {
            let (parent, key) = m.pointer.rsplit_once('/').expect("a field");
            if let Some(Value::Object(map)) = meta.pointer_mut(parent) {
                map.remove(key);
            }
        }
    }
}

fn metadata_of(bytes: &[u8]) -> Value {
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
    let json = &header.metadata().as_ref().unwrap()["bottleneck"];
    serde_json::from_str(json).unwrap()
}

/// Verdicts a loaded model gives must be sane: p-values in (0, 1], flags that follow the
/// threshold.
fn check_verdicts(verdicts: &[Verdict], cal: &Calibration) -> Result<(), String> {
    let threshold = cal.threshold;
    for v in verdicts {
        if !(v.p_value > 0.0 && v.p_value <= 1.0) {
            return Err(format!("p-value {} outside (0, 1]", v.p_value));
        }
        // An ensemble flags by its cross-conformal p-value, one network by its score.
        let n = cal.scores.len() as f64;
        let at_or_above = (v.p_value * (n + 1.0)).round() - 1.0;
        let flagged = match (cal.folds.is_empty(), cal.rule) {
            (false, ThresholdRule::Conformal { .. }) => v.p_value <= cal.effective_fpr + 1e-12,
            (false, ThresholdRule::Contamination { contamination }) => {
                at_or_above <= n - ((1.0 - contamination) * n).ceil().clamp(1.0, n)
            }
            (true, _) => v.score > threshold || v.score.is_nan(),
        };
        if v.is_anomaly != flagged {
            return Err(format!(
                "flag {} for score {} against {threshold}",
                v.is_anomaly, v.score
            ));
        }
    }
    Ok(())
}

/// Runs a loaded model on small inputs of its kind.
struct Inputs {
    images: Vec<DynamicImage>,
    table: Table<'static>,
    clips: Vec<Audio>,
}

/// `Err` for a result that is not sane; a typed error from the library (a column the
/// edited model names but the table lacks) is a clear refusal, so `Ok`.
fn exercise(model: &Model, inputs: &Inputs) -> Result<(), String> {
    match run(model, inputs) {
        Ok(Ok(())) | Err(_) => Ok(()),
        Ok(Err(insane)) => Err(insane),
    }
}

fn run(model: &Model, inputs: &Inputs) -> bottleneck::Result<Result<(), String>> {
    Ok(match model {
        Model::ImageDetector(d) => {
            let v = d.score(&inputs.images)?;
            check_verdicts(&v, d.calibration())
        }
        Model::TableDetector(t) => {
            let v = t.score(&inputs.table)?;
            let filled = t.transform(&inputs.table)?;
            check_verdicts(&v, t.calibration()).and_then(|()| {
                (filled.nrows() == inputs.table.len())
                    .then_some(())
                    .ok_or_else(|| "imputed a different number of rows".to_string())
            })
        }
        Model::AudioDetector(a) => {
            let v = a.score(&inputs.clips)?;
            check_verdicts(&v, a.calibration())
        }
        Model::ImageDenoiser(d) => {
            let out = d.transform(&inputs.images[..1])?;
            (out[0].width() == inputs.images[0].width())
                .then_some(())
                .ok_or_else(|| "denoised image changed size".to_string())
        }
        Model::AudioDenoiser(d) => {
            let out = d.transform(&inputs.clips[..1])?;
            (out[0].samples.len() == inputs.clips[0].samples.len())
                .then_some(())
                .ok_or_else(|| "denoised recording changed length".to_string())
        }
    })
}

/// Tries a bounded draw of every mutation of the model file `bytes`; returns the
/// failures (panics, unclear errors, insane results) and counts of errors and loads.
fn hammer(name: &str, bytes: &[u8], inputs: &Inputs, limit: usize) -> (Vec<String>, usize, usize) {
    let original = metadata_of(bytes);
    let mut all = Vec::new();
    mutations(&original, "", &mut all);
    all.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    all.truncate(limit);
    let device = Device::flex();
    let label = Path::new("mutated.safetensors");
    let (mut failures, mut refused, mut loaded) = (Vec::new(), 0, 0);
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    for m in &all {
        let edited = rewrite_metadata(bytes, |meta| apply(meta, m)).unwrap();
        let started = Instant::now();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            match Model::from_bytes(label, edited, &device) {
                Err(e) => {
                    let text = e.to_string();
                    if text.contains("mutated.safetensors") {
                        Ok(false)
                    } else {
                        Err(format!("error without the file's name: {text}"))
                    }
                }
                Ok(model) => exercise(&model, inputs).map(|()| true),
            }
        }));
        let slow = started.elapsed() > Duration::from_secs(20);
        match outcome {
            Ok(Ok(true)) if !slow => loaded += 1,
            Ok(Ok(false)) if !slow => refused += 1,
            Ok(Ok(_)) => failures.push(format!("{name} {m:?}: took {:?}", started.elapsed())),
            Ok(Err(why)) => failures.push(format!("{name} {m:?}: {why}")),
            Err(_) => failures.push(format!("{name} {m:?}: panicked")),
        }
    }
    std::panic::set_hook(hook);
    (failures, refused, loaded)
}

fn part(phase: u32, defect: bool) -> DynamicImage {
    DynamicImage::ImageLuma8(GrayImage::from_fn(16, 16, |x, y| {
        let v = 128.0 + 80.0 * ((x + phase) as f32 * 0.6).sin();
        let spot = defect && (6..10).contains(&x) && (6..10).contains(&y);
        Luma([if spot { 255 } else { v as u8 }])
    }))
}

fn tone(rate: u32, seconds: f32, freq: f32, seed: u64) -> Audio {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = (rate as f32 * seconds) as usize;
    let samples = (0..n)
        .map(|i| {
            0.3 * (i as f32 * freq * std::f32::consts::TAU / rate as f32).sin()
                + 0.01 * rng.random_range(-1.0f32..1.0)
        })
        .collect();
    Audio::from_samples(samples, 1, rate).unwrap()
}

fn rows(n: usize, seed: u64) -> Table<'static> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let values = Array2::from_shape_fn((n, 4), |(_, j)| rng.random_range(-1.0f32..1.0) + j as f32);
    let names = ["a", "b", "c", "d"].map(String::from).to_vec();
    Table::new(names, values).unwrap()
}

#[test]
fn every_edited_field_of_every_kind_of_model_file_is_refused_clearly_or_loads_sanely() {
    let limit: usize = std::env::var("BOTTLENECK_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(usize::MAX);
    let device = Device::flex();
    let dir = std::env::temp_dir().join(format!("bn-model-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good: Vec<DynamicImage> = (0..24).map(|i| part(i % 7, false)).collect();
    let clips: Vec<Audio> = (0..8)
        .map(|i| tone(8000, 1.0, 440.0 + i as f32, i))
        .collect();
    let inputs = Inputs {
        images: vec![part(3, false), part(3, true)],
        table: rows(20, 9),
        clips: vec![tone(8000, 1.0, 450.0, 99)],
    };
    let save = |name: &str, save: &dyn Fn(&Path)| {
        let path = dir.join(format!("{name}.safetensors"));
        save(&path);
        std::fs::read(&path).unwrap()
    };
    // 24 images: a cross-conformal ensemble by default; `folds: 1` is one network, here
    // with a discriminative head.
    let image_detector = |folds, head| {
        Detector::fit_images(
            &good,
            &DetectParams {
                epochs: Some(2),
                width: Some(8),
                knn: Some(3),
                folds,
                head,
                ..DetectParams::default()
            },
            &device,
            &Silent,
        )
        .unwrap()
    };
    let (image_ensemble, image_single) = (
        image_detector(None, Head::None),
        image_detector(Some(1), Head::Segment),
    );
    assert_eq!(
        (image_ensemble.networks(), image_single.networks()),
        (bottleneck::task::detect::DEFAULT_IMAGE_FOLDS, 1)
    );
    let denoiser = Denoiser::fit_images(
        &good,
        None,
        &DenoiseParams {
            width: 4,
            levels: 1,
            patch: 16,
            epochs: Some(1),
            ..DenoiseParams::default()
        },
        &device,
        &Silent,
    )
    .unwrap();
    let table = TableModel::fit_table(
        &rows(200, 1),
        &TableParams {
            epochs: Some(3),
            variational: true,
            batch_norm: true,
            ..TableParams::default()
        },
        &device,
        &Silent,
    )
    .unwrap();
    let audio_detector = AudioDetector::fit_clips(
        &clips,
        &AudioParams {
            n_fft: 256,
            hop: 128,
            n_mels: 16,
            hidden: vec![16],
            latent: 4,
            epochs: Some(2),
            calibration_fraction: 0.25,
            ..AudioParams::default()
        },
        &device,
        &Silent,
    )
    .unwrap();
    let audio_denoiser = AudioDenoiser::fit_clips(
        &clips,
        &AudioDenoiseParams {
            noise: "white:0.03".parse().unwrap(),
            n_fft: 128,
            hop: 32,
            hidden: vec![16],
            latent: 8,
            epochs: Some(2),
            batch_size: 4,
            ..AudioDenoiseParams::default()
        },
        &device,
        &Silent,
    )
    .unwrap();
    let files = [
        (
            "image detector (ensemble)",
            save("image", &|p| image_ensemble.save(p).unwrap()),
        ),
        (
            "image detector (one network, head)",
            save("image-single", &|p| image_single.save(p).unwrap()),
        ),
        (
            "image denoiser",
            save("denoiser", &|p| denoiser.save(p).unwrap()),
        ),
        ("table model", save("table", &|p| table.save(p).unwrap())),
        (
            "audio detector",
            save("audio", &|p| audio_detector.save(p).unwrap()),
        ),
        (
            "audio denoiser",
            save("audio-denoiser", &|p| audio_denoiser.save(p).unwrap()),
        ),
    ];
    let mut failures = Vec::new();
    for (name, bytes) in &files {
        // Unchanged, each loads and runs.
        let model = Model::from_bytes(Path::new(name), bytes.clone(), &device).unwrap();
        exercise(&model, &inputs).unwrap();
        let (f, refused, loaded) = hammer(name, bytes, &inputs, limit);
        eprintln!(
            "{name}: {refused} refused, {loaded} loaded, {} failed",
            f.len()
        );
        assert!(
            refused > 0 && loaded > 0,
            "{name}: the draw tested one side only"
        );
        failures.extend(f);
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
