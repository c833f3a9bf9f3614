//! End-to-end tests of audio: the real binary on generated machine sounds and tones.

use std::path::Path;

use bottleneck::data::audio::Audio;
use bottleneck::data::machines::{MachineConfig, generate_machine_sounds};
use bottleneck::task::audio_denoise::snr_db;

mod common;
use common::{read_csv, run, run_ok, scratch, text};

fn mono16(rate: u32) -> hound::WavSpec {
    hound::WavSpec {
        channels: 1,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    }
}

#[test]
fn machine_sounds_train_score_with_maps_eval_and_report_unusable_files() {
    let dir = scratch("machines");
    let root = dir.join("m");
    let cfg = MachineConfig {
        seconds: 1.0,
        train: 40,
        test_good: 8,
        test_per_fault: 4,
        ..MachineConfig::default()
    };
    generate_machine_sounds(&root, &cfg).unwrap();
    let model = dir.join("machine.safetensors");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let small = [
        "--n-mels", "32", "--hidden", "32,32", "--latent", "4", "--epochs", "15",
    ];
    let mut args = vec![
        "train".to_string(),
        s(&root),
        "-o".into(),
        s(&model),
        "-q".into(),
    ];
    args.extend(small.iter().map(|a| a.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run_ok(&args);

    // The same sound as a stereo float file scores as the original, and at 44.1 kHz it is
    // read at the model's rate; a silent recording and a too-short one are listed with the
    // reason instead of a score.
    let test = root.join("test");
    let good = Audio::read(&test.join("good/0000.wav")).unwrap();
    let stereo = Audio {
        spec: hound::WavSpec {
            channels: 2,
            sample_rate: 16_000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        },
        samples: good.samples.iter().flat_map(|&v| [v, v]).collect(),
    };
    let extra = dir.join("extra");
    stereo.write(&extra.join("stereo.wav")).unwrap();
    stereo
        .resampled(44_100)
        .unwrap()
        .write(&extra.join("stereo44k.wav"))
        .unwrap();
    Audio {
        spec: mono16(16_000),
        samples: vec![0.0; 16_000],
    }
    .write(&extra.join("silent.wav"))
    .unwrap();
    Audio {
        spec: mono16(16_000),
        samples: vec![0.2; 300],
    }
    .write(&extra.join("short.wav"))
    .unwrap();
    std::fs::copy(test.join("good/0000.wav"), extra.join("original.wav")).unwrap();
    let csv = dir.join("scores.csv");
    let maps = dir.join("maps");
    let o = run(&[
        "score",
        &s(&model),
        &s(&extra),
        "-o",
        &s(&csv),
        "--maps",
        &s(&maps),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("2 not scored"), "{}", text(&o));
    let rows = read_csv(&csv);
    assert_eq!(rows[0], ["path", "score", "p_value", "is_anomaly", "note"]);
    let row = |name: &str| rows.iter().find(|r| r[0] == name).unwrap().clone();
    assert!(row("silent.wav")[4].starts_with("silent"), "{rows:?}");
    assert!(row("short.wav")[4].starts_with("too short"), "{rows:?}");
    assert_eq!(row("silent.wav")[1], "");
    let (a, b): (f64, f64) = (
        row("original.wav")[1].parse().unwrap(),
        row("stereo.wav")[1].parse().unwrap(),
    );
    assert!((a - b).abs() < 1e-3 * a, "{a} vs {b}");
    assert!(row("stereo44k.wav")[1].parse::<f64>().unwrap().is_finite());
    let png = image::open(maps.join("original_map.png")).unwrap();
    // 32 bands drawn 4 pixels tall; 32 frames drawn 16 pixels wide... at most 8.
    assert_eq!(png.height(), 32 * 4);
    assert!(maps.join("original_map.npy").is_file());
    assert!(!maps.join("silent_map.png").exists());

    // eval ranks faults above normal recordings.
    let o = run(&["eval", &s(&model), &s(&root), "-q"]);
    assert!(o.status.success(), "{}", text(&o));
    let eval: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(eval["auroc"].as_f64().unwrap() > 0.8, "{eval}");
    assert!(eval["pauc"].as_f64().is_some(), "{eval}");
    assert_eq!(eval["per_fault"].as_array().unwrap().len(), 3);

    // A truncated file is named and stops scoring, or is skipped on request.
    let bytes = std::fs::read(extra.join("original.wav")).unwrap();
    std::fs::write(extra.join("cut.wav"), &bytes[..40]).unwrap();
    let o = run(&["score", &s(&model), &s(&extra), "-o", &s(&csv)]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cut.wav"),
        "{}",
        text(&o)
    );
    let o = run(&[
        "score",
        &s(&model),
        &s(&extra),
        "-o",
        &s(&csv),
        "--skip-bad",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(read_csv(&csv).len(), 1 + 5);

    // Audio models refuse what they cannot do, by name.
    let o = run(&[
        "encode",
        &s(&model),
        &s(&extra),
        "-o",
        &s(&dir.join("c.csv")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = run(&[
        "train",
        &s(&root),
        "-o",
        &s(&dir.join("x.safetensors")),
        "--vae",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("--vae"),
        "{}",
        text(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A speech-like test signal: harmonics of a wandering pitch, switched on and off.
fn voice(rate: u32, seconds: f32, seed: u32) -> Vec<f32> {
    let n = (rate as f32 * seconds) as usize;
    let mut phase = 0f32;
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let f0 = 140.0 + 30.0 * (t * (1.3 + seed as f32 * 0.2)).sin();
            phase += 2.0 * std::f32::consts::PI * f0 / rate as f32;
            let on = ((t * 3.0 + seed as f32 * 0.1).sin() > -0.3) as u8 as f32;
            on * (1..6)
                .map(|h| (phase * h as f32).sin() / h as f32)
                .sum::<f32>()
                * 0.2
        })
        .collect()
}

#[test]
fn audio_denoiser_trains_on_mixed_noise_and_keeps_each_file_format() {
    let dir = scratch("audio-denoise");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    for k in 0..8 {
        Audio {
            spec: mono16(8000),
            samples: voice(8000, 2.0, k),
        }
        .write(&dir.join(format!("clean/{k}.wav")))
        .unwrap();
    }
    // Noise recordings: hiss at two levels.
    let mut x = 12345u32;
    let mut hiss = |n: usize, level: f32| -> Vec<f32> {
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                level * (x as f32 / u32::MAX as f32 - 0.5)
            })
            .collect()
    };
    for (k, level) in [0.1f32, 0.3].iter().enumerate() {
        Audio {
            spec: mono16(8000),
            samples: hiss(24_000, *level),
        }
        .write(&dir.join(format!("noise/{k}.wav")))
        .unwrap();
    }
    let model = dir.join("speech.safetensors");
    let noise = format!("mix:{}", s(&dir.join("noise")));
    let o = run(&[
        "train",
        &s(&dir.join("clean")),
        "--task",
        "denoise",
        "--noise",
        &noise,
        "-o",
        &s(&model),
        "--n-fft",
        "256",
        "--hop",
        "64",
        "--hidden",
        "128",
        "--latent",
        "64",
        "--epochs",
        "40",
        "--batch-size",
        "4",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("held-out SNR"), "{}", text(&o));

    // 24-bit stereo at 11025 Hz, and 8-bit mono: each comes back in its own format and
    // length, cleaner than it went in.
    let clean = voice(11_025, 1.5, 11);
    let noise = hiss(clean.len() * 2, 0.5);
    let reference: Vec<f32> = clean.iter().flat_map(|&v| [v, 0.5 * v]).collect();
    let noisy = Audio {
        spec: hound::WavSpec {
            channels: 2,
            sample_rate: 11_025,
            bits_per_sample: 24,
            sample_format: hound::SampleFormat::Int,
        },
        samples: reference.iter().zip(&noise).map(|(a, b)| a + b).collect(),
    };
    noisy.write(&dir.join("noisy/a.wav")).unwrap();
    let ref8: Vec<f32> = voice(8000, 1.0, 12);
    let noisy8 = Audio {
        spec: hound::WavSpec {
            channels: 1,
            sample_rate: 8000,
            bits_per_sample: 8,
            sample_format: hound::SampleFormat::Int,
        },
        samples: ref8
            .iter()
            .zip(hiss(8000, 0.5))
            .map(|(a, b)| a + b)
            .collect(),
    };
    noisy8.write(&dir.join("noisy/b.wav")).unwrap();
    let noisy8 = Audio::read(&dir.join("noisy/b.wav")).unwrap();
    let out = dir.join("out");
    let o = run(&[
        "denoise",
        &s(&model),
        &s(&dir.join("noisy")),
        "-o",
        &s(&out),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    for (name, input, reference) in [("a.wav", &noisy, &reference), ("b.wav", &noisy8, &ref8)] {
        let got = Audio::read(&out.join(name)).unwrap();
        assert_eq!(got.spec, input.spec, "{name}");
        assert_eq!(got.samples.len(), input.samples.len(), "{name}");
        let (before, after) = (
            snr_db(reference, &input.samples),
            snr_db(reference, &got.samples),
        );
        assert!(after > before + 2.0, "{name}: {before:.2} -> {after:.2} dB");
    }

    // One file to a named output; the input is never overwritten; a truncated file is named.
    run_ok(&[
        "denoise",
        &s(&model),
        &s(&dir.join("noisy/b.wav")),
        "-o",
        &s(&dir.join("one.wav")),
    ]);
    assert!(dir.join("one.wav").is_file());
    let o = run(&[
        "denoise",
        &s(&model),
        &s(&dir.join("noisy")),
        "-o",
        &s(&dir.join("noisy")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let bytes = std::fs::read(dir.join("noisy/b.wav")).unwrap();
    std::fs::write(dir.join("noisy/c.wav"), &bytes[..30]).unwrap();
    let o = run(&[
        "denoise",
        &s(&model),
        &s(&dir.join("noisy")),
        "-o",
        &s(&out),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("c.wav"),
        "{}",
        text(&o)
    );
    // Unknown noise is refused before any work.
    let o = run(&[
        "train",
        &s(&dir.join("clean")),
        "--task",
        "denoise",
        "--noise",
        "pink:0.1",
        "-o",
        &s(&dir.join("x.safetensors")),
    ]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("pink:0.1"),
        "{}",
        text(&o)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
