//! WAV files in and out (hound): 8/16/24/32-bit integer and 32-bit float, any channel count
//! and sample rate. Samples are held as `f32` in [-1, 1], interleaved, with the file's own
//! format kept so that an output can be written the way its input was.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A decoded recording.
#[derive(Debug, Clone, PartialEq)]
pub struct Audio {
    /// The file's format (rate, channels, bit depth, integer or float).
    pub spec: hound::WavSpec,
    /// Interleaved samples scaled to [-1, 1].
    pub samples: Vec<f32>,
}

/// Files that can be read as audio (by extension).
pub fn is_audio_file(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("wav") || e.eq_ignore_ascii_case("wave"))
}

/// Whether `path` holds audio to train on: a WAV file, or a folder (or an MVTec-layout
/// root's `train/good`) with WAV files and no images.
pub fn is_audio_data(path: &Path) -> bool {
    if path.is_file() {
        return is_audio_file(path);
    }
    let folder = crate::data::images::training_folder(path);
    find_audio(&folder).is_ok() && crate::data::images::find_images(&folder).is_err()
}

/// Every WAV file under `dir` (recursively), sorted; `dir` itself when it is one file.
/// Fails when there is none.
pub fn find_audio(dir: &Path) -> Result<Vec<PathBuf>> {
    if !dir.exists() {
        return Err(Error::Missing {
            path: dir.to_path_buf(),
        });
    }
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(|e| Error::io(&d, e))? {
            let path = entry.map_err(|e| Error::io(&d, e))?.path();
            if path.is_dir() {
                stack.push(path);
            } else if is_audio_file(&path) {
                out.push(path);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::Invalid(format!(
            "{}: no audio found (looked for .wav)",
            dir.display()
        )));
    }
    out.sort();
    Ok(out)
}

/// Recordings whose every sample is within this of zero (2 steps of 16-bit audio, -84 dBFS)
/// are silent: there is nothing to judge or to clean in them.
pub const SILENCE_LEVEL: f32 = 2.0 / 32768.0;

/// The most common sample rate among the WAV files at `paths` (the lowest among equals),
/// from their headers. Unreadable files fail (named) unless `skip_bad`.
pub fn most_common_rate(paths: &[PathBuf], skip_bad: bool) -> Result<u32> {
    let mut rates = Vec::with_capacity(paths.len());
    for p in paths {
        match Audio::read_spec(p) {
            Ok(spec) => rates.push(spec.sample_rate),
            Err(_) if skip_bad => {}
            Err(e) => return Err(e),
        }
    }
    most_common(rates).ok_or_else(|| Error::Invalid("no readable recording".into()))
}

/// The sample rate most of `recordings` have (the lower one on a tie), as
/// [`most_common_rate`] picks it for files; `None` when there are none.
pub fn most_common_rate_of(recordings: &[Audio]) -> Option<u32> {
    most_common(recordings.iter().map(|a| a.spec.sample_rate))
}

/// The value `rates` holds most often, the lower one on a tie.
fn most_common(rates: impl IntoIterator<Item = u32>) -> Option<u32> {
    let mut counts: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    for rate in rates {
        *counts.entry(rate).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(rate, n)| (n, std::cmp::Reverse(rate)))
        .map(|(rate, _)| rate)
}

/// Sample rates a recording may have, in Hz: everything audio and vibration hardware
/// records at, bounded so that a damaged header cannot size a resampler (a rate of 2^31 Hz
/// took 8.6 GB).
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 1..=768_000;

/// Fails, naming the `sample_rate` param, on a rate outside [`SAMPLE_RATES`].
pub fn check_sample_rate(rate: u32) -> Result<()> {
    if SAMPLE_RATES.contains(&rate) {
        return Ok(());
    }
    Err(Error::param(
        "sample_rate",
        format!(
            "{rate} Hz is outside {} to {} Hz",
            SAMPLE_RATES.start(),
            SAMPLE_RATES.end()
        ),
    ))
}

