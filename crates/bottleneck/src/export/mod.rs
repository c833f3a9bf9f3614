//! Export to ONNX: one graph per model that computes what `score`, `encode` and `denoise`
//! compute, from the input the user has, so that the same numbers come out of ONNX Runtime,
//! TensorRT or Triton.
//!
//! | kind | input | outputs |
//! |---|---|---|
//! | image detector | `image` `[batch, channels, size, size]` in [0, 1] | `score`, `p_value`, `is_anomaly`, `map` `[batch, size, size]`, `code` |
//! | table detector | `rows` `[batch, features]` raw, NaN missing | `score`, `p_value`, `is_anomaly`, `errors` `[batch, features]`, `code` |
//! | audio detector | `power` `[frames, n_fft / 2 + 1]`, one recording | `score`, `p_value`, `is_anomaly`, `map` `[frames, n_mels]` |
//! | image denoiser | `image` `[batch, channels, height, width]` in [0, 1] | `denoised` |
//! | audio denoiser | `power` `[frames, n_fft / 2 + 1]`, one channel | `gain` `[frames, n_fft / 2 + 1]` |
//!
//! What stays outside the graph: decoding and resizing images (bilinear to the model's
//! size), decoding, mixing and resampling audio and its short-time Fourier transform (the
//! graph takes `|STFT|^2`; the README gives the exact transform), and, for the audio
//! denoiser, multiplying the spectrum by the gain and the inverse transform. The model's
//! metadata (spec, preprocessing, calibration) travels in `metadata_props` under
//! `bottleneck`; the threshold also under `threshold`.

mod graph;
mod layers;
pub mod proto;
mod scoring;

use std::path::Path;

use prost::Message;

pub use graph::OPSET;
use graph::{Dim, Elem, Graph};
use scoring::{
    calibrate, error_map, join, knn, overlap_average, reduce, smooth, standardize, windows,
};

use crate::data::spectral::{LOG_EPS, mel_filterbank};
use crate::error::{Error, Result};
use crate::score::Calibration;
use crate::task::audio_denoise::POWER_FLOOR;
use crate::task::{AudioDenoiser, AudioDetector, Denoiser, Detector, Model, TableModel};

const BATCH: Dim = Dim::Free("batch");
const FRAMES: Dim = Dim::Free("frames");

/// An exported model: the serialised `ModelProto` and what goes in and comes out.
pub struct Onnx {
    pub bytes: Vec<u8>,
    /// `name [dims]` of each input and output (free dimensions by name).
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
}

/// The ONNX model of `model`.
pub fn to_onnx(model: &Model) -> Result<Onnx> {
    if let Model::ImageDetector(m) = model
        && m.is_tiled()
    {
        // The graph would score one tile; cutting, stitching and the image score live
        // outside it, so an exported file would not give the model's verdicts.
        return Err(Error::Invalid(
            "ONNX export covers whole-image detectors; this model reads images in tiles \
             (cut, stitched and scored by bottleneck itself): score it with bottleneck, or \
             train without tile to export"
                .into(),
        ));
    }
    let (graph, name, doc) = match model {
        Model::ImageDetector(m) => (image_detector(m), "image_detector", IMAGE_DOC),
        Model::TableDetector(m) => (table_detector(m), "table_detector", TABLE_DOC),
        Model::AudioDetector(m) => (audio_detector(m), "audio_detector", AUDIO_DOC),
        Model::ImageDenoiser(m) => (image_denoiser(m), "image_denoiser", DENOISE_DOC),
        Model::AudioDenoiser(m) => (audio_denoiser(m), "audio_denoiser", AUDIO_DENOISE_DOC),
    };
    let mut metadata = vec![
        ("bottleneck".to_string(), model.meta_json().to_string()),
        ("kind".to_string(), name.to_string()),
    ];
    if let Some(cal) = calibration(model) {
        metadata.push(("threshold".into(), cal.threshold.to_string()));
        metadata.push(("effective_fpr".into(), cal.effective_fpr.to_string()));
    }
    let (inputs, outputs) = graph.signature();
    Ok(Onnx {
        bytes: graph.into_model(name, doc, metadata).encode_to_vec(),
        inputs,
        outputs,
    })
}

