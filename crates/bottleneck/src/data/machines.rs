//! Synthetic machine sounds for tests, the demo and benchmarks: a motor's hum (a fundamental
//! with decaying harmonics, load changing its pitch and level from clip to clip, a noise
//! floor) and three faults: bearing clicks (short high resonances), imbalance (a strong
//! wobble at the rotation rate) and pitch drift (the speed sliding during the clip).
//! Synthetic, seeded; never the only evidence of quality.

use std::f64::consts::TAU;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::data::audio::Audio;
use crate::error::Result;

/// Fault kinds, the folder names of anomalous test clips.
pub const FAULTS: [&str; 3] = ["bearing_clicks", "imbalance", "pitch_drift"];

/// What [`generate_machine_sounds`] writes.
#[derive(Debug, Clone)]
pub struct MachineConfig {
    pub sample_rate: u32,
    pub seconds: f32,
    /// Normal clips under `train/good`.
    pub train: usize,
    /// Normal clips under `test/good`.
    pub test_good: usize,
    /// Clips per fault under `test/<fault>`.
    pub test_per_fault: usize,
    /// Strength of the faults: 1 is plainly audible; 0.2 is subtle, within the normal
    /// clips' own variation for some measures.
    pub severity: f32,
    pub seed: u64,
}

impl Default for MachineConfig {
    fn default() -> Self {
        Self {
            sample_rate: 16_000,
            seconds: 2.0,
            train: 200,
            test_good: 50,
            test_per_fault: 25,
            severity: 1.0,
            seed: 7,
        }
    }
}

/// One clip of `seconds` at `sample_rate`, normal or with fault `fault` (an index into
/// [`FAULTS`]) at `severity` (1: plainly audible); samples within [-1, 1].
pub fn machine_clip(
    rng: &mut ChaCha8Rng,
    sample_rate: u32,
    seconds: f32,
    fault: Option<usize>,
    severity: f32,
) -> Vec<f32> {
    let severity = severity as f64;
    let sr = sample_rate as f64;
    let n = (seconds as f64 * sr).round() as usize;
    // Load sets the speed (a few percent) and the level, clip by clip.
    let load: f64 = rng.random_range(0.0..1.0);
    let f0 = 100.0 * (1.0 - 0.04 * load);
    let level = 0.25 + 0.1 * load;
    let harmonics: Vec<f64> = (1..=8)
        .map(|k| rng.random_range(0.8..1.2) / (k as f64).powf(1.2))
        .collect();
    let phases: Vec<f64> = (0..8).map(|_| rng.random_range(0.0..TAU)).collect();
    let wobble_rate: f64 = rng.random_range(0.3..1.0);
    let noise = Normal::new(0.0, 0.01).expect("valid spread");
    let drift = match fault {
        Some(2) => rng.random_range(0.08..0.15) * severity,
        _ => 0.0,
    };
    let imbalance = matches!(fault, Some(1));
    // Bearing clicks: a resonance near 4 kHz struck about every 23 ms, with jitter.
    let mut clicks = Vec::new();
    if matches!(fault, Some(0)) {
        let mut t = rng.random_range(0.0..0.02);
        while t < seconds as f64 {
            clicks.push((t, rng.random_range(3500.0..4500.0)));
            t += rng.random_range(0.018..0.028);
        }
    }
    let mut phase = 0.0f64;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = i as f64 / sr;
        // Instantaneous fundamental: constant, or sliding by `drift` over the clip.
        let f = f0 * (1.0 + drift * t / seconds as f64);
        phase += TAU * f / sr;
        let mut x: f64 = harmonics
            .iter()
            .zip(&phases)
            .enumerate()
            .map(|(k, (a, p))| a * ((k + 1) as f64 * phase + p).sin())
            .sum();
        x *= level * (1.0 + 0.1 * (TAU * wobble_rate * t).sin());
        if imbalance {
            // Once-per-revolution wobble (a 4-pole motor at f0 / 4), deep.
            x *= 1.0 + 0.6 * severity * (TAU * f0 / 4.0 * t).sin();
        }
        for &(c, freq) in &clicks {
            let dt = t - c;
            if (0.0..0.01).contains(&dt) {
                x += 0.25 * severity * (-dt / 0.0015).exp() * (TAU * freq * dt).sin();
            }
        }
        x += noise.sample(rng);
        out.push(x.clamp(-1.0, 1.0) as f32);
    }
    out
}

