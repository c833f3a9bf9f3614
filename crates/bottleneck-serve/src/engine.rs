//! The inference side of the service: worker threads that each own a copy of the model, fed
//! by one bounded queue. Requests never run inference on the async threads; when the queue
//! is full, [`Pool::submit`] refuses at once so that the service answers 503 instead of
//! piling up memory. Image-scoring requests waiting together are run as one batch.

use std::io::Cursor;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use base64::Engine as _;
use bottleneck::data::planes::{Planes, encode_image};
use bottleneck::data::table::{Cell, Rows};
use bottleneck::model::file::ModelKind;
use bottleneck::task::Verdict;
use bottleneck::task::audio_denoise::AudioDenoiser;
use bottleneck::task::denoise::Denoiser;
use bottleneck::task::detect::Detector;
use bottleneck::task::sound::AudioDetector;
use bottleneck::task::table::TableModel;
use burn::prelude::Device;
use image::{DynamicImage, ImageFormat};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::error::ApiError;
use crate::inputs::RowsBody;
use crate::metrics::Metrics;

/// Images scored in one forward pass, across the requests waiting together.
const MAX_BATCH: usize = 32;
/// Features named per table row in a score answer, largest share of the error first.
const EXPLAIN: usize = 3;

/// What a model file is for, as the service serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    ImageDetector,
    TableDetector,
    ImageDenoiser,
    AudioDetector,
    AudioDenoiser,
}

impl Served {
    /// Reads what the model file `bytes` (named `path` in errors) holds.
    pub fn of(path: &Path, bytes: &[u8]) -> bottleneck::Result<Self> {
        match ModelKind::of_bytes(path, bytes)? {
            ModelKind::ImageDetector => Ok(Self::ImageDetector),
            ModelKind::TableDetector => Ok(Self::TableDetector),
            ModelKind::ImageDenoiser => Ok(Self::ImageDenoiser),
            ModelKind::AudioDetector => Ok(Self::AudioDetector),
            ModelKind::AudioDenoiser => Ok(Self::AudioDenoiser),
        }
    }

    /// The name `GET /v1/model` and `/readyz` give it.
    pub fn name(self) -> &'static str {
        match self {
            Self::ImageDetector => "image-detector",
            Self::TableDetector => "table-detector",
            Self::ImageDenoiser => "image-denoiser",
            Self::AudioDetector => "audio-detector",
            Self::AudioDenoiser => "audio-denoiser",
        }
    }

    /// The endpoints this model answers, for error messages and the page.
    pub fn endpoints(self) -> &'static str {
        match self {
            Self::ImageDetector | Self::TableDetector => "/v1/score and /v1/encode",
            Self::ImageDenoiser => "/v1/denoise",
            Self::AudioDetector => "/v1/score (WAV recordings)",
            Self::AudioDenoiser => "/v1/denoise (a WAV recording)",
        }
    }
}

/// One named input file of a request (cheap to clone: the bytes are shared).
#[derive(Debug, Clone)]
pub struct Upload {
    pub name: String,
    pub bytes: axum::body::Bytes,
}

/// What a request asks the model to do.
#[derive(Debug, Clone)]
pub enum Task {
    ScoreImages { uploads: Vec<Upload>, map: bool },
    EncodeImages(Vec<Upload>),
    ScoreRows(RowsBody),
    EncodeRows(RowsBody),
    Denoise(Upload),
    ScoreAudio(Vec<Upload>),
    DenoiseAudio(Upload),
}

/// A finished request: JSON, or an image in the given format.
#[derive(Debug)]
pub enum Answer {
    Json(Value),
    /// JSON already written, with how many items it scored and flagged: answers of many
    /// rows are serialised straight from their records, as a tree of JSON values takes
    /// about 25 times the text's size.
    Written {
        json: Vec<u8>,
        scored: usize,
        flagged: usize,
    },
    Image {
        bytes: Vec<u8>,
        format: ImageFormat,
    },
    /// A WAV file.
    Wav(Vec<u8>),
}

type Reply = Result<Answer, ApiError>;

struct Job {
    task: Task,
    reply: oneshot::Sender<Reply>,
}

/// The model as one worker holds it.
enum Model {
    Images(Box<Detector>),
    Table(Box<TableModel>),
    Denoise(Box<Denoiser>),
    Audio(Box<AudioDetector>),
    AudioDenoise(Box<AudioDenoiser>),
}