/// Writes the ONNX model of `model` to `path`, atomically, and returns it.
pub fn export(model: &Model, path: &Path) -> Result<Onnx> {
    let onnx = to_onnx(model)?;
    crate::io::write_atomic(path, |tmp| {
        std::fs::write(tmp, &onnx.bytes).map_err(|e| crate::error::Error::io(tmp, e))
    })?;
    Ok(onnx)
}

fn calibration(model: &Model) -> Option<&Calibration> {
    match model {
        Model::ImageDetector(m) => Some(&m.meta().calibration),
        Model::TableDetector(m) => Some(&m.meta().calibration),
        Model::AudioDetector(m) => Some(&m.meta().calibration),
        Model::ImageDenoiser(_) | Model::AudioDenoiser(_) => None,
    }
}

/// The detector outputs every detector graph has.
fn verdict_outputs(g: &mut Graph, score: &str, cal: &Calibration, batch: Dim) {
    verdict_outputs_of(g, score, &[score.to_string()], cal, batch)
}

/// [`verdict_outputs`] of an ensemble: `score` (the mean) is the output, `members` (each
/// network's scores) give the cross-conformal p-value and verdict.
fn verdict_outputs_of(
    g: &mut Graph,
    score: &str,
    members: &[String],
    cal: &Calibration,
    batch: Dim,
) {
    let (p, anomaly) = calibrate(g, members, cal);
    g.output(
        score,
        "score",
        Elem::F32,
        &[batch],
        "anomaly score, higher is stranger",
    );
    g.output(
        &p,
        "p_value",
        Elem::F64,
        &[batch],
        "conformal p-value against the calibration scores",
    );
    g.output(
        &anomaly,
        "is_anomaly",
        Elem::Bool,
        &[batch],
        "p-value at most the calibrated rate (or a score not a number)",
    );
}

/// The mean of the same-shaped `parts`, one per network; the part itself for one.
fn mean_of(g: &mut Graph, parts: &[String]) -> String {
    match parts.len() {
        1 => parts[0].clone(),
        k => {
            let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
            let sum = g.op("Sum", &refs, vec![]);
            g.bin_scalar("Div", &sum, k as f32)
        }
    }
}

const IMAGE_DOC: &str = "bottleneck image anomaly detector. Input `image`: float32 \
[batch, channels, size, size], pixel values in [0, 1], resized (bilinear) to the model's size \
outside the graph. Outputs: score, p_value, is_anomaly, map (the anomaly map at the model's \
size), code (the bottleneck code).";