/// What in a WAV header's format cannot be read.
fn check_spec(spec: &hound::WavSpec) -> std::result::Result<(), String> {
    if spec.channels == 0 {
        return Err("no channels".into());
    }
    if !SAMPLE_RATES.contains(&spec.sample_rate) {
        return Err(format!(
            "a sample rate of {} Hz (readable: {} to {} Hz)",
            spec.sample_rate,
            SAMPLE_RATES.start(),
            SAMPLE_RATES.end()
        ));
    }
    Ok(())
}

fn bad(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Invalid(format!("{}: not a readable WAV file: {e}", path.display()))
}

impl Audio {
    /// Reads the WAV file at `path`. Fails naming the file when it is missing, not a WAV
    /// file, in a sample format WAV readers do not know, or truncated.
    pub fn read(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let file_bytes = file.metadata().map_err(|e| Error::io(path, e))?.len();
        Self::read_from(std::io::BufReader::new(file), file_bytes, path)
    }

    /// Reads a WAV file held in memory (an upload), named `name` in errors, with the same
    /// checks as [`Audio::read`].
    pub fn from_wav_bytes(bytes: &[u8], name: &Path) -> Result<Self> {
        Self::read_from(std::io::Cursor::new(bytes), bytes.len() as u64, name)
    }

    /// Reads WAV data of `total` bytes from `source`, named `path` in errors.
    fn read_from(source: impl std::io::Read, total: u64, path: &Path) -> Result<Self> {
        let file_bytes = total;
        let reader = hound::WavReader::new(source).map_err(|e| bad(path, e))?;
        let spec = reader.spec();
        check_spec(&spec).map_err(|e| bad(path, e))?;
        // Sized from the header only once the file is known to hold that much: a header
        // that claims more samples than the file has bytes is refused before allocating.
        let claimed = reader.len() as u64;
        let stored = claimed * u64::from(spec.bits_per_sample.div_ceil(8));
        if stored > file_bytes {
            return Err(bad(
                path,
                format!(
                    "the header claims {claimed} samples ({stored} bytes) but the file has \
                     {file_bytes} bytes (truncated or damaged)"
                ),
            ));
        }
        let mut samples = Vec::with_capacity(claimed as usize);
        match spec.sample_format {
            hound::SampleFormat::Float => {
                for s in reader.into_samples::<f32>() {
                    samples.push(s.map_err(|e| bad(path, e))?);
                }
            }
            hound::SampleFormat::Int => {
                let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f64;
                for s in reader.into_samples::<i32>() {
                    samples.push((s.map_err(|e| bad(path, e))? as f64 * scale) as f32);
                }
            }
        }
        if samples.len() % spec.channels as usize != 0 {
            return Err(bad(path, "the data ends inside a frame (truncated?)"));
        }
        if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
            return Err(bad(
                path,
                format!(
                    "sample {} of channel {} is {} (float samples must be finite)",
                    i / spec.channels as usize,
                    i % spec.channels as usize,
                    samples[i]
                ),
            ));
        }
        Ok(Self { spec, samples })
    }

    /// A recording from interleaved `samples` (in [-1, 1]) of `channels` channels at
    /// `sample_rate` Hz, as a 32-bit float WAV file would hold them. Fails on no channels, a
    /// rate of 0, a last frame cut short, or a sample that is not finite (named).
    pub fn from_samples(samples: Vec<f32>, channels: u16, sample_rate: u32) -> Result<Self> {
        if channels == 0 || !SAMPLE_RATES.contains(&sample_rate) {
            return Err(Error::Invalid(format!(
                "a recording needs at least one channel and a sample rate of {} to {} Hz \
                 (got {channels} channels at {sample_rate} Hz)",
                SAMPLE_RATES.start(),
                SAMPLE_RATES.end()
            )));
        }
        if !samples.len().is_multiple_of(channels as usize) {
            return Err(Error::Invalid(format!(
                "{} samples do not fill frames of {channels} channels",
                samples.len()
            )));
        }
        if let Some(i) = samples.iter().position(|s| !s.is_finite()) {
            return Err(Error::Invalid(format!(
                "sample {} of channel {} is {} (samples must be finite)",
                i / channels as usize,
                i % channels as usize,
                samples[i]
            )));
        }
        let spec = hound::WavSpec {
            channels,
            sample_rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        Ok(Self { spec, samples })
    }

    /// The format of the WAV file at `path` from its header alone (rate, channels, depth).
    pub fn read_spec(path: &Path) -> Result<hound::WavSpec> {
        let reader = hound::WavReader::open(path).map_err(|e| bad(path, e))?;
        check_spec(&reader.spec()).map_err(|e| bad(path, e))?;
        Ok(reader.spec())
    }

    pub fn sample_rate(&self) -> u32 {
        self.spec.sample_rate
    }

    pub fn channels(&self) -> usize {
        self.spec.channels as usize
    }

    /// Samples per channel.
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels()
    }

    pub fn seconds(&self) -> f64 {
        self.frames() as f64 / self.sample_rate() as f64
    }

    /// The channels averaged into one.
    pub fn mono(&self) -> Vec<f32> {
        let c = self.channels();
        if c == 1 {
            return self.samples.clone();
        }
        self.samples
            .chunks(c)
            .map(|f| f.iter().sum::<f32>() / c as f32)
            .collect()
    }

    /// Channel `k` on its own.
    pub fn channel(&self, k: usize) -> Vec<f32> {
        self.samples
            .iter()
            .skip(k)
            .step_by(self.channels())
            .copied()
            .collect()
    }

    /// The recording at `rate` samples per second (same channels and length in seconds),
    /// through rubato's FFT resampler (band-limited, delay compensated); itself when the rate
    /// already matches.
    pub fn resampled(&self, rate: u32) -> Result<Self> {
        use rubato::audioadapter_buffers::direct::InterleavedSlice;
        use rubato::{Fft, FixedSync, Resampler};
        if !SAMPLE_RATES.contains(&rate) {
            return Err(Error::Invalid(format!(
                "cannot resample to {rate} Hz: rates run from {} to {} Hz",
                SAMPLE_RATES.start(),
                SAMPLE_RATES.end()
            )));
        }
        if rate == self.sample_rate() || self.frames() == 0 {
            let mut same = self.clone();
            same.spec.sample_rate = rate;
            return Ok(same);
        }
        let fail = |e: &dyn std::fmt::Display| {
            Error::Invalid(format!(
                "cannot resample {} Hz to {rate} Hz: {e}",
                self.sample_rate()
            ))
        };
        let mut resampler = Fft::<f32>::new(
            self.sample_rate() as usize,
            rate as usize,
            1024,
            self.channels(),
            FixedSync::Input,
        )
        .map_err(|e| fail(&e))?;
        let input = InterleavedSlice::new(&self.samples, self.channels(), self.frames())
            .map_err(|e| fail(&e))?;
        let out = resampler
            .process_all(&input, self.frames(), None)
            .map_err(|e| fail(&e))?;
        let mut spec = self.spec;
        spec.sample_rate = rate;
        Ok(Self {
            spec,
            samples: out.take_data(),
        })
    }

    /// Whether every sample is within `level` of zero (digital silence at `0.0`).
    pub fn is_silent(&self, level: f32) -> bool {
        self.samples.iter().all(|s| s.abs() <= level)
    }

    /// Writes the recording to `path` in its own format (rate, channels, bit depth),
    /// atomically; samples outside [-1, 1] are clipped when the format is integer.
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::io::write_atomic(path, |tmp| {
            let w = hound::WavWriter::create(tmp, self.spec).map_err(|e| bad(tmp, e))?;
            self.write_samples(w, tmp)
        })
    }

    /// The recording as the bytes of a WAV file in its own format (for an answer).
    pub fn to_wav_bytes(&self) -> Result<Vec<u8>> {
        let mut out = std::io::Cursor::new(Vec::new());
        let label = Path::new("answer.wav");
        let w = hound::WavWriter::new(&mut out, self.spec).map_err(|e| bad(label, e))?;
        self.write_samples(w, label)?;
        Ok(out.into_inner())
    }

    fn write_samples<W: std::io::Write + std::io::Seek>(
        &self,
        mut w: hound::WavWriter<W>,
        label: &Path,
    ) -> Result<()> {
        match self.spec.sample_format {
            hound::SampleFormat::Float => {
                for &s in &self.samples {
                    w.write_sample(s).map_err(|e| bad(label, e))?;
                }
            }
            hound::SampleFormat::Int => {
                let bits = self.spec.bits_per_sample;
                let full = (1i64 << (bits - 1)) as f64;
                for &s in &self.samples {
                    let v = (s as f64 * full).round().clamp(-full, full - 1.0) as i32;
                    w.write_sample(v).map_err(|e| bad(label, e))?;
                }
            }
        }
        w.finalize().map_err(|e| bad(label, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::scratch;

    fn tone(frames: usize, channels: usize) -> Vec<f32> {
        (0..frames * channels)
            .map(|i| {
                let (t, c) = (i / channels, i % channels);
                0.8 * (t as f32 * 0.05 + c as f32).sin()
            })
            .collect()
    }

    #[test]
    fn every_sample_format_round_trips_within_its_resolution() {
        let dir = scratch("audio-formats");
        for (bits, format, channels, tolerance) in [
            (8, hound::SampleFormat::Int, 1, 1.0 / 128.0),
            (16, hound::SampleFormat::Int, 2, 1.0 / 32768.0),
            (24, hound::SampleFormat::Int, 3, 1.0 / 8_388_608.0),
            (32, hound::SampleFormat::Int, 1, 1e-7),
            (32, hound::SampleFormat::Float, 2, 0.0),
        ] {
            let spec = hound::WavSpec {
                channels,
                sample_rate: 22_050,
                bits_per_sample: bits,
                sample_format: format,
            };
            let original = Audio {
                spec,
                samples: tone(500, channels as usize),
            };
            let path = dir.join(format!("t{bits}-{channels}.wav"));
            original.write(&path).unwrap();
            let back = Audio::read(&path).unwrap();
            assert_eq!(back.spec, spec);
            assert_eq!(back.frames(), 500);
            let worst = original
                .samples
                .iter()
                .zip(&back.samples)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst <= tolerance, "{bits}-bit {format:?}: error {worst}");
            // Written again, the file is the same bytes.
            let again = dir.join("again.wav");
            back.write(&again).unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                std::fs::read(&again).unwrap()
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn headers_that_lie_about_rate_or_length_are_refused_before_allocating() {
        let dir = scratch("audio-headers");
        let good = dir.join("good.wav");
        // 8-bit mono PCM: a canonical 44-byte header, and a byte rate of 2^31 stays
        // consistent with a rate of 2^31 Hz.
        let spec = hound::WavSpec {
            channels: 1,
            sample_rate: 16_000,
            bits_per_sample: 8,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(&good, spec).unwrap();
        for v in tone(400, 1) {
            w.write_sample((v * 100.0) as i8).unwrap();
        }
        w.finalize().unwrap();
        let bytes = std::fs::read(&good).unwrap();
        assert_eq!(&bytes[36..40], b"data", "a canonical header");
        // Sample rate at 24, byte rate at 28, data size at 40.
        let with = |fields: &[(usize, u32)]| {
            let mut b = bytes.clone();
            for &(offset, value) in fields {
                b[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
            }
            b
        };
        let cases = [
            (
                "rate.wav",
                with(&[(24, 1 << 31), (28, 1 << 31)]),
                "sample rate of 2147483648 Hz",
            ),
            (
                "length.wav",
                with(&[(40, 0xffff_fff0)]),
                "the header claims",
            ),
        ];
        for (name, data, needle) in cases {
            let path = dir.join(name);
            std::fs::write(&path, data).unwrap();
            let err = Audio::read(&path).unwrap_err().to_string();
            assert!(err.contains(name) && err.contains(needle), "{err}");
        }
        assert!(Audio::read_spec(&dir.join("rate.wav")).is_err());
        let err = Audio::read(&good).unwrap().resampled(1 << 31).unwrap_err();
        assert!(err.to_string().contains("2147483648 Hz"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn channels_mix_down_and_split() {
        let a = Audio {
            spec: hound::WavSpec {
                channels: 2,
                sample_rate: 8000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            },
            samples: vec![0.5, -0.5, 0.25, 0.75],
        };
        assert_eq!(a.mono(), vec![0.0, 0.5]);
        assert_eq!(a.channel(1), vec![-0.5, 0.75]);
        assert_eq!((a.frames(), a.seconds()), (2, 2.0 / 8000.0));
        assert!(!a.is_silent(0.1));
    }

    #[test]
    fn truncated_and_foreign_files_are_named() {
        let dir = scratch("audio-bad");
        let good = dir.join("good.wav");
        Audio {
            spec: hound::WavSpec {
                channels: 1,
                sample_rate: 16_000,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            },
            samples: tone(1000, 1),
        }
        .write(&good)
        .unwrap();
        let bytes = std::fs::read(&good).unwrap();
        let cut = dir.join("cut.wav");
        std::fs::write(&cut, &bytes[..bytes.len() / 2 + 1]).unwrap();
        let e = Audio::read(&cut).unwrap_err().to_string();
        assert!(
            e.contains("cut.wav") && e.contains("not a readable WAV"),
            "{e}"
        );
        let text = dir.join("notes.wav");
        std::fs::write(&text, "hello").unwrap();
        let e = Audio::read(&text).unwrap_err().to_string();
        assert!(e.contains("notes.wav"), "{e}");
        // A float file holding a NaN is refused by name and place.
        let nan = dir.join("nan.wav");
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 8000,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(&nan, spec).unwrap();
        for v in [0.1, 0.2, 0.3, f32::NAN] {
            w.write_sample(v).unwrap();
        }
        w.finalize().unwrap();
        let e = Audio::read(&nan).unwrap_err().to_string();
        assert!(
            e.contains("nan.wav") && e.contains("sample 1 of channel 1 is NaN"),
            "{e}"
        );
        assert_eq!(find_audio(&dir).unwrap().len(), 4);
        assert!(find_audio(&dir.join("none")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn resampling_keeps_a_tone_its_length_and_its_channels() {
        let sr_in = 44_100u32;
        let frames = 44_100;
        let samples: Vec<f32> = (0..frames * 2)
            .map(|i| {
                let (t, c) = (i / 2, i % 2);
                let f = if c == 0 { 440.0 } else { 1000.0 };
                0.5 * (2.0 * std::f32::consts::PI * f * t as f32 / sr_in as f32).sin()
            })
            .collect();
        let a = Audio {
            spec: hound::WavSpec {
                channels: 2,
                sample_rate: sr_in,
                bits_per_sample: 16,
                sample_format: hound::SampleFormat::Int,
            },
            samples,
        };
        let b = a.resampled(16_000).unwrap();
        assert_eq!((b.sample_rate(), b.channels()), (16_000, 2));
        assert!(
            (b.frames() as i64 - 16_000).abs() <= 1,
            "{} frames",
            b.frames()
        );
        // Each channel is still a clean sine of its frequency and level (a sub-sample delay
        // of the filter is allowed): fit sine and cosine away from the ends, then look at
        // what is left.
        for (c, f) in [(0, 440.0f64), (1, 1000.0)] {
            let x = b.channel(c);
            let span = 1000..15_000;
            let w = |t: usize| 2.0 * std::f64::consts::PI * f * t as f64 / 16_000.0;
            let n = span.len() as f64;
            let sa: f64 = span.clone().map(|t| x[t] as f64 * w(t).sin()).sum::<f64>() * 2.0 / n;
            let ca: f64 = span.clone().map(|t| x[t] as f64 * w(t).cos()).sum::<f64>() * 2.0 / n;
            let level = (sa * sa + ca * ca).sqrt();
            assert!((level - 0.5).abs() < 0.005, "channel {c}: level {level}");
            let residual = span
                .map(|t| (x[t] as f64 - sa * w(t).sin() - ca * w(t).cos()).abs())
                .fold(0.0f64, f64::max);
            assert!(residual < 0.002, "channel {c}: residual {residual}");
        }
        assert_eq!(a.resampled(44_100).unwrap(), a);
    }
}