impl Model {
    fn load(
        served: Served,
        path: &Path,
        bytes: Vec<u8>,
        device: &Device,
    ) -> bottleneck::Result<Self> {
        Ok(match served {
            Served::ImageDetector => {
                Model::Images(Box::new(Detector::from_bytes(path, bytes, device)?))
            }
            Served::TableDetector => {
                Model::Table(Box::new(TableModel::from_bytes(path, bytes, device)?))
            }
            Served::ImageDenoiser => {
                Model::Denoise(Box::new(Denoiser::from_bytes(path, bytes, device)?))
            }
            Served::AudioDetector => {
                Model::Audio(Box::new(AudioDetector::from_bytes(path, bytes, device)?))
            }
            Served::AudioDenoiser => {
                Model::AudioDenoise(Box::new(AudioDenoiser::from_bytes(path, bytes, device)?))
            }
        })
    }

    /// Runs the model once on a plain input of its kind (a mid-gray image, a row at the
    /// training centre): a model that loads but cannot answer fails here, before the
    /// service says it is ready, rather than on every request.
    fn self_check(&self) -> std::result::Result<(), String> {
        use bottleneck::{AnomalyDetector, Transformer};
        let gray = |side: usize| {
            DynamicImage::ImageLuma8(image::GrayImage::from_pixel(
                side as u32,
                side as u32,
                image::Luma([128]),
            ))
        };
        let run = || -> bottleneck::Result<bool> {
            Ok(match self {
                Model::Images(d) => d.score(&[gray(d.meta().prep.image_size)])?[0]
                    .p_value
                    .is_finite(),
                Model::Table(t) => {
                    let prep = &t.meta().prep;
                    let row = bottleneck::ndarray::Array2::from_shape_vec(
                        (1, prep.center.len()),
                        prep.center.clone(),
                    )
                    .map_err(|e| bottleneck::Error::Invalid(e.to_string()))?;
                    let table = bottleneck::Table::new(prep.features.clone(), row)?;
                    t.score(&table)?[0].p_value.is_finite()
                }
                Model::Denoise(d) => {
                    let side = 2 * d.meta().spec.patch;
                    d.transform(&[gray(side)])?[0].width() as usize == side
                }
                Model::Audio(a) => {
                    // Five seconds of a quiet tone at the model's rate: scored, or unscored
                    // with a reason (too short for a long context), never a failure.
                    let rate = a.meta().features.mel.sample_rate;
                    let tone = (0..5 * rate as usize)
                        .map(|i| 0.1 * (i as f32 * 0.05).sin())
                        .collect();
                    let clip = bottleneck::data::audio::Audio::from_samples(tone, 1, rate)?;
                    let scored = a.score_audio(Path::new("self-check.wav"), &clip)?;
                    scored.result.as_ref().is_ok_and(|s| s.p_value.is_finite())
                        || scored.result.is_err()
                }
                Model::AudioDenoise(d) => {
                    let rate = d.meta().features.sample_rate;
                    let tone: Vec<f32> = (0..rate as usize)
                        .map(|i| 0.1 * (i as f32 * 0.05).sin())
                        .collect();
                    let n = tone.len();
                    let clip = bottleneck::data::audio::Audio::from_samples(tone, 1, rate)?;
                    d.denoise_audio(&clip)?.samples.len() == n
                }
            })
        };
        match std::panic::catch_unwind(AssertUnwindSafe(run)) {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err("it gave no usable answer on a test input".into()),
            Ok(Err(e)) => Err(format!("it fails on a test input: {e}")),
            Err(_) => Err("it crashed on a test input".into()),
        }
    }

    /// What `GET /v1/model` shows: the metadata without the long per-pixel and per-sample
    /// arrays, which are summarised by their length.
    fn describe(&self, path: &Path) -> Value {
        let mut meta = match self {
            Model::Images(d) => serde_json::to_value(d.meta()),
            Model::Table(t) => serde_json::to_value(t.meta()),
            Model::Denoise(d) => serde_json::to_value(d.meta()),
            Model::Audio(a) => serde_json::to_value(a.meta()),
            Model::AudioDenoise(d) => serde_json::to_value(d.meta()),
        }
        .unwrap_or(Value::Null);
        if let Some(scoring) = meta.get_mut("scoring").and_then(Value::as_object_mut) {
            summarise_pixels(scoring);
            if let Some(ensemble) = scoring.get_mut("ensemble").and_then(Value::as_array_mut) {
                ensemble
                    .iter_mut()
                    .filter_map(Value::as_object_mut)
                    .for_each(summarise_pixels);
            }
        }
        if let Some(cal) = meta.get_mut("calibration").and_then(Value::as_object_mut)
            && let Some(v) = cal.remove("scores")
        {
            cal.insert(
                "calibration_scores".into(),
                json!(v.as_array().map_or(0, Vec::len)),
            );
        }
        // The file's name only: where it sits on the server is nobody's business.
        let file = path.file_name().map(|f| f.to_string_lossy().to_string());
        json!({ "file": file, "meta": meta })
    }
}

