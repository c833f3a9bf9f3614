//! `bottleneck_ae._core`: the library's models for Python, numpy in and out. The estimator
//! classes users see (PyOD and scikit-learn shapes) are in `python/bottleneck_ae`; this
//! module gives them one `Model` handle over any model kind and the functions that fit one.
//! Training and scoring run with the GIL released.

use std::path::PathBuf;
use std::sync::Mutex;

use bottleneck::data::audio::Audio;
use bottleneck::data::images::decode;
use bottleneck::model::file::ModelKind;
use bottleneck::progress::Silent;
use bottleneck::{
    AnomalyDetector, AudioDenoiseParams, AudioParams, DenoiseParams, DetectParams, Device, Encode,
    Error, Model as AnyModel, Table, TableParams, Transformer, Verdict,
};
use image::{DynamicImage, ImageBuffer};
use ndarray::{ArrayViewD, Axis};
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2, PyReadonlyArrayDyn, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyFileNotFoundError, PyOSError, PyTypeError, PyValueError};
use pyo3::prelude::*;

// As in the binary: training and scoring allocate and free large buffers every step, and
// mimalloc keeps them instead of returning them to the kernel (+20% training, +45% scoring
// with bench/throughput.sh; see `bottleneck::allocator`). It serves only this module's Rust
// allocations.
#[global_allocator]
static GLOBAL: bottleneck::allocator::Allocator = bottleneck::allocator::Allocator;

/// The library's error as the Python exception a user expects: missing files as
/// `FileNotFoundError`, other I/O as `OSError`, everything else as `ValueError`.
fn py_err(e: Error) -> PyErr {
    match e {
        Error::Missing { .. } => PyFileNotFoundError::new_err(e.to_string()),
        Error::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

fn device() -> Device {
    Device::flex()
}

/// Params of type `P` from a JSON object of the fields to change from `P::default()`;
/// an unknown or mistyped field is a `ValueError` naming it.
fn params<P: serde::de::DeserializeOwned>(json: &str) -> PyResult<P> {
    serde_json::from_str(json).map_err(|e| PyValueError::new_err(format!("params: {e}")))
}

/// A trained model of any kind.
#[pyclass(module = "bottleneck_ae._core", frozen)]
struct Model {
    inner: Mutex<AnyModel>,
}

impl Model {
    fn new(model: AnyModel) -> Self {
        Self {
            inner: Mutex::new(model),
        }
    }

    /// Runs `f` on the model with the GIL released.
    fn with<T: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&AnyModel) -> bottleneck::Result<T> + Send,
    ) -> PyResult<T> {
        py.detach(|| {
            let model = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            f(&model)
        })
        .map_err(py_err)
    }
}

/// Scores, p-values and flags as three numpy arrays.
type Verdicts<'py> = (
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<bool>>,
);

fn verdicts(py: Python<'_>, v: Vec<Verdict>) -> Verdicts<'_> {
    let scores: Vec<f32> = v.iter().map(|v| v.score).collect();
    let p: Vec<f64> = v.iter().map(|v| v.p_value).collect();
    let flags: Vec<bool> = v.iter().map(|v| v.is_anomaly).collect();
    (
        scores.into_pyarray(py),
        p.into_pyarray(py),
        flags.into_pyarray(py),
    )
}

fn wrong(model: &AnyModel, what: &str) -> Error {
    Error::Invalid(format!("{} cannot {what}", model.kind()))
}

/// A table from a 2-D float32 array and its column names (None: `x0, x1, ...`, matched by
/// position). The array is borrowed, not copied: a C-contiguous array whose columns are the
/// model's features in order is scored in place.
fn table<'a>(
    values: &'a PyReadonlyArray2<'_, f32>,
    columns: Option<Vec<String>>,
) -> PyResult<Table<'a>> {
    let values = values.as_array();
    match columns {
        Some(c) => Table::new(c, values).map_err(py_err),
        None => Ok(Table::unnamed(values)),
    }
}