fn image_detector(d: &Detector) -> Graph {
    let meta = d.meta();
    let (c, s) = (meta.prep.channels, meta.prep.image_size);
    let mut g = Graph::new();
    let x = g.input(
        "image",
        Elem::F32,
        &[BATCH, Dim::Fixed(c), Dim::Fixed(s), Dim::Fixed(s)],
        "pixels in [0, 1] at the model's size, channel-major",
    );
    let sc = &meta.scoring;
    // Each network's score and map, with its own statistics; an ensemble's are their
    // means.
    let mut scores = Vec::new();
    let mut maps = Vec::new();
    let mut code = None;
    for (network, stats) in d.networks_scoring() {
        let (z, recon) = layers::conv_autoencoder(&mut g, &x, &network.model);
        let raw = error_map(&mut g, &x, &recon, sc.loss, s);
        let mut map = smooth(&mut g, &raw, sc.smoothing_sigma, s);
        if !stats.pixel_mean.is_empty() {
            let wide = |v: &[f32]| -> Vec<f64> { v.iter().map(|&x| x as f64).collect() };
            let mean = g.f64s("pixel_mean", &[1, 1, s, s], &wide(&stats.pixel_mean));
            let std = g.f64s("pixel_std", &[1, 1, s, s], &wide(&stats.pixel_std));
            let centred = g.bin("Sub", &map, &mean);
            map = g.bin("Div", &centred, &std);
        }
        if let (Some(head), Some(join)) = (&network.head, &stats.head) {
            // The head's probabilities, smoothed in float64 as the error map is, and the
            // larger of the two on their own scales at each pixel.
            let logits = layers::segment_net(&mut g, &x, &recon, head);
            let p = g.op("Sigmoid", &[&logits], vec![]);
            let p = g.cast(&p, Elem::F64);
            let p = smooth(&mut g, &p, sc.smoothing_sigma, s);
            let scaled = |g: &mut Graph, v: &str, center: f32, spread: f32| {
                let c = g.f64s("join_center", &[1], &[center as f64]);
                let w = g.f64s("join_spread", &[1], &[spread as f64]);
                let centred = g.bin("Sub", v, &c);
                g.bin("Div", &centred, &w)
            };
            let e = scaled(&mut g, &map, join.error_center, join.error_spread);
            let h = scaled(&mut g, &p, join.head_center, join.head_spread);
            map = g.bin("Max", &e, &h);
        }
        let map = g.cast(&map, Elem::F32);
        let flat = g.reshape(&map, &[-1, (s * s) as i64]);
        let map_score = reduce(&mut g, &flat, sc.reduction, Some(s * s));
        scores.push(match (&stats.knn, &network.codes) {
            (Some(k), Some(codes)) => {
                let dist = knn(&mut g, &z, codes, k.k);
                let zm = standardize(&mut g, &map_score, k.map_center, k.map_spread);
                let zk = standardize(&mut g, &dist, k.knn_center, k.knn_spread);
                join(&mut g, &zm, &zk, k.join)
            }
            _ => map_score,
        });
        maps.push(map);
        code.get_or_insert(z);
    }
    let code = code.expect("a detector has a network");
    let (score, map) = (mean_of(&mut g, &scores), mean_of(&mut g, &maps));
    verdict_outputs_of(&mut g, &score, &scores, &meta.calibration, BATCH);
    let map = g.reshape(&map, &[-1, s as i64, s as i64]);
    g.output(
        &map,
        "map",
        Elem::F32,
        &[BATCH, Dim::Fixed(s), Dim::Fixed(s)],
        "anomaly map at the model's size (smoothed, standardised per pixel when the model is; an ensemble's mean)",
    );
    g.output(
        &code,
        "code",
        Elem::F32,
        &[BATCH, Dim::Fixed(meta.spec.latent)],
        "bottleneck code (an ensemble's first network's)",
    );
    g
}

const TABLE_DOC: &str = "bottleneck table anomaly detector. Input `rows`: float32 \
[batch, features], raw values in the model's column order (metadata `bottleneck`, \
prep.features), NaN for a missing cell. Outputs: score, p_value, is_anomaly, errors (each \
feature's squared error in standardised units, 0 where missing), code.";