/// The worker threads and the queue in front of them.
pub struct Pool {
    sender: Option<SyncSender<Job>>,
    workers: Vec<JoinHandle<()>>,
    served: Served,
    info: Value,
    metrics: Arc<Metrics>,
}

/// Why a job was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The queue is full.
    Busy,
    /// The pool is shutting down.
    Closed,
}

impl Pool {
    /// Loads the model file at `path` once per worker (`workers` threads on `device`) behind a
    /// queue of `queue` waiting jobs. Fails when the file cannot be served.
    pub fn start(
        path: &Path,
        workers: usize,
        queue: usize,
        device: &Device,
        metrics: Arc<Metrics>,
    ) -> bottleneck::Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                bottleneck::Error::Missing {
                    path: path.to_path_buf(),
                }
            } else {
                bottleneck::Error::Invalid(format!("{}: {e}", path.display()))
            }
        })?;
        let served = Served::of(path, &bytes)?;
        // One load up front, so a bad file fails before any thread starts and the
        // description comes from the file being served.
        let first = Model::load(served, path, bytes.clone(), device)?;
        first
            .self_check()
            .map_err(|reason| bottleneck::Error::ModelFile {
                path: path.to_path_buf(),
                reason: format!("cannot be served: {reason}"),
            })?;
        let info = first.describe(path);
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Job>(queue.max(1));
        let receiver = Arc::new(Mutex::new(receiver));
        let mut models = vec![first];
        for _ in 1..workers.max(1) {
            models.push(Model::load(served, path, bytes.clone(), device)?);
        }
        let workers = models
            .into_iter()
            .enumerate()
            .map(|(i, model)| {
                let receiver = Arc::clone(&receiver);
                let metrics = Arc::clone(&metrics);
                std::thread::Builder::new()
                    .name(format!("bottleneck-worker-{i}"))
                    .spawn(move || work(model, &receiver, &metrics))
                    .map_err(|e| bottleneck::Error::Invalid(format!("cannot start a worker: {e}")))
            })
            .collect::<bottleneck::Result<Vec<_>>>()?;
        Ok(Self {
            sender: Some(sender),
            workers,
            served,
            info,
            metrics,
        })
    }

    /// What the served model is for.
    pub fn served(&self) -> Served {
        self.served
    }

    /// The model's description for `GET /v1/model`.
    pub fn info(&self) -> &Value {
        &self.info
    }

    /// Queues `task`; the answer arrives on the returned channel. Refuses at once when the
    /// queue is full.
    pub fn submit(&self, task: Task) -> Result<oneshot::Receiver<Reply>, Refused> {
        let sender = self.sender.as_ref().ok_or(Refused::Closed)?;
        let (reply, answer) = oneshot::channel();
        // Counted before sending: a worker may take the job before try_send returns.
        self.metrics.queued.inc();
        match sender.try_send(Job { task, reply }) {
            Ok(()) => Ok(answer),
            Err(e) => {
                self.metrics.queued.dec();
                Err(match e {
                    TrySendError::Full(_) => Refused::Busy,
                    TrySendError::Disconnected(_) => Refused::Closed,
                })
            }
        }
    }

    /// Stops taking jobs, lets the workers finish the queued ones, and waits for them.
    pub fn shutdown(mut self) {
        self.sender = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

/// A worker's loop: takes a job (and, for image scoring without heatmaps, the other such
/// jobs already waiting, up to a batch), answers, and ends when the queue is closed.
fn work(model: Model, receiver: &Mutex<Receiver<Job>>, metrics: &Metrics) {
    loop {
        let (batch, other) = {
            let Ok(rx) = receiver.lock() else { return };
            let Ok(first) = rx.recv() else { return };
            metrics.queued.dec();
            let mut batch = vec![first];
            let mut other = None;
            if batchable(&batch[0].task) {
                let mut images = uploads_in(&batch[0].task);
                while images < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(job) => {
                            metrics.queued.dec();
                            if batchable(&job.task) {
                                images += uploads_in(&job.task);
                                batch.push(job);
                            } else {
                                other = Some(job);
                                break;
                            }
                        }
                        Err(_) => break,
                    }
                }
            }
            (batch, other)
        };
        // A request whose client has gone (timed out or disconnected) is not worked on.
        let batch: Vec<Job> = batch.into_iter().filter(|j| !j.reply.is_closed()).collect();
        if !batch.is_empty() {
            run_guarded(batch, |jobs, gone| answer_batch(&model, jobs, gone));
        }
        if let Some(job) = other.filter(|j| !j.reply.is_closed()) {
            run_guarded(vec![job], |jobs, gone| answer_batch(&model, jobs, gone));
        }
    }
}