/// Images from an array `(n, h, w)` or `(n, h, w, c)` of uint8 (0-255) or float32 (0-1),
/// with 1, 3 or 4 channels.
fn images_from_array(array: &Bound<'_, PyAny>) -> PyResult<Vec<DynamicImage>> {
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, u8>>() {
        return images_of(
            a.as_array(),
            |v| v,
            DynamicImage::ImageLuma8,
            |w, h, v| ImageBuffer::from_raw(w, h, v).map(DynamicImage::ImageRgb8),
            |w, h, v| ImageBuffer::from_raw(w, h, v).map(DynamicImage::ImageRgba8),
        );
    }
    if let Ok(a) = array.extract::<PyReadonlyArrayDyn<'_, f32>>() {
        let view = a.as_array();
        if let Some(bad) = view.iter().find(|v| !(0.0..=1.0).contains(*v)) {
            return Err(PyValueError::new_err(format!(
                "float images hold values in [0, 1]; found {bad} (scale uint8 images by \
                 1/255, or pass them as uint8)"
            )));
        }
        // Gray float images are kept at 16 bits (1/65535 steps), the finest gray the
        // image crate holds; colour ones exactly.
        return images_of(
            view,
            |v: f32| (v * 65535.0).round() as u16,
            DynamicImage::ImageLuma16,
            |w, h, v: Vec<f32>| ImageBuffer::from_raw(w, h, v).map(DynamicImage::ImageRgb32F),
            |w, h, v: Vec<f32>| ImageBuffer::from_raw(w, h, v).map(DynamicImage::ImageRgba32F),
        );
    }
    Err(PyTypeError::new_err(
        "images must be a uint8 or float32 array of shape (n, h, w) or (n, h, w, c), or a \
         list of paths",
    ))
}

/// Splits `view` into images: gray ones through `gray_value` into `gray`, colour ones
/// straight into `rgb` or `rgba`.
fn images_of<T, G>(
    view: ArrayViewD<'_, T>,
    gray_value: impl Fn(T) -> G,
    gray: impl Fn(ImageBuffer<image::Luma<G>, Vec<G>>) -> DynamicImage,
    rgb: impl Fn(u32, u32, Vec<T>) -> Option<DynamicImage>,
    rgba: impl Fn(u32, u32, Vec<T>) -> Option<DynamicImage>,
) -> PyResult<Vec<DynamicImage>>
where
    T: Copy,
    G: image::Primitive,
{
    let shape = view.shape().to_vec();
    let (h, w, c) = match shape[..] {
        [_, h, w] => (h, w, 1),
        [_, h, w, c] if matches!(c, 1 | 3 | 4) => (h, w, c),
        _ => {
            return Err(PyValueError::new_err(format!(
                "images must have shape (n, h, w) or (n, h, w, c) with c 1, 3 or 4; got {shape:?}"
            )));
        }
    };
    if h == 0 || w == 0 || h > 1 << 16 || w > 1 << 16 {
        return Err(PyValueError::new_err(format!(
            "image size {w}x{h} must be between 1 and 65536 on each side"
        )));
    }
    let (w32, h32) = (w as u32, h as u32);
    view.axis_iter(Axis(0))
        .map(|one| {
            let values: Vec<T> = one.iter().copied().collect();
            let img = match c {
                1 => ImageBuffer::from_raw(w32, h32, values.into_iter().map(&gray_value).collect())
                    .map(&gray),
                3 => rgb(w32, h32, values),
                _ => rgba(w32, h32, values),
            };
            img.ok_or_else(|| PyValueError::new_err("image buffer does not match its shape"))
        })
        .collect()
}

/// Decodes image files; errors name the file.
fn images_from_paths(paths: &[PathBuf]) -> bottleneck::Result<Vec<DynamicImage>> {
    paths.iter().map(|p| decode(p)).collect()
}