fn table_detector(t: &TableModel) -> Graph {
    let meta = t.meta();
    let f = meta.spec.features;
    let mut g = Graph::new();
    let x = g.input(
        "rows",
        Elem::F32,
        &[BATCH, Dim::Fixed(f)],
        "raw feature values in the model's column order, NaN where missing",
    );
    let missing = g.op("IsNaN", &[&x], vec![]);
    let zero = g.scalar(0.0);
    let observed = g.op("Not", &[&missing], vec![]);
    let mask = g.cast(&observed, Elem::F32);
    let count = g.reduce_sum(&mask, &[1], false);
    let count = g.bin_scalar("Max", &count, 1.0);
    // Each network's score and errors, in its own standardisation; an ensemble's are
    // their means.
    let mut scores = Vec::with_capacity(t.members.len());
    let mut all_errors = Vec::with_capacity(t.members.len());
    let mut code = None;
    for (network, prep) in t.members.iter().zip(&t.preps) {
        let center = g.f32s("center", &[1, f], &prep.center);
        let scale = g.f32s("scale", &[1, f], &prep.scale);
        let shifted = g.bin("Sub", &x, &center);
        let z = g.bin("Div", &shifted, &scale);
        let shown = g.op("Where", &[&missing, &zero, &z], vec![]);
        let input = if meta.spec.mask_input {
            g.op(
                "Concat",
                &[&shown, &mask],
                vec![("axis", graph::Attr::Int(1))],
            )
        } else {
            shown
        };
        let out = layers::dense_autoencoder(&mut g, &input, network);
        let diff = g.bin("Sub", &z, &out.recon);
        let sq = g.bin("Mul", &diff, &diff);
        let errors = g.op("Where", &[&missing, &zero, &sq], vec![]);
        let total = g.reduce_sum(&errors, &[1], false);
        let mean = g.bin("Div", &total, &count);
        scores.push(match (meta.scoring.score, &out.log_var) {
            (crate::model::file::TableScore::Elbo, Some(lv)) => {
                let e = g.op("Exp", &[lv], vec![]);
                let mu2 = g.bin("Mul", &out.code, &out.code);
                let a = g.bin("Add", &e, &mu2);
                let b = g.bin("Sub", &a, lv);
                let c = g.bin_scalar("Sub", &b, 1.0);
                let s = g.reduce_sum(&c, &[1], false);
                let kl = g.bin_scalar("Mul", &s, 0.5);
                let half = g.bin_scalar("Mul", &mean, 0.5);
                let scaled = g.bin_scalar("Mul", &half, f as f32);
                g.bin("Add", &scaled, &kl)
            }
            _ => mean,
        });
        all_errors.push(errors);
        code.get_or_insert(out.code);
    }
    let (score, errors) = (mean_of(&mut g, &scores), mean_of(&mut g, &all_errors));
    let code = code.expect("a table model has a network");
    verdict_outputs_of(&mut g, &score, &scores, &meta.calibration, BATCH);
    g.output(
        &errors,
        "errors",
        Elem::F32,
        &[BATCH, Dim::Fixed(f)],
        "each feature's squared reconstruction error (standardised units, 0 where missing)",
    );
    g.output(
        &code,
        "code",
        Elem::F32,
        &[BATCH, Dim::Fixed(meta.spec.latent)],
        "bottleneck code (the mean for a variational model; an ensemble's first network's)",
    );
    g
}

const AUDIO_DOC: &str = "bottleneck audio anomaly detector, one recording per run. Input \
`power`: float32 [frames, n_fft / 2 + 1], |STFT|^2 of the mono signal at the model's rate \
(periodic Hann window of n_fft points, hop as the metadata says, frames centred on multiples \
of the hop with the signal zero-padded by n_fft / 2 on both sides; at least `context` \
frames). Outputs: score, p_value, is_anomaly (each [1]) and map (each log-mel value's \
reconstruction error, [frames, n_mels]).";