/// Image scoring without heatmaps: such requests waiting together share forward passes
/// (and hold only the network inputs, not the decoded images). Heatmap requests keep
/// their images until drawn, so each runs on its own to bound memory.
fn batchable(task: &Task) -> bool {
    matches!(task, Task::ScoreImages { map: false, .. })
}

fn uploads_in(task: &Task) -> usize {
    match task {
        Task::ScoreImages { uploads, .. }
        | Task::EncodeImages(uploads)
        | Task::ScoreAudio(uploads) => uploads.len(),
        _ => 1,
    }
}

/// Runs `f` over `jobs`' tasks and sends each reply; `f` is told which clients have gone
/// (`gone(i)`) so it can skip their remaining work. A panic inside does not take the worker
/// down: a batch that panics is run again one job at a time, so that only the request that
/// caused it gets a 500.
fn run_guarded(jobs: Vec<Job>, f: impl Fn(Vec<Task>, &dyn Fn(usize) -> bool) -> Vec<Reply>) {
    let (tasks, replies): (Vec<Task>, Vec<oneshot::Sender<Reply>>) =
        jobs.into_iter().map(|j| (j.task, j.reply)).unzip();
    let gone = |i: usize| replies.get(i).is_none_or(oneshot::Sender::is_closed);
    // Kept for the retry; request bodies are shared, not copied.
    let retry = (tasks.len() > 1).then(|| tasks.clone());
    let answers = match std::panic::catch_unwind(AssertUnwindSafe(|| f(tasks, &gone))) {
        Ok(answers) => answers,
        Err(_) => match retry {
            Some(tasks) => tasks
                .into_iter()
                .enumerate()
                .map(|(i, task)| {
                    let alone = |_: usize| gone(i);
                    std::panic::catch_unwind(AssertUnwindSafe(|| f(vec![task], &alone)))
                        .ok()
                        .and_then(|mut a| a.pop())
                        .unwrap_or_else(|| Err(ApiError::internal()))
                })
                .collect(),
            None => vec![Err(ApiError::internal())],
        },
    };
    for (reply, answer) in replies.into_iter().zip(answers) {
        // The client may have gone meanwhile; nothing to do then.
        let _ = reply.send(answer);
    }
}

/// Answers tasks (several only when all are image scoring); `gone(i)` says whether task
/// `i`'s client has left.
fn answer_batch(model: &Model, tasks: Vec<Task>, gone: &dyn Fn(usize) -> bool) -> Vec<Reply> {
    match model {
        Model::Images(detector) => {
            if tasks.iter().all(|t| matches!(t, Task::ScoreImages { .. })) {
                return score_images(detector, tasks, gone);
            }
            tasks
                .into_iter()
                .map(|t| match t {
                    Task::EncodeImages(uploads) => encode_images(detector, uploads),
                    _ => Err(ApiError::wrong_model(Served::ImageDetector)),
                })
                .collect()
        }
        Model::Table(table) => tasks
            .into_iter()
            .map(|t| match t {
                Task::ScoreRows(body) => score_rows(table, body),
                Task::EncodeRows(body) => encode_rows(table, body),
                _ => Err(ApiError::wrong_model(Served::TableDetector)),
            })
            .collect(),
        Model::Audio(detector) => tasks
            .into_iter()
            .map(|t| match t {
                Task::ScoreAudio(uploads) => score_audio(detector, uploads),
                _ => Err(ApiError::wrong_model(Served::AudioDetector)),
            })
            .collect(),
        Model::AudioDenoise(denoiser) => tasks
            .into_iter()
            .map(|t| match t {
                Task::DenoiseAudio(upload) => denoise_audio(denoiser, upload),
                _ => Err(ApiError::wrong_model(Served::AudioDenoiser)),
            })
            .collect(),
        Model::Denoise(denoiser) => tasks
            .into_iter()
            .enumerate()
            .map(|(i, t)| match t {
                Task::Denoise(upload) => denoise(denoiser, upload, &|| gone(i)),
                _ => Err(ApiError::wrong_model(Served::ImageDenoiser)),
            })
            .collect(),
    }
}