/// Images given as an array or a list of paths.
fn images(py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<Vec<DynamicImage>> {
    if let Ok(paths) = data.extract::<Vec<PathBuf>>() {
        return py.detach(|| images_from_paths(&paths)).map_err(py_err);
    }
    images_from_array(data)
}

/// Recordings given as 1-D (mono) or 2-D `(samples, channels)` float32 arrays in [-1, 1]
/// at `sample_rate`, or as paths of WAV files.
fn recordings(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    sample_rate: Option<u32>,
) -> PyResult<Vec<Audio>> {
    if let Ok(paths) = data.extract::<Vec<PathBuf>>() {
        return py
            .detach(|| {
                paths
                    .iter()
                    .map(|p| Audio::read(p))
                    .collect::<bottleneck::Result<Vec<_>>>()
            })
            .map_err(py_err);
    }
    let Some(rate) = sample_rate.filter(|&r| r > 0) else {
        return Err(PyValueError::new_err(
            "recordings given as arrays need their sample_rate (a positive number of Hz)",
        ));
    };
    let arrays: Vec<PyReadonlyArrayDyn<'_, f32>> = data.extract().map_err(|_| {
        PyTypeError::new_err(
            "recordings must be a list of float32 arrays (samples,) or (samples, channels), \
             or a list of WAV paths",
        )
    })?;
    arrays
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let view = a.as_array();
            let channels = match view.shape() {
                [_] => 1,
                [_, c] if (1..=64).contains(c) => *c,
                s => {
                    return Err(PyValueError::new_err(format!(
                        "recording {i}: shape {s:?}; give (samples,) or (samples, channels)"
                    )));
                }
            };
            Audio::from_samples(view.iter().copied().collect(), channels as u16, rate)
                .map_err(|e| PyValueError::new_err(format!("recording {i}: {e}")))
        })
        .collect()
}