/// Writes normal clips under `root/train/good` and `root/test/good` and faulty ones under
/// `root/test/<fault>` as 16-bit mono WAV (the MVTec layout, so the same tools read it).
/// Returns the number of files written.
pub fn generate_machine_sounds(root: &Path, cfg: &MachineConfig) -> Result<usize> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: cfg.sample_rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut jobs: Vec<(std::path::PathBuf, Option<usize>)> = Vec::new();
    for i in 0..cfg.train {
        jobs.push((root.join("train/good").join(format!("{i:04}.wav")), None));
    }
    for i in 0..cfg.test_good {
        jobs.push((root.join("test/good").join(format!("{i:04}.wav")), None));
    }
    for (f, name) in FAULTS.iter().enumerate() {
        for i in 0..cfg.test_per_fault {
            jobs.push((
                root.join("test").join(name).join(format!("{i:04}.wav")),
                Some(f),
            ));
        }
    }
    for (path, fault) in &jobs {
        let samples = machine_clip(&mut rng, cfg.sample_rate, cfg.seconds, *fault, cfg.severity);
        Audio { spec, samples }.write(path)?;
    }
    Ok(jobs.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::spectral::Stft;

    fn clip(seed: u64, fault: Option<usize>) -> Vec<f32> {
        machine_clip(
            &mut ChaCha8Rng::seed_from_u64(seed),
            16_000,
            1.0,
            fault,
            1.0,
        )
    }

    /// Energy above 3 kHz over all energy.
    fn high_share(x: &[f32]) -> f64 {
        let stft = Stft::new(1024, 512);
        let spec = stft.forward(x);
        let bins = 513;
        let (mut high, mut all) = (0.0f64, 0.0f64);
        for frame in spec.chunks(bins) {
            for (k, c) in frame.iter().enumerate() {
                let p = c.norm_sqr() as f64;
                all += p;
                if k as f64 * 16_000.0 / 1024.0 > 3000.0 {
                    high += p;
                }
            }
        }
        high / all
    }

    /// The strongest frequency between 80 and 130 Hz (0.5 Hz steps) of the first and of
    /// the last quarter second.
    fn fundamental_ends(x: &[f32]) -> (f64, f64) {
        let quarter = 4000;
        let peak = |seg: &[f32]| {
            let power = |f: f64| {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for (n, &v) in seg.iter().enumerate() {
                    let a = TAU * f * n as f64 / 16_000.0;
                    re += v as f64 * a.cos();
                    im -= v as f64 * a.sin();
                }
                re * re + im * im
            };
            (160..=260)
                .map(|k| k as f64 / 2.0)
                .max_by(|&a, &b| power(a).total_cmp(&power(b)))
                .unwrap()
        };
        (peak(&x[..quarter]), peak(&x[x.len() - quarter..]))
    }

    #[test]
    fn clips_are_seeded_bounded_and_faults_show_where_they_should() {
        assert_eq!(clip(1, None), clip(1, None));
        assert_ne!(clip(1, None), clip(2, None));
        for fault in [None, Some(0), Some(1), Some(2)] {
            let x = clip(3, fault);
            assert_eq!(x.len(), 16_000);
            assert!(x.iter().all(|v| v.abs() <= 1.0));
        }
        // Clicks: energy where a motor's hum has next to none.
        let (normal, clicks) = (clip(4, None), clip(4, Some(0)));
        assert!(high_share(&clicks) > 10.0 * high_share(&normal));
        // Imbalance: the level swings far more within the clip.
        let swing = |x: &[f32]| {
            let rms: Vec<f64> = x
                .chunks(160)
                .map(|c| (c.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / 160.0).sqrt())
                .collect();
            let mean = rms.iter().sum::<f64>() / rms.len() as f64;
            (rms.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / rms.len() as f64).sqrt() / mean
        };
        assert!(swing(&clip(5, Some(1))) > 2.0 * swing(&clip(5, None)));
        // Pitch drift: the fundamental rises by several percent; a normal clip holds it.
        let (a, b) = fundamental_ends(&clip(6, Some(2)));
        assert!(b > a * 1.04, "{a} Hz -> {b} Hz");
        let (a, b) = fundamental_ends(&clip(6, None));
        assert!((b - a).abs() <= 4.0, "{a} Hz -> {b} Hz");
    }

    #[test]
    fn the_layout_is_mvtec_like() {
        let root = std::env::temp_dir().join(format!("bn-machines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let cfg = MachineConfig {
            seconds: 0.25,
            train: 3,
            test_good: 2,
            test_per_fault: 1,
            ..MachineConfig::default()
        };
        assert_eq!(generate_machine_sounds(&root, &cfg).unwrap(), 8);
        let a = Audio::read(&root.join("test/pitch_drift/0000.wav")).unwrap();
        assert_eq!(
            (a.sample_rate(), a.channels(), a.frames()),
            (16_000, 1, 4000)
        );
        assert!(root.join("train/good/0002.wav").is_file());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