/// Largest image side the service decodes; larger uploads are refused before decoding.
pub const MAX_SIDE: u32 = 16_384;
/// Most pixels of one image (24 megapixels, a 6000x4000 photograph), checked in the file's
/// header before decoding: a small compressed file can decode to gigabytes.
pub const MAX_PIXELS: u64 = 24_000_000;
/// Most pixels of one image to denoise (12 megapixels, a 4000x3000 photograph): denoising
/// costs far more per pixel than scoring, which resizes to the model's input first.
pub const MAX_DENOISE_PIXELS: u64 = 12_000_000;
/// Most pixels of the images of one request with heatmaps, which are kept until drawn.
pub const MAX_MAP_PIXELS: u64 = 64_000_000;
/// Most pixels of one image a tiled model scores, at the model's scale (2,048 px squared,
/// twice the side tiled models scale large images to by default): about 4,000 tiles of
/// 64 px, some 10 s on 2 cores. A tiled model reads every pixel, so its cost grows with the
/// upload where a whole-image model's does not.
pub const MAX_TILED_PIXELS: u64 = 1 << 22;

/// Most pixels of one upload `detector` scores: [`MAX_PIXELS`], and for a tiled model
/// [`MAX_TILED_PIXELS`] once scaled by the model's scale.
fn max_upload_pixels(detector: &Detector) -> u64 {
    match detector.meta().prep.tiles {
        Some(t) => MAX_PIXELS.min((MAX_TILED_PIXELS as f64 / f64::from(t.scale).powi(2)) as u64),
        None => MAX_PIXELS,
    }
}

/// Decodes an upload, refusing what is not an image or is too large to decode.
fn decode_upload(
    upload: &Upload,
    max_pixels: u64,
) -> Result<(DynamicImage, ImageFormat), ApiError> {
    let reader = image::ImageReader::new(Cursor::new(&upload.bytes[..]))
        .with_guessed_format()
        .map_err(|e| ApiError::bad_request(format!("{}: {e}", upload.name)))?;
    let Some(format) = reader.format() else {
        return Err(ApiError::unsupported(format!(
            "{}: not an image (PNG, JPEG, BMP or TIFF expected; {} bytes starting {:02x?})",
            upload.name,
            upload.bytes.len(),
            &upload.bytes[..upload.bytes.len().min(4)]
        )));
    };
    let cannot = |e: image::ImageError| match e {
        image::ImageError::Limits(e) => ApiError::too_large(format!(
            "{}: {e} (at most {MAX_SIDE} pixels a side)",
            upload.name
        )),
        e => ApiError::bad_request(format!(
            "{}: cannot decode the {format:?} image: {e}",
            upload.name
        )),
    };
    let (w, h) = image::ImageReader::with_format(Cursor::new(&upload.bytes[..]), format)
        .into_dimensions()
        .map_err(cannot)?;
    let pixels = u64::from(w) * u64::from(h);
    if pixels == 0 {
        return Err(ApiError::unprocessable(format!(
            "{}: the image is empty (0 pixels)",
            upload.name
        )));
    }
    if pixels > max_pixels {
        return Err(ApiError::too_large(format!(
            "{}: {w}x{h} is {:.1} megapixels, at most {} accepted; send a smaller image",
            upload.name,
            pixels as f64 / 1e6,
            max_pixels / 1_000_000
        )));
    }
    let mut reader = reader;
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    Ok((reader.decode().map_err(cannot)?, format))
}

/// The network inputs of `uploads`, concatenated, and the decoded images when `keep`.
fn prepare(
    detector: &Detector,
    uploads: &[Upload],
    keep: bool,
) -> Result<(Vec<f32>, Vec<DynamicImage>), ApiError> {
    let prep = &detector.meta().prep;
    let mut inputs = Vec::with_capacity(uploads.len() * prep.len());
    let mut kept = Vec::new();
    let mut pixels = 0u64;
    for upload in uploads {
        let (img, _) = decode_upload(upload, MAX_PIXELS)?;
        inputs.extend(prep.tensorize(&img));
        if keep {
            pixels += u64::from(img.width()) * u64::from(img.height());
            if pixels > MAX_MAP_PIXELS {
                return Err(map_too_large());
            }
            kept.push(img);
        }
    }
    Ok((inputs, kept))
}