#[pymethods]
impl Model {
    /// What kind of model this is: `image-detector`, `image-denoiser`, `table-detector`,
    /// `audio-detector` or `audio-denoiser`.
    #[getter]
    fn kind(&self) -> &'static str {
        let model = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        kind_name(model.kind())
    }

    /// The model's metadata (spec, preprocessing, calibration, training) as JSON.
    fn meta_json(&self) -> String {
        let model = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        model.meta_json().to_string()
    }

    /// The calibrated threshold: a sample is anomalous when its score is above it.
    #[getter]
    fn threshold(&self) -> PyResult<f32> {
        let model = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(calibration(&model)?.threshold)
    }

    /// The held-out normal scores behind the p-values, ascending.
    fn calibration_scores<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray1<f32>>> {
        let model = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(calibration(&model)?.scores.clone().into_pyarray(py))
    }

    /// The feature columns of a table model, in its order.
    #[getter]
    fn features(&self) -> PyResult<Vec<String>> {
        let model = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match &*model {
            AnyModel::TableDetector(t) => Ok(t.meta().prep.features.clone()),
            other => Err(py_err(wrong(other, "name table columns"))),
        }
    }

    /// Writes the model file `bottleneck score` reads, atomically.
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        self.with(py, |m| m.save(&path))
    }

    /// Writes the model as an ONNX graph (what `bottleneck export` writes), atomically.
    fn export_onnx(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        self.with(py, |m| bottleneck::export::export(m, &path).map(|_| ()))
    }

    /// Scores, p-values and flags of table rows.
    #[pyo3(signature = (values, columns=None))]
    fn score_table<'py>(
        &self,
        py: Python<'py>,
        values: PyReadonlyArray2<'py, f32>,
        columns: Option<Vec<String>>,
    ) -> PyResult<Verdicts<'py>> {
        let table = table(&values, columns)?;
        let v = self.with(py, |m| match m {
            AnyModel::TableDetector(t) => t.score(&table),
            other => Err(wrong(other, "score table rows")),
        })?;
        Ok(verdicts(py, v))
    }

    /// The `k` columns that explain each row's score most, with their share of its error.
    #[pyo3(signature = (values, columns=None, k=3))]
    fn explain_table(
        &self,
        py: Python<'_>,
        values: PyReadonlyArray2<'_, f32>,
        columns: Option<Vec<String>>,
        k: usize,
    ) -> PyResult<Vec<Vec<(String, f32)>>> {
        let table = table(&values, columns)?;
        self.with(py, |m| match m {
            AnyModel::TableDetector(t) => {
                let rows = table.rows(&t.meta().prep.features, false)?;
                Ok(t.score_rows(&rows)
                    .iter()
                    .map(|row| {
                        t.explain(row, k)
                            .into_iter()
                            .map(|(name, share)| (name.to_string(), share))
                            .collect()
                    })
                    .collect())
            }
            other => Err(wrong(other, "explain table rows")),
        })
    }

    /// Bottleneck codes of table rows, `rows x latent`.
    #[pyo3(signature = (values, columns=None))]
    fn encode_table<'py>(
        &self,
        py: Python<'py>,
        values: PyReadonlyArray2<'py, f32>,
        columns: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let table = table(&values, columns)?;
        let codes = self.with(py, |m| match m {
            AnyModel::TableDetector(t) => t.encode(&table),
            other => Err(wrong(other, "encode table rows")),
        })?;
        Ok(codes.into_pyarray(py))
    }

    /// Table rows with their missing (NaN) cells filled, in the model's column order.
    #[pyo3(signature = (values, columns=None))]
    fn impute<'py>(
        &self,
        py: Python<'py>,
        values: PyReadonlyArray2<'py, f32>,
        columns: Option<Vec<String>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let table = table(&values, columns)?;
        let filled = self.with(py, |m| match m {
            AnyModel::TableDetector(t) => t.transform(&table),
            other => Err(wrong(other, "fill table cells")),
        })?;
        Ok(filled.into_pyarray(py))
    }

    /// Scores, p-values and flags of images (an array or a list of paths).
    fn score_images<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Verdicts<'py>> {
        let imgs = images(py, data)?;
        let v = self.with(py, |m| match m {
            AnyModel::ImageDetector(d) => d.score(&imgs),
            other => Err(wrong(other, "score images")),
        })?;
        Ok(verdicts(py, v))
    }

    /// Bottleneck codes of images, `images x latent`.
    fn encode_images<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let imgs = images(py, data)?;
        let codes = self.with(py, |m| match m {
            AnyModel::ImageDetector(d) => d.encode(&imgs),
            other => Err(wrong(other, "encode images")),
        })?;
        Ok(codes.into_pyarray(py))
    }

    /// Denoised images, in the form they came in: an array of the same shape and dtype
    /// (uint8 stays uint8), or for paths a list of float32 arrays `(h, w)` or `(h, w, c)`.
    fn denoise_images<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let as_array = data.extract::<Vec<PathBuf>>().is_err();
        let imgs = images(py, data)?;
        let out = self.with(py, |m| match m {
            AnyModel::ImageDenoiser(d) => d.transform(&imgs),
            other => Err(wrong(other, "denoise images")),
        })?;
        if as_array {
            let shape: Vec<usize> = data.getattr("shape")?.extract()?;
            if data.extract::<PyReadonlyArrayDyn<'_, u8>>().is_ok() {
                let flat: Vec<u8> = out.iter().flat_map(|img| img.as_bytes().to_vec()).collect();
                let a = ndarray::ArrayD::from_shape_vec(shape, flat)
                    .map_err(|e| PyValueError::new_err(e.to_string()))?;
                return Ok(a.into_pyarray(py).into_any());
            }
            let flat: Vec<f32> = out
                .iter()
                .flat_map(|img| float_pixels(img, shape.len()))
                .collect();
            let a = ndarray::ArrayD::from_shape_vec(shape, flat)
                .map_err(|e| PyValueError::new_err(e.to_string()))?;
            return Ok(a.into_pyarray(py).into_any());
        }
        let list: Vec<Bound<'py, PyAny>> = out
            .iter()
            .map(|img| {
                let (w, h) = (img.width() as usize, img.height() as usize);
                let c = img.color().channel_count() as usize;
                let shape = if c == 1 { vec![h, w] } else { vec![h, w, c] };
                let a = ndarray::ArrayD::from_shape_vec(
                    shape,
                    float_pixels(img, if c == 1 { 3 } else { 4 }),
                )
                .expect("pixels fill the image");
                a.into_pyarray(py).into_any()
            })
            .collect();
        Ok(pyo3::types::PyList::new(py, list)?.into_any())
    }

    /// Denoised recordings: for each, a float32 array of the input's shape (`(samples,)` or
    /// `(samples, channels)`) at the input's rate.
    #[pyo3(signature = (data, sample_rate=None))]
    fn denoise_audio<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        sample_rate: Option<u32>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let mono: Vec<bool> = match data.extract::<Vec<PyReadonlyArrayDyn<'py, f32>>>() {
            Ok(arrays) => arrays.iter().map(|a| a.ndim() == 1).collect(),
            Err(_) => Vec::new(),
        };
        let clips = recordings(py, data, sample_rate)?;
        let out = self.with(py, |m| match m {
            AnyModel::AudioDenoiser(d) => d.transform(&clips),
            other => Err(wrong(other, "denoise recordings")),
        })?;
        Ok(out
            .into_iter()
            .enumerate()
            .map(|(i, audio)| {
                let channels = audio.channels();
                let shape = if mono.get(i).copied().unwrap_or(channels == 1) {
                    vec![audio.samples.len()]
                } else {
                    vec![audio.samples.len() / channels, channels]
                };
                ndarray::ArrayD::from_shape_vec(shape, audio.samples)
                    .expect("samples fill the frames")
                    .into_pyarray(py)
                    .into_any()
            })
            .collect())
    }

    /// Scores, p-values and flags of recordings (arrays at `sample_rate`, or WAV paths).
    #[pyo3(signature = (data, sample_rate=None))]
    fn score_audio<'py>(
        &self,
        py: Python<'py>,
        data: &Bound<'py, PyAny>,
        sample_rate: Option<u32>,
    ) -> PyResult<Verdicts<'py>> {
        let clips = recordings(py, data, sample_rate)?;
        let v = self.with(py, |m| match m {
            AnyModel::AudioDetector(d) => d.score(&clips),
            other => Err(wrong(other, "score recordings")),
        })?;
        Ok(verdicts(py, v))
    }
}