fn audio_detector(a: &AudioDetector) -> Graph {
    let meta = a.meta();
    let mel = &meta.features.mel;
    let (bins, m, c) = (mel.bins(), mel.n_mels, meta.features.context);
    let mut g = Graph::new();
    let p = g.input(
        "power",
        Elem::F32,
        &[FRAMES, Dim::Fixed(bins)],
        "|STFT|^2 of one mono recording at the model's rate",
    );
    let filters = mel_filterbank(mel);
    let mut transposed = vec![0f32; filters.len()];
    for (band, row) in filters.chunks(bins).enumerate() {
        for (k, w) in row.iter().enumerate() {
            transposed[k * m + band] = *w;
        }
    }
    let fb = g.f32s("mel_filters_t", &[bins, m], &transposed);
    let mel_power = g.bin("MatMul", &p, &fb);
    let floored = g.bin_scalar("Add", &mel_power, LOG_EPS);
    let ln = g.op("Log", &[&floored], vec![]);
    let log10 = g.bin_scalar("Div", &ln, std::f32::consts::LN_10);
    let db = g.bin_scalar("Mul", &log10, 10.0);
    let mean = g.f32s("band_mean", &[1, m], &meta.features.band_mean);
    let std = g.f32s("band_std", &[1, m], &meta.features.band_std);
    let centred = g.bin("Sub", &db, &mean);
    let z = g.bin("Div", &centred, &std);
    let x = windows(&mut g, &z, c);
    let out = layers::dense_autoencoder(&mut g, &x, &a.model);
    let diff = g.bin("Sub", &x, &out.recon);
    let e = g.bin("Mul", &diff, &diff);
    let input_errors = g.reduce("ReduceMean", &e, &[1], false);
    let row = g.reshape(&input_errors, &[1, -1]);
    let reduction = meta.scoring.reduction;
    let plain = reduce(&mut g, &row, reduction, None);
    let map = overlap_average(&mut g, &e, c, m);
    let score = match &meta.scoring.band_normalized {
        Some(b) => {
            let band_error = g.f32s("band_error", &[1, m], &b.band_error);
            let ratio = g.bin("Div", &map, &band_error);
            let per_frame = g.reduce("ReduceMean", &ratio, &[1], false);
            let row = g.reshape(&per_frame, &[1, -1]);
            let normalized = reduce(&mut g, &row, reduction, None);
            let zp = standardize(&mut g, &plain, b.plain_center, b.plain_spread);
            let zn = standardize(
                &mut g,
                &normalized,
                b.normalized_center,
                b.normalized_spread,
            );
            g.bin("Max", &zp, &zn)
        }
        None => plain,
    };
    verdict_outputs(&mut g, &score, &meta.calibration, Dim::Fixed(1));
    g.output(
        &map,
        "map",
        Elem::F32,
        &[FRAMES, Dim::Fixed(m)],
        "reconstruction error of each log-mel value (standardised units)",
    );
    g
}

const DENOISE_DOC: &str = "bottleneck image denoiser. Input `image`: float32 \
[batch, channels, height, width], pixel values in [0, 1], any size large enough for the \
mirrored border (32 pixels a side with the default two levels); a grayscale model takes any \
number of channels and cleans each plane on its own. Output `denoised`, same shape, in \
[0, 1]: the whole image in one pass (bottleneck denoise cuts large images into blended tiles \
to bound memory).";

fn image_denoiser(d: &Denoiser) -> Graph {
    let spec = &d.meta().spec;
    let (o, m) = (d.overlap() as i64, spec.multiple() as i64);
    let mut g = Graph::new();
    // A grayscale network cleans any number of planes, each on its own (as `denoise` does
    // with colour images); a colour network takes three.
    let channels = if spec.channels == 1 {
        Dim::Free("channels")
    } else {
        Dim::Fixed(spec.channels)
    };
    let image_dims = [BATCH, channels, Dim::Free("height"), Dim::Free("width")];
    let x = g.input(
        "image",
        Elem::F32,
        &image_dims,
        "pixels in [0, 1], channel-major",
    );
    let shape = g.op("Shape", &[&x], vec![]);
    let hw = g.op(
        "Shape",
        &[&x],
        vec![("start", graph::Attr::Int(2)), ("end", graph::Attr::Int(4))],
    );
    let planes = if spec.channels == 1 {
        let lead = g.i64s("planes", &[-1, 1]);
        let to = g.op("Concat", &[&lead, &hw], vec![("axis", graph::Attr::Int(0))]);
        g.op("Reshape", &[&x, &to], vec![])
    } else {
        x.clone()
    };
    // Mirrored by `o` on every side, then on the bottom and right up to a multiple of the
    // network's stride, as bottleneck denoise pads each image.
    let two_o = g.i64s("margin", &[2 * o]);
    let padded_len = g.bin("Add", &hw, &two_o);
    let multiple = g.i64s("multiple", &[m]);
    let rem = g.bin("Mod", &padded_len, &multiple);
    let short = g.bin("Sub", &multiple, &rem);
    let extra = g.bin("Mod", &short, &multiple);
    let margin = g.i64s("margin", &[o]);
    let end = g.bin("Add", &extra, &margin);
    let begin = g.i64s("pads_begin", &[0, 0, o, o, 0, 0]);
    let pads = g.op(
        "Concat",
        &[&begin, &end],
        vec![("axis", graph::Attr::Int(0))],
    );
    let padded = g.op(
        "Pad",
        &[&planes, &pads],
        vec![("mode", graph::Attr::Str("reflect"))],
    );
    let y = layers::denoise_net(&mut g, &padded, &d.net);
    let starts = g.i64s("starts", &[o, o]);
    let ends = g.bin("Add", &hw, &margin);
    let axes = g.i64s("axes", &[2, 3]);
    let crop = g.op("Slice", &[&y, &starts, &ends, &axes], vec![]);
    let lo = g.scalar(0.0);
    let hi = g.scalar(1.0);
    let clean = g.op("Clip", &[&crop, &lo, &hi], vec![]);
    let clean = g.op("Reshape", &[&clean, &shape], vec![]);
    g.output(
        &clean,
        "denoised",
        Elem::F32,
        &image_dims,
        "the denoised image in [0, 1]",
    );
    g
}