/// One network's image statistics with the per-pixel arrays replaced by their lengths.
fn summarise_pixels(scoring: &mut serde_json::Map<String, Value>) {
    for key in ["pixel_mean", "pixel_std"] {
        if let Some(v) = scoring.remove(key) {
            let n = v.as_array().map_or(0, Vec::len);
            scoring.insert(format!("{key}_values"), json!(n));
        }
    }
    // A tiled model's cell statistics: the grid's size, without its values.
    if let Some(Value::Object(p)) = scoring.get_mut("positions") {
        for key in ["mean", "std"] {
            if let Some(v) = p.remove(key) {
                let n = v.as_array().map_or(0, Vec::len);
                p.insert(format!("{key}_values"), json!(n));
            }
        }
    }
}

/// Scores the images of several requests together, in forward passes of at most
/// [`MAX_BATCH`] images; heatmaps are drawn for the requests that asked, unless their
/// client has gone.
fn score_images(detector: &Detector, tasks: Vec<Task>, gone: &dyn Fn(usize) -> bool) -> Vec<Reply> {
    if detector.is_tiled() {
        return score_tiled(detector, tasks, gone);
    }
    let per_image = detector.meta().prep.len();
    let mut replies: Vec<Option<Reply>> = Vec::with_capacity(tasks.len());
    // Each task's (names, images kept for heatmaps, index of its first input).
    let mut prepared = Vec::with_capacity(tasks.len());
    let mut inputs = Vec::new();
    for task in tasks {
        let Task::ScoreImages { uploads, map } = task else {
            replies.push(Some(Err(ApiError::internal())));
            prepared.push(None);
            continue;
        };
        match prepare(detector, &uploads, map) {
            Ok((x, kept)) => {
                let names: Vec<String> = uploads.into_iter().map(|u| u.name).collect();
                prepared.push(Some((names, kept, inputs.len() / per_image)));
                inputs.extend(x);
                replies.push(None);
            }
            Err(e) => {
                replies.push(Some(Err(e)));
                prepared.push(None);
            }
        }
    }
    let n = inputs.len() / per_image;
    let (mut verdicts, mut maps) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for chunk in inputs.chunks(MAX_BATCH * per_image) {
        let (v, m) = detector.score_inputs(chunk.to_vec(), chunk.len() / per_image);
        verdicts.extend(v);
        maps.extend(m);
    }
    for (i, (reply, p)) in replies.iter_mut().zip(prepared).enumerate() {
        let Some((names, kept, first)) = p else {
            continue;
        };
        if gone(i) {
            *reply = Some(Err(ApiError::internal()));
            continue;
        }
        let n = names.len();
        *reply = Some(answer_images(
            detector,
            names,
            &verdicts[first..first + n],
            &maps[first..first + n],
            kept,
        ));
    }
    replies
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::internal())))
        .collect()
}

/// [`score_images`] for a tiled model: each request's images are scored whole, at their
/// own size (tile by tile), one request at a time.
fn score_tiled(detector: &Detector, tasks: Vec<Task>, gone: &dyn Fn(usize) -> bool) -> Vec<Reply> {
    tasks
        .into_iter()
        .enumerate()
        .map(|(i, task)| {
            let Task::ScoreImages { uploads, map } = task else {
                return Err(ApiError::internal());
            };
            // One image decoded and scored at a time; images and maps are kept only for
            // heatmaps, which MAX_MAP_PIXELS bounds.
            let (mut verdicts, mut maps, mut kept) = (Vec::new(), Vec::new(), Vec::new());
            let mut pixels = 0u64;
            let max_pixels = max_upload_pixels(detector);
            for upload in &uploads {
                if gone(i) {
                    return Err(ApiError::internal());
                }
                let (img, _) = decode_upload(upload, max_pixels)?;
                pixels += u64::from(img.width()) * u64::from(img.height());
                if map && pixels > MAX_MAP_PIXELS {
                    return Err(map_too_large());
                }
                let (v, m) = detector.score_images(std::slice::from_ref(&img));
                verdicts.extend(v);
                if map {
                    maps.extend(m);
                    kept.push(img);
                }
            }
            let names = uploads.into_iter().map(|u| u.name).collect();
            answer_images(detector, names, &verdicts, &maps, kept)
        })
        .collect()
}