/// The pixels of `img` as floats in [0, 1], interleaved; `dims` 3 means one gray value per
/// pixel, 4 every channel of the image.
fn float_pixels(img: &DynamicImage, dims: usize) -> Vec<f32> {
    let c = img.color().channel_count();
    match (dims, c) {
        (3, _) => img.to_luma32f().into_raw(),
        (_, 1) | (_, 2) => img.to_luma32f().into_raw(),
        (_, 3) => img.to_rgb32f().into_raw(),
        _ => img.to_rgba32f().into_raw(),
    }
}

fn calibration(model: &AnyModel) -> PyResult<&bottleneck::score::Calibration> {
    match model {
        AnyModel::ImageDetector(d) => Ok(d.calibration()),
        AnyModel::TableDetector(t) => Ok(t.calibration()),
        AnyModel::AudioDetector(a) => Ok(a.calibration()),
        other @ (AnyModel::ImageDenoiser(_) | AnyModel::AudioDenoiser(_)) => {
            Err(py_err(wrong(other, "give a threshold")))
        }
    }
}

fn kind_name(kind: ModelKind) -> &'static str {
    match kind {
        ModelKind::ImageDetector => "image-detector",
        ModelKind::ImageDenoiser => "image-denoiser",
        ModelKind::TableDetector => "table-detector",
        ModelKind::AudioDetector => "audio-detector",
        ModelKind::AudioDenoiser => "audio-denoiser",
    }
}

/// Loads any model file `bottleneck train` or `save` wrote.
#[pyfunction]
fn load(py: Python<'_>, path: PathBuf) -> PyResult<Model> {
    py.detach(|| AnyModel::load(&path, &device()))
        .map(Model::new)
        .map_err(py_err)
}

/// Loads a model from the bytes of its file (what a cluster ships to its workers).
#[pyfunction]
fn load_bytes(py: Python<'_>, data: Vec<u8>) -> PyResult<Model> {
    py.detach(|| AnyModel::from_bytes(std::path::Path::new("model bytes"), data, &device()))
        .map(Model::new)
        .map_err(py_err)
}

/// Trains a table anomaly detector on normal rows. `params` is a JSON object of
/// `TableParams` fields.
#[pyfunction]
#[pyo3(signature = (values, columns=None, params="{}"))]
fn fit_table(
    py: Python<'_>,
    values: PyReadonlyArray2<'_, f32>,
    columns: Option<Vec<String>>,
    params: &str,
) -> PyResult<Model> {
    let p: TableParams = self::params(params)?;
    let table = table(&values, columns)?;
    py.detach(|| bottleneck::TableModel::fit_table(&table, &p, &device(), &Silent))
        .map(|m| Model::new(AnyModel::TableDetector(Box::new(m))))
        .map_err(py_err)
}

