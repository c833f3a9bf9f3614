"""bottleneck_ae: autoencoders trained on normal data, from Python.

Anomaly detectors in PyOD's shape (``fit``, ``decision_function``, ``predict``,
``predict_proba``, ``decision_scores_``, ``threshold_``, ``labels_``) with conformal
p-values, and scikit-learn transformers (``Imputer``, ``Encoder``, ``Denoiser``). Models
are the ``bottleneck`` binary's model files: ``save`` here and ``bottleneck score`` there
give the same scores, and the other way round.

The import name is ``bottleneck_ae`` (distribution ``bottleneck-ae``), never
``bottleneck``: that name belongs to the NumPy accelerator pandas imports.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _core

__all__ = [
    "TableDetector",
    "ImageDetector",
    "AudioDetector",
    "Imputer",
    "Encoder",
    "Denoiser",
    "AudioDenoiser",
    "load",
]
__version__ = _core.__version__


def _params_json(estimator, names):
    """The estimator's params that are set (not None), as the library's params JSON."""
    params = {}
    for name in names:
        value = getattr(estimator, name)
        if value is None:
            continue
        if isinstance(value, tuple):
            value = list(value)
        params[name] = value
    return json.dumps(params)


class _Model(BaseEstimator):
    """What every class shares: the fitted model handle, saving, pickling."""

    # Constructor arguments that are the library's params (None keeps its default).
    _library_params: tuple = ()

    def _params(self):
        return _params_json(self, self._library_params)

    def save(self, path):
        """Writes the model file that ``bottleneck score`` (and :func:`load`) read."""
        check_is_fitted(self, "model_")
        self.model_.save(os.fspath(path))

    def export_onnx(self, path):
        """Writes the model as an ONNX graph that computes what scoring computes (what
        ``bottleneck export`` writes; see the README's Export section)."""
        check_is_fitted(self, "model_")
        self.model_.export_onnx(os.fspath(path))

    def __getstate__(self):
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "model.safetensors")
                model.save(path)
                with open(path, "rb") as f:
                    state["_model_bytes"] = f.read()
        return state

    def __setstate__(self, state):
        data = state.pop("_model_bytes", None)
        self.__dict__.update(state)
        if data is not None:
            with tempfile.TemporaryDirectory() as d:
                path = os.path.join(d, "model.safetensors")
                with open(path, "wb") as f:
                    f.write(data)
                self.model_ = _core.load(path)


def _check_rows(X, estimator, reset):
    """X as a float32 (n, d) array checked as scikit-learn checks it (missing cells as NaN
    allowed, infinities refused), feature names and count remembered on ``reset`` and held
    to afterwards."""
    X = validate_data(
        estimator,
        X,
        reset=reset,
        dtype=[np.float32, np.float64],
        ensure_all_finite="allow-nan",
        ensure_min_samples=2 if reset else 1,
    )
    return np.ascontiguousarray(X, dtype=np.float32)


class _TableModel(_Model):
    _library_params = (
        "latent",
        "hidden",
        "variational",
        "epochs",
        "batch_size",
        "learning_rate",
        "seed",
        "fpr",
        "contamination",
        "calibration_fraction",
        "folds",
        "mask_rate",
    )

    def __init__(
        self,
        *,
        contamination=None,
        fpr=None,
        calibration_fraction=None,
        folds=None,
        latent=None,
        hidden=None,
        variational=None,
        epochs=None,
        batch_size=None,
        learning_rate=None,
        mask_rate=None,
        seed=None,
    ):
        self.contamination = contamination
        self.fpr = fpr
        self.calibration_fraction = calibration_fraction
        self.folds = folds
        self.latent = latent
        self.hidden = hidden
        self.variational = variational
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.mask_rate = mask_rate
        self.seed = seed

    def _fit_rows(self, X):
        X = _check_rows(X, self, reset=True)
        self.model_ = _core.fit_table(X, self._columns(), self._params())
        return X

    def _columns(self):
        """The feature names seen in ``fit`` (a DataFrame's columns), which the model file
        keeps so ``bottleneck score`` finds them in a CSV; None for a bare array (columns
        ``x0, x1, ...``, taken by position)."""
        names = getattr(self, "feature_names_in_", None)
        return None if names is None else [str(n) for n in names]

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True
        return tags


class _TableTransformer(TransformerMixin, _TableModel):
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # The networks compute in float32 and give float32 whatever comes in.
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