/// The answer to a scoring request: each image's verdict by name, with its heatmap when
/// its image was `kept` (in order, from the first).
fn answer_images(
    detector: &Detector,
    names: Vec<String>,
    verdicts: &[Verdict],
    maps: &[Vec<f32>],
    kept: Vec<DynamicImage>,
) -> Reply {
    let mut kept = kept.into_iter();
    let items: Result<Vec<Value>, ApiError> = names
        .into_iter()
        .enumerate()
        .map(|(k, name)| {
            let verdict = verdicts[k];
            let mut v = json!({
                "name": name,
                "score": verdict.score,
                "p_value": verdict.p_value,
                "is_anomaly": verdict.is_anomaly,
            });
            if let Some(image) = kept.next() {
                let png = encode_image(
                    &DynamicImage::ImageRgb8(detector.heatmap(&image, &maps[k])),
                    ImageFormat::Png,
                )
                .map_err(|_| ApiError::internal())?;
                v["map_png"] = json!(base64::engine::general_purpose::STANDARD.encode(png));
            }
            Ok(v)
        })
        .collect();
    items.map(|items| {
        Answer::Json(json!({ "threshold": detector.meta().calibration.threshold, "items": items }))
    })
}

/// The answer to heatmaps over [`MAX_MAP_PIXELS`] in one request.
fn map_too_large() -> ApiError {
    ApiError::too_large(format!(
        "heatmaps of at most {} megapixels per request; send fewer or smaller images, or \
         leave out map=true",
        MAX_MAP_PIXELS / 1_000_000
    ))
}

fn encode_images(detector: &Detector, uploads: Vec<Upload>) -> Reply {
    detector
        .check_codes()
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let (inputs, _) = prepare(detector, &uploads, false)?;
    let per_image = detector.meta().prep.len();
    let latent = detector.meta().spec.latent;
    let mut codes = Vec::with_capacity(uploads.len() * latent);
    for chunk in inputs.chunks(MAX_BATCH * per_image) {
        codes.extend(detector.encode_inputs(chunk.to_vec(), chunk.len() / per_image));
    }
    let items: Vec<Value> = uploads
        .iter()
        .zip(codes.chunks(latent))
        .map(|(u, code)| json!({ "name": u.name, "code": code }))
        .collect();
    Ok(Answer::Json(json!({ "latent": latent, "items": items })))
}

/// The model's features of a rows body; errors name the row and column.
fn rows_of(table: &TableModel, body: RowsBody) -> Result<Rows, ApiError> {
    let features = &table.meta().prep.features;
    let (header, cells, by_position): (Vec<String>, Vec<Cell>, bool) =
        body.into_cells(features, table.meta().prep.id_column.as_deref())?;
    table
        .rows_from_cells(&header, cells, by_position, &PathBuf::from("request"))
        .map_err(|e| ApiError::unprocessable(e.to_string()))
}

/// One scored row of an answer.
#[derive(serde::Serialize)]
struct RowVerdict<'a> {
    id: &'a str,
    score: f32,
    p_value: f64,
    is_anomaly: bool,
    explain: Vec<Share<'a>>,
}

#[derive(serde::Serialize)]
struct Share<'a> {
    feature: &'a str,
    share: f32,
}

#[derive(serde::Serialize)]
struct Items<T> {
    #[serde(skip_serializing_if = "Option::is_none")]
    threshold: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    latent: Option<usize>,
    items: Vec<T>,
}

fn written<T: serde::Serialize>(items: &Items<T>, scored: usize, flagged: usize) -> Reply {
    let json = serde_json::to_vec(items).map_err(|_| ApiError::internal())?;
    Ok(Answer::Written {
        json,
        scored,
        flagged,
    })
}

fn score_rows(table: &TableModel, body: RowsBody) -> Reply {
    let rows = rows_of(table, body)?;
    let features = &table.meta().prep.features;
    let scored = table.score_rows(&rows);
    let items: Vec<RowVerdict<'_>> = scored
        .iter()
        .map(|row| {
            let mut order: Vec<usize> = (0..row.shares.len()).collect();
            order.sort_by(|&a, &b| row.shares[b].total_cmp(&row.shares[a]));
            RowVerdict {
                id: &row.id,
                score: row.score,
                p_value: row.p_value,
                is_anomaly: row.is_anomaly,
                explain: order
                    .iter()
                    .take(EXPLAIN)
                    .map(|&j| Share {
                        feature: &features[j],
                        share: row.shares[j],
                    })
                    .collect(),
            }
        })
        .collect();
    let flagged = items.iter().filter(|i| i.is_anomaly).count();
    let n = items.len();
    let answer = Items {
        threshold: Some(table.meta().calibration.threshold),
        latent: None,
        items,
    };
    written(&answer, n, flagged)
}

/// One row's code in an answer.
#[derive(serde::Serialize)]
struct RowCode<'a> {
    id: &'a str,
    code: &'a [f32],
}