const AUDIO_DENOISE_DOC: &str = "bottleneck audio denoiser, one channel per run. Input \
`power`: float32 [frames, n_fft / 2 + 1], |STFT|^2 of the channel at the model's rate (the \
transform of the audio detector; a signal shorter than (context - 1) * hop + 1 samples is \
zero-padded to that first). Output `gain` of the same shape: multiply the complex STFT by it \
and invert (overlap-add of the windowed inverse FFTs divided by the summed squared window).";

fn audio_denoiser(a: &AudioDenoiser) -> Graph {
    let f = &a.meta().features;
    let (bins, c) = (f.n_fft / 2 + 1, f.context);
    let mut g = Graph::new();
    let p = g.input(
        "power",
        Elem::F32,
        &[FRAMES, Dim::Fixed(bins)],
        "|STFT|^2 of one channel at the model's rate",
    );
    let floored = g.bin_scalar("Add", &p, POWER_FLOOR);
    let ln = g.op("Log", &[&floored], vec![]);
    let mean = g.f32s("bin_mean", &[1, bins], &f.bin_mean);
    let std = g.f32s("bin_std", &[1, bins], &f.bin_std);
    let centred = g.bin("Sub", &ln, &mean);
    let z = g.bin("Div", &centred, &std);
    let x = windows(&mut g, &z, c);
    let out = layers::dense_autoencoder(&mut g, &x, &a.model);
    let masks = g.op("Sigmoid", &[&out.recon], vec![]);
    let gain = overlap_average(&mut g, &masks, c, bins);
    g.output(
        &gain,
        "gain",
        Elem::F32,
        &[FRAMES, Dim::Fixed(bins)],
        "the gain to multiply each STFT bin by",
    );
    g
}

#[cfg(test)]
mod tests {
    use image::{DynamicImage, GrayImage};

    use super::proto::ModelProto;
    use super::*;
    use crate::data::audio::Audio;
    use crate::data::table::Table;
    use crate::progress::Silent;
    use crate::task::{AudioDenoiseParams, AudioParams, DenoiseParams, DetectParams, TableParams};
    use burn::prelude::Device;

    /// Every node reads values defined before it (graph inputs, initializers, earlier
    /// outputs), nothing is written twice, and the graph's outputs are `outputs`.
    fn assert_well_formed(bytes: &[u8], outputs: &[&str]) {
        let model = ModelProto::decode(bytes).expect("a ModelProto");
        let graph = model.graph.expect("a graph");
        let mut defined: std::collections::HashSet<String> = graph
            .input
            .iter()
            .filter_map(|v| v.name.clone())
            .chain(graph.initializer.iter().filter_map(|t| t.name.clone()))
            .collect();
        for node in &graph.node {
            for input in node.input.iter().filter(|i| !i.is_empty()) {
                assert!(
                    defined.contains(input),
                    "{:?} reads undefined {input}",
                    node.op_type
                );
            }
            for output in &node.output {
                assert!(defined.insert(output.clone()), "{output} written twice");
            }
        }
        let names: Vec<&str> = graph
            .output
            .iter()
            .filter_map(|v| v.name.as_deref())
            .collect();
        assert_eq!(names, outputs);
        let meta = model
            .metadata_props
            .iter()
            .find(|p| p.key.as_deref() == Some("bottleneck"))
            .and_then(|p| p.value.as_deref())
            .expect("the model's metadata");
        assert!(serde_json::from_str::<serde_json::Value>(meta).is_ok());
    }