class _Detector(_Model):
    """PyOD's ``BaseDetector`` surface over a model that scores samples."""

    def _verdicts(self, X):
        raise NotImplementedError

    def _finish_fit(self, X):
        self.threshold_ = float(self.model_.threshold)
        self.decision_scores_, _, flags = self._verdicts(X)
        self.labels_ = flags.astype(int)
        return self

    def decision_function(self, X):
        """Anomaly score of each sample (higher is more anomalous)."""
        check_is_fitted(self, "model_")
        return self._verdicts(X)[0]

    def p_values(self, X):
        """Conformal p-value of each sample against the held-out normal samples: under
        normal data, P(p <= a) <= a (for a cross-conformal ensemble, P(p <= a) <= 2a in the
        worst case, and close to a in practice)."""
        check_is_fitted(self, "model_")
        return self._verdicts(X)[1]

    def predict(self, X, return_confidence=False):
        """1 for anomalous samples (p-value at most the calibrated rate: for one network,
        score above ``threshold_``), 0 for normal ones; with
        ``return_confidence`` also 1 - p-value, how sure the flag is."""
        check_is_fitted(self, "model_")
        _, p, flags = self._verdicts(X)
        labels = flags.astype(int)
        return (labels, 1.0 - p) if return_confidence else labels

    def predict_proba(self, X, method="linear"):
        """(n, 2) array of [normal, anomalous] probabilities. ``linear`` scales the score
        between the lowest and highest training score (PyOD's default); ``conformal`` gives
        1 - p-value as the anomalous one."""
        check_is_fitted(self, "model_")
        scores, p, _ = self._verdicts(X)
        if method == "linear":
            lo, hi = float(np.min(self.decision_scores_)), float(np.max(self.decision_scores_))
            anomalous = np.clip((scores - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        elif method == "conformal":
            anomalous = 1.0 - p
        else:
            raise ValueError(f"method must be 'linear' or 'conformal', not {method!r}")
        anomalous = np.asarray(anomalous, dtype=np.float64)
        return np.column_stack([1.0 - anomalous, anomalous])

    def fit_predict(self, X, y=None):
        return self.fit(X).labels_


class TableDetector(_TableModel, _Detector):
    """Anomaly detector for table rows: a dense autoencoder trained on normal rows, the
    score a row's reconstruction error, the threshold calibrated on held-out rows.

    ``X`` is a 2-D array (rows x features, NaN for a missing cell) or a DataFrame. Every
    parameter left at None takes the library's default (the ``bottleneck`` binary's).
    ``contamination`` flags that top share of the calibration scores (PyOD's rule);
    otherwise rows are flagged at p-value <= ``fpr`` (default 0.01).

    Up to 1,000 rows the default is a cross-conformal ensemble (``folds=5``): five
    networks, each trained without one fifth of the rows, so every row calibrates. The
    score is the networks' mean and a row is flagged by its cross-conformal p-value
    (``threshold_`` is then the flag of a row the networks score alike). ``folds=1``
    trains one network and holds out ``calibration_fraction`` of the rows.
    """

    def fit(self, X, y=None):
        self._fit_rows(X)
        return self._finish_fit(X)

    def _verdicts(self, X):
        return self.model_.score_table(_check_rows(X, self, reset=False), self._columns())

    def explain(self, X, k=3):
        """For each row, the ``k`` features with the largest share of its reconstruction
        error, as (name, share) pairs."""
        check_is_fitted(self, "model_")
        X = _check_rows(X, self, reset=False)
        return self.model_.explain_table(X, self._columns(), k)


def _images(X):
    """An array of images (uint8 or float32 in [0, 1]) or a list of paths, as the core
    takes them."""
    if isinstance(X, (list, tuple)) and X and isinstance(X[0], (str, os.PathLike)):
        return [os.fspath(p) for p in X]
    X = np.asarray(X)
    if np.iscomplexobj(X):
        raise ValueError("Complex data not supported: images are real numbers")
    if X.dtype != np.uint8:
        X = np.ascontiguousarray(X, dtype=np.float32)
    return X


class ImageDetector(_Detector):
    """Anomaly detector for images: a convolutional autoencoder trained on good images,
    scored by its anomaly map (SSIM error, smoothed, standardised per pixel) joined with the
    distance to the nearest training images in the bottleneck. With ``knn=None`` that
    distance is kept only when it ranks training images with synthetic defects above their
    clean versions better than chance (the model's ``training.latent_check``); ``knn=K``
    keeps it, ``knn=0`` leaves it out.

    ``X`` is an array ``(n, h, w)`` or ``(n, h, w, c)`` (uint8, or float in [0, 1]) or a
    list of image paths. Parameters left at None take the library's defaults.

    Up to 1,000 images of at most 32 pixels a side (network input) the default is a
    cross-conformal ensemble of two networks (``folds=2``), as for :class:`TableDetector`:
    every image calibrates against the network that did not train on it; the score and
    map are the networks' means. ``folds=5`` ranks a little higher in about three times
    the training time. ``folds=1`` (the default for larger inputs, where several
    trainings take too long) trains one network and holds out ``calibration_fraction`` of
    them.

    ``head="segment"`` also trains a discriminative head on synthetic anomalies drawn on
    the good images (DRAEM's Perlin blots, NSA's Poisson-blended patches); the map is
    then, pixel by pixel, the larger of the reconstruction error and the head's anomaly
    probability, each on its own scale.

    Images over 128 pixels are read in 64-pixel tiles at their own resolution (``tile``;
    ``scale``, at most 1, shrinks them first; images over 1,024 pixels are scaled down to
    1,024 by default) instead of being shrunk to one input: training reads random crops and
    scoring overlapping tiles, so defects a few pixels wide on large images stay visible.
    Tiled models have no nearest-neighbour part and no ``encode``; ``image_size=128``
    reads each image whole.
    """

    _library_params = (
        "head",
        "image_size",
        "tile",
        "scale",
        "latent",
        "width",
        "epochs",
        "batch_size",
        "learning_rate",
        "seed",
        "fpr",
        "contamination",
        "calibration_fraction",
        "folds",
        "knn",
    )

    def __init__(
        self,
        *,
        contamination=None,
        fpr=None,
        calibration_fraction=None,
        image_size=None,
        tile=None,
        scale=None,
        latent=None,
        width=None,
        epochs=None,
        batch_size=None,
        learning_rate=None,
        knn=None,
        folds=None,
        head=None,
        seed=None,
    ):
        self.head = head
        self.tile = tile
        self.scale = scale
        self.contamination = contamination
        self.fpr = fpr
        self.calibration_fraction = calibration_fraction
        self.folds = folds
        self.image_size = image_size
        self.latent = latent
        self.width = width
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.knn = knn
        self.seed = seed

    def fit(self, X, y=None):
        X = _images(X)
        self.model_ = _core.fit_images(X, self._params())
        return self._finish_fit(X)

    def _verdicts(self, X):
        return self.model_.score_images(_images(X))

    def encode(self, X):
        """Bottleneck code of each image, (n, latent)."""
        check_is_fitted(self, "model_")
        return self.model_.encode_images(_images(X))


def _recordings(X):
    """Recordings as the core takes them: a list of float32 arrays, or of paths. A 1-D array
    is one recording; a 2-D array is a batch of mono recordings of equal length, one per
    row; a 3-D array ``(n, samples, channels)`` a batch of multichannel ones."""
    if isinstance(X, (str, os.PathLike)):
        return [os.fspath(X)]
    if isinstance(X, np.ndarray) and X.ndim == 1:
        X = [X]
    X = list(X)
    if X and isinstance(X[0], (str, os.PathLike)):
        return [os.fspath(p) for p in X]
    out = []
    for x in X:
        x = np.asarray(x)
        if np.iscomplexobj(x):
            raise ValueError("Complex data not supported: recordings are real numbers")
        out.append(np.ascontiguousarray(x, dtype=np.float32))
    return out


class AudioDetector(_Detector):
    """Anomaly detector for machine sounds (the DCASE baseline's recipe): log-mel frames,
    a dense autoencoder, a recording's score the mean error of its frames.

    ``X`` is a list of recordings, each a float array ``(samples,)`` or ``(samples,
    channels)`` in [-1, 1] at ``sample_rate`` Hz, or a list of WAV paths.
    """

    _library_params = (
        "latent",
        "hidden",
        "context",
        "n_mels",
        "epochs",
        "batch_size",
        "learning_rate",
        "seed",
        "fpr",
        "contamination",
        "calibration_fraction",
    )

    def __init__(
        self,
        *,
        sample_rate=None,
        contamination=None,
        fpr=None,
        calibration_fraction=None,
        latent=None,
        hidden=None,
        context=None,
        n_mels=None,
        epochs=None,
        batch_size=None,
        learning_rate=None,
        seed=None,
    ):
        self.sample_rate = sample_rate
        self.contamination = contamination
        self.fpr = fpr
        self.calibration_fraction = calibration_fraction
        self.latent = latent
        self.hidden = hidden
        self.context = context
        self.n_mels = n_mels
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.seed = seed

    def fit(self, X, y=None):
        X = _recordings(X)
        self.model_ = _core.fit_audio(X, self.sample_rate, self._params())
        return self._finish_fit(X)

    def _verdicts(self, X):
        return self.model_.score_audio(_recordings(X), self.sample_rate)


class Imputer(_TableTransformer):
    """Fills missing cells (NaN) of table rows with a masked autoencoder trained on the
    rows given to ``fit`` (which may have gaps themselves). Observed cells come back
    unchanged."""

    def fit(self, X, y=None):
        self._fit_rows(X)
        return self

    def transform(self, X):
        check_is_fitted(self, "model_")
        return self.model_.impute(_check_rows(X, self, reset=False), self._columns())


class Encoder(_TableTransformer):
    """Dimensionality reduction: the bottleneck codes (``latent`` per row) of an
    autoencoder trained on the rows given to ``fit``."""

    def fit(self, X, y=None):
        self._fit_rows(X)
        return self

    def transform(self, X):
        check_is_fitted(self, "model_")
        return self.model_.encode_table(_check_rows(X, self, reset=False), self._columns())

    def get_feature_names_out(self, input_features=None):
        check_is_fitted(self, "model_")
        latent = json.loads(self.model_.meta_json())["spec"]["latent"]
        return np.asarray([f"code{i}" for i in range(latent)], dtype=object)


class Denoiser(TransformerMixin, _Model):
    """Removes noise from images with a U-Net trained on clean images.

    ``fit(X)`` trains on clean images ``X`` with synthetic ``noise`` (``mixed`` by default:
    gaussian, poisson, salt-and-pepper and speckle over wide ranges; or e.g.
    ``gaussian:0.1``); ``fit(X, y)`` trains on real pairs, noisy ``X`` and clean ``y``.
    ``transform(X)`` gives the denoised images in the form given: an array of the same shape
    and dtype, or for a list of paths a list of float arrays. Images are arrays ``(n, h, w)``
    or ``(n, h, w, c)``, uint8 or float in [0, 1] (gray float images are kept at 16 bits).
    """

    _library_params = (
        "noise",
        "width",
        "levels",
        "patch",
        "epochs",
        "batch_size",
        "learning_rate",
        "seed",
        "validation_fraction",
    )

    def __init__(
        self,
        *,
        noise=None,
        width=None,
        levels=None,
        patch=None,
        epochs=None,
        batch_size=None,
        learning_rate=None,
        validation_fraction=None,
        seed=None,
    ):
        self.noise = noise
        self.width = width
        self.levels = levels
        self.patch = patch
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.seed = seed

    def fit(self, X, y=None):
        if y is None:
            self.model_ = _core.fit_denoiser(_images(X), None, self._params())
        else:
            self.model_ = _core.fit_denoiser(_images(y), _images(X), self._params())
        return self

    def transform(self, X):
        check_is_fitted(self, "model_")
        return self.model_.denoise_images(_images(X))


class AudioDenoiser(TransformerMixin, _Model):
    """Removes noise from recordings: a dense network trained to mask the noise out of
    each magnitude spectrum, on clean recordings mixed with ``noise`` (``white:0.05`` by
    default; ``white:LOW-HIGH`` for a range; ``mix:DIR`` for noise recordings in a folder).

    ``X`` is a list of recordings, each a float array ``(samples,)`` or ``(samples,
    channels)`` in [-1, 1] at ``sample_rate`` Hz, or a list of WAV paths; ``transform``
    gives each back cleaned, same shape and rate, as float32.
    """

    _library_params = (
        "noise",
        "n_fft",
        "hop",
        "context",
        "hidden",
        "latent",
        "epochs",
        "batch_size",
        "learning_rate",
        "seed",
        "validation_fraction",
    )

    def __init__(
        self,
        *,
        sample_rate=None,
        noise=None,
        n_fft=None,
        hop=None,
        context=None,
        hidden=None,
        latent=None,
        epochs=None,
        batch_size=None,
        learning_rate=None,
        validation_fraction=None,
        seed=None,
    ):
        self.sample_rate = sample_rate
        self.noise = noise
        self.n_fft = n_fft
        self.hop = hop
        self.context = context
        self.hidden = hidden
        self.latent = latent
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_fraction = validation_fraction
        self.seed = seed

    def fit(self, X, y=None):
        self.model_ = _core.fit_audio_denoiser(_recordings(X), self.sample_rate, self._params())
        return self

    def transform(self, X):
        check_is_fitted(self, "model_")
        return self.model_.denoise_audio(_recordings(X), self.sample_rate)


_CLASSES = {
    "table-detector": TableDetector,
    "image-detector": ImageDetector,
    "audio-detector": AudioDetector,
    "image-denoiser": Denoiser,
    "audio-denoiser": AudioDenoiser,
}


def load(path):
    """Loads a model file written by ``save`` or by ``bottleneck train``, as the estimator
    of its kind (fitted; its parameters are the defaults, its model the file's)."""
    model = _core.load(os.fspath(path))
    cls = _CLASSES.get(model.kind)
    if cls is None:
        raise ValueError(f"{os.fspath(path)}: a {model.kind} model cannot be used from Python yet")
    estimator = cls()
    estimator.model_ = model
    if model.kind.endswith("detector"):
        estimator.threshold_ = float(model.threshold)
    if model.kind == "table-detector":
        features = model.features
        estimator.n_features_in_ = len(features)
        if not all(f == f"x{i}" for i, f in enumerate(features)):
            estimator.feature_names_in_ = np.asarray(features, dtype=object)
    return estimator