/// Trains an image anomaly detector on good images (an array or a list of paths).
/// `params` is a JSON object of `DetectParams` fields.
#[pyfunction]
#[pyo3(signature = (data, params="{}"))]
fn fit_images(py: Python<'_>, data: &Bound<'_, PyAny>, params: &str) -> PyResult<Model> {
    let p: DetectParams = self::params(params)?;
    let imgs = images(py, data)?;
    py.detach(|| bottleneck::Detector::fit_images(&imgs, &p, &device(), &Silent))
        .map(|m| Model::new(AnyModel::ImageDetector(Box::new(m))))
        .map_err(py_err)
}

/// Trains an audio anomaly detector on normal recordings (arrays at `sample_rate`, or WAV
/// paths). `params` is a JSON object of `AudioParams` fields.
#[pyfunction]
#[pyo3(signature = (data, sample_rate=None, params="{}"))]
fn fit_audio(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    sample_rate: Option<u32>,
    params: &str,
) -> PyResult<Model> {
    let p: AudioParams = self::params(params)?;
    let clips = recordings(py, data, sample_rate)?;
    py.detach(|| bottleneck::AudioDetector::fit_clips(&clips, &p, &device(), &Silent))
        .map(|m| Model::new(AnyModel::AudioDetector(Box::new(m))))
        .map_err(py_err)
}

/// Trains an image denoiser on clean images (an array or a list of paths), with `noisy`
/// real noisy versions of them or, without, the noise `params` names. `params` is a JSON
/// object of `DenoiseParams` fields.
#[pyfunction]
#[pyo3(signature = (clean, noisy=None, params="{}"))]
fn fit_denoiser(
    py: Python<'_>,
    clean: &Bound<'_, PyAny>,
    noisy: Option<&Bound<'_, PyAny>>,
    params: &str,
) -> PyResult<Model> {
    let p: DenoiseParams = self::params(params)?;
    let clean = images(py, clean)?;
    let noisy = noisy.map(|n| images(py, n)).transpose()?;
    py.detach(|| bottleneck::Denoiser::fit_images(&clean, noisy.as_deref(), &p, &device(), &Silent))
        .map(|m| Model::new(AnyModel::ImageDenoiser(Box::new(m))))
        .map_err(py_err)
}

/// Trains an audio denoiser on clean recordings (arrays at `sample_rate`, or WAV paths)
/// mixed with the noise `params` names. `params` is a JSON object of `AudioDenoiseParams`
/// fields.
#[pyfunction]
#[pyo3(signature = (data, sample_rate=None, params="{}"))]
fn fit_audio_denoiser(
    py: Python<'_>,
    data: &Bound<'_, PyAny>,
    sample_rate: Option<u32>,
    params: &str,
) -> PyResult<Model> {
    let p: AudioDenoiseParams = self::params(params)?;
    let clips = recordings(py, data, sample_rate)?;
    py.detach(|| bottleneck::AudioDenoiser::fit_clips(&clips, &p, &device(), &Silent))
        .map(|m| Model::new(AnyModel::AudioDenoiser(Box::new(m))))
        .map_err(py_err)
}

/// The default params of each model kind, as JSON (what `get_params` shows).
#[pyfunction]
fn default_params(kind: &str) -> PyResult<String> {
    let value = match kind {
        "table" => serde_json::to_value(TableParams::default()),
        "images" => serde_json::to_value(DetectParams::default()),
        "audio" => serde_json::to_value(AudioParams::default()),
        "denoise" => serde_json::to_value(DenoiseParams::default()),
        "audio-denoise" => serde_json::to_value(AudioDenoiseParams::default()),
        other => {
            return Err(PyValueError::new_err(format!(
                "no params for '{other}' (table, images, audio)"
            )));
        }
    };
    Ok(value.expect("params are plain data").to_string())
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(load_bytes, m)?)?;
    m.add_function(wrap_pyfunction!(fit_table, m)?)?;
    m.add_function(wrap_pyfunction!(fit_images, m)?)?;
    m.add_function(wrap_pyfunction!(fit_audio, m)?)?;
    m.add_function(wrap_pyfunction!(fit_denoiser, m)?)?;
    m.add_function(wrap_pyfunction!(fit_audio_denoiser, m)?)?;
    m.add_function(wrap_pyfunction!(default_params, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