    fn export(model: Model) -> Vec<u8> {
        to_onnx(&model).unwrap().bytes
    }

    #[test]
    fn every_kind_exports_a_well_formed_graph() {
        let device = Device::flex();
        let images: Vec<DynamicImage> = (0..16)
            .map(|i| {
                DynamicImage::ImageLuma8(GrayImage::from_fn(16, 16, |x, y| {
                    image::Luma([((x * 13 + y * 7 + i * 5) % 256) as u8])
                }))
            })
            .collect();
        let detector = Detector::fit_images(
            &images,
            &DetectParams {
                epochs: Some(1),
                width: Some(4),
                knn: Some(3),
                ..DetectParams::default()
            },
            &device,
            &Silent,
        )
        .unwrap();
        let detector_outputs = ["score", "p_value", "is_anomaly", "map", "code"];
        assert_well_formed(
            &export(Model::ImageDetector(Box::new(detector))),
            &detector_outputs,
        );
        let denoiser = Denoiser::fit_images(
            &images,
            None,
            &DenoiseParams {
                width: 4,
                levels: 1,
                patch: 8,
                epochs: Some(1),
                ..DenoiseParams::default()
            },
            &device,
            &Silent,
        )
        .unwrap();
        assert_well_formed(
            &export(Model::ImageDenoiser(Box::new(denoiser))),
            &["denoised"],
        );
        let values = ndarray::Array2::from_shape_fn((120, 3), |(i, j)| ((i * (j + 3)) % 17) as f32);
        let table = TableModel::fit_table(
            &Table::unnamed(values),
            &TableParams {
                epochs: Some(1),
                variational: true,
                batch_norm: true,
                score: crate::model::file::TableScore::Elbo,
                ..TableParams::default()
            },
            &device,
            &Silent,
        )
        .unwrap();
        assert_well_formed(
            &export(Model::TableDetector(Box::new(table))),
            &["score", "p_value", "is_anomaly", "errors", "code"],
        );
        let clips: Vec<Audio> = (0..6)
            .map(|k| {
                let samples = (0..8000)
                    .map(|i| (i as f32 * (0.05 + 0.001 * k as f32)).sin() * 0.3)
                    .collect();
                Audio::from_samples(samples, 1, 8000).unwrap()
            })
            .collect();
        let audio = AudioDetector::fit_clips(
            &clips,
            &AudioParams {
                n_fft: 256,
                hop: 128,
                n_mels: 16,
                hidden: vec![16],
                latent: 4,
                epochs: Some(1),
                calibration_fraction: 0.34,
                ..AudioParams::default()
            },
            &device,
            &Silent,
        )
        .unwrap();
        assert_well_formed(
            &export(Model::AudioDetector(Box::new(audio))),
            &["score", "p_value", "is_anomaly", "map"],
        );
        let audio_denoiser = AudioDenoiser::fit_clips(
            &clips,
            &AudioDenoiseParams {
                noise: "white:0.03".parse().unwrap(),
                n_fft: 128,
                hop: 32,
                hidden: vec![16],
                latent: 8,
                epochs: Some(1),
                batch_size: 4,
                ..AudioDenoiseParams::default()
            },
            &device,
            &Silent,
        )
        .unwrap();
        assert_well_formed(
            &export(Model::AudioDenoiser(Box::new(audio_denoiser))),
            &["gain"],
        );
    }
}