fn encode_rows(table: &TableModel, body: RowsBody) -> Reply {
    let rows = rows_of(table, body)?;
    let latent = table.meta().spec.latent;
    let codes = table.encode_rows(&rows);
    let items: Vec<RowCode<'_>> = rows
        .ids
        .iter()
        .zip(codes.chunks(latent))
        .map(|(id, code)| RowCode { id, code })
        .collect();
    let answer = Items {
        threshold: None,
        latent: Some(latent),
        items,
    };
    written(&answer, 0, 0)
}

fn denoise(denoiser: &Denoiser, upload: Upload, gone: &dyn Fn() -> bool) -> Reply {
    let (img, format) = decode_upload(&upload, MAX_DENOISE_PIXELS)?;
    let planes = Planes::from_image(&img);
    // Stopped between tiles once the client has its answer (a 504) or has left.
    let Some(values) = denoiser.denoise_planes_until(&planes, gone) else {
        return Err(ApiError::new(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            "stopped: the client had already gone".into(),
        ));
    };
    let clean = planes.to_image(&values);
    // Formats the image crate reads but cannot write in this pixel layout come back as PNG.
    let (bytes, format) = match encode_image(&clean, format) {
        Ok(bytes) => (bytes, format),
        Err(_) => (
            encode_image(&clean, ImageFormat::Png).map_err(|_| ApiError::internal())?,
            ImageFormat::Png,
        ),
    };
    Ok(Answer::Image { bytes, format })
}

/// Denoises a WAV upload into a WAV file of the same format, rate, channels and length.
fn denoise_audio(denoiser: &AudioDenoiser, upload: Upload) -> Reply {
    let name = Path::new(&upload.name);
    let audio = bottleneck::data::audio::Audio::from_wav_bytes(&upload.bytes, name)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    let clean = denoiser
        .denoise_audio(&audio)
        .map_err(|e| ApiError::unprocessable(e.to_string()))?;
    Ok(Answer::Wav(
        clean.to_wav_bytes().map_err(|_| ApiError::internal())?,
    ))
}

/// Scores WAV uploads: each a verdict, or no score and the reason (silent, too short); a
/// file that is not a readable WAV is a 422 naming it. Decoded audio is bounded by the body
/// limit (a sample takes at least one byte of the body).
fn score_audio(detector: &AudioDetector, uploads: Vec<Upload>) -> Reply {
    let cal = &detector.meta().calibration;
    let mut items = Vec::with_capacity(uploads.len());
    for upload in uploads {
        let name = Path::new(&upload.name);
        let audio = bottleneck::data::audio::Audio::from_wav_bytes(&upload.bytes, name)
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        let scored = detector
            .score_audio(name, &audio)
            .map_err(|e| ApiError::unprocessable(e.to_string()))?;
        items.push(match scored.result {
            Ok(s) => json!({
                "name": upload.name,
                "score": s.score,
                "p_value": s.p_value,
                "is_anomaly": s.is_anomaly,
            }),
            Err(why) => json!({
                "name": upload.name,
                "score": null,
                "note": why.to_string(),
            }),
        });
    }
    Ok(Answer::Json(json!({
        "threshold": cal.threshold,
        "items": items,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str) -> (Job, oneshot::Receiver<Reply>) {
        let (reply, answer) = oneshot::channel();
        let task = Task::Denoise(Upload {
            name: name.into(),
            bytes: axum::body::Bytes::from_static(b"x"),
        });
        (Job { task, reply }, answer)
    }

    fn name_of(task: &Task) -> String {
        match task {
            Task::Denoise(u) => u.name.clone(),
            _ => String::new(),
        }
    }

    #[test]
    fn a_panicking_request_fails_alone_and_the_rest_of_its_batch_is_answered() {
        let (jobs, answers): (Vec<Job>, Vec<_>) = ["a", "poison", "c"].into_iter().map(job).unzip();
        run_guarded(jobs, |tasks, _| {
            let names: Vec<String> = tasks.iter().map(name_of).collect();
            assert!(!names.iter().any(|n| n == "poison"), "bad input");
            names
                .into_iter()
                .map(|n| Ok(Answer::Json(json!({ "name": n }))))
                .collect()
        });
        let got: Vec<Result<String, u16>> = answers
            .into_iter()
            .map(
                |mut rx| match rx.try_recv().expect("every job is answered") {
                    Ok(Answer::Json(v)) => Ok(v["name"].as_str().unwrap_or("").to_string()),
                    Ok(Answer::Image { .. } | Answer::Written { .. } | Answer::Wav(_)) => {
                        Ok(String::new())
                    }
                    Err(e) => Err(e.status.as_u16()),
                },
            )
            .collect();
        assert_eq!(got, vec![Ok("a".into()), Err(500), Ok("c".into())]);
    }
}
