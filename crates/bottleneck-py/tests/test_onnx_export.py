"""`bottleneck export`: every kind of model, exported to ONNX, checked by onnx.checker and run
by onnxruntime on the inputs `bottleneck score`, `encode` and `denoise` were given, must give
their numbers: scores within 1e-4 of their scale, maps within 1e-4, codes within 1e-5,
the same p-values and verdicts. The steps the graphs leave outside (decoding, the STFT and its inverse) are done
here in numpy exactly as the README's Export section describes them."""

import csv
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from PIL import Image
from scipy.io import wavfile

import bottleneck_ae as bae
from test_bottleneck_ae import COLUMNS, board, cli, hum, read_scores, sensor_rows, write_csv


def export(model_path, tmp_path, name):
    out = tmp_path / f"{name}.onnx"
    cli("export", model_path, "-o", out)
    model = onnx.load(out)
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    meta = {p.key: p.value for p in model.metadata_props}
    return ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]), meta


def run(session, **inputs):
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, inputs)))


def worst(a, b, scale=1.0):
    """The largest difference, over `scale` (printed under `pytest -s` for the records)."""
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max() / scale)


def assert_verdicts_match(got, scores, p_values, flags):
    print(f"  score diff / scale {worst(got['score'], scores, max(1.0, float(np.abs(scores).max()))):.1e}")
    # Relative to the scores' scale: most scores are standardised (in units of their spread
    # on the training data), so one near 0 carries the absolute error of its neighbours.
    scale = max(1.0, float(np.abs(scores).max()))
    np.testing.assert_allclose(got["score"], scores, rtol=1e-4, atol=1e-4 * scale)
    np.testing.assert_allclose(got["p_value"], p_values, rtol=1e-12)
    np.testing.assert_array_equal(got["is_anomaly"], flags)


def read_codes(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return np.array([[float(v) for v in r[1:]] for r in rows[1:]], dtype=np.float32)


def write_images(folder, images):
    folder.mkdir()
    for i, img in enumerate(images):
        Image.fromarray(img).save(folder / f"{i:02}.png")


@pytest.mark.parametrize(
    "flags, colour",
    [
        # The defaults: SSIM maps, standardised per pixel, top-1% reduction, the latent kNN
        # part when the training images' check keeps it.
        ([], False),
        # Squared-error maps, the maximum, no kNN part, no smoothing, colour.
        (["--loss", "mse", "--reduce", "max", "--knn", "0", "--smoothing", "0"], True),
        # Maps not standardised, the mean of the top 5%, the kNN part given (so it is in the
        # graph whatever the check would say). After 3 epochs the two networks disagree on
        # the defects (each network's rank counts): ask 0.2 so both verdicts occur.
        (["--raw-maps", "--reduce", "top5", "--fpr", "0.2", "--knn", "5"], False),
        # 40 images of 32 px train a cross-conformal ensemble of 2 networks by default (both
        # in the graph); --folds 1 is one network with a held-out split.
        (["--folds", "1"], False),
        # A discriminative head in each of the 2 networks, its map joined with the error's.
        (["--head", "segment", "--fpr", "0.2"], True),
    ],
)
def test_image_detector_scores_maps_and_codes_match(tmp_path, flags, colour):
    def picture(i, defect=False):
        g = board(i * 0.3, defect=defect)
        return np.stack([g, np.roll(g, 3, axis=1), 255 - g], axis=-1) if colour else g

    write_images(tmp_path / "good", [picture(i) for i in range(40)])
    cli("train", tmp_path / "good", "-o", tmp_path / "img.safetensors", "--epochs", "3",
        "--width", "8", *flags)
    test = tmp_path / "test"
    test.mkdir()
    images = [picture(50 + i, defect=i % 2 == 1) for i in range(6)]
    for i, img in enumerate(images):
        Image.fromarray(img).save(test / f"{i}.png")
    cli("score", tmp_path / "img.safetensors", test, "-o", tmp_path / "s.csv", "--maps", tmp_path / "maps")
    cli("encode", tmp_path / "img.safetensors", test, "-o", tmp_path / "codes.csv")
    scores, p_values, verdicts, rows = read_scores(tmp_path / "s.csv")
    assert [r["path"] for r in rows] == [f"{i}.png" for i in range(6)]

    session, meta = export(tmp_path / "img.safetensors", tmp_path, "img")
    stored = json.loads(meta["bottleneck"])
    assert stored["task"] == "detect"
    assert len(stored["calibration"].get("folds", [])) == (0 if "--folds" in flags else 2)
    assert float(meta["threshold"]) == np.float32(stored["calibration"]["threshold"])
    x = np.stack([np.asarray(img, np.float32) / np.float32(255) for img in images])
    x = x.transpose(0, 3, 1, 2) if colour else x[:, None]
    got = run(session, image=np.ascontiguousarray(x))
    assert_verdicts_match(got, scores, p_values, verdicts)
    assert verdicts.any() and not verdicts.all(), "the test set should hold both verdicts"
    cli_maps = np.stack([np.load(tmp_path / "maps" / f"{i}_map.npy") for i in range(6)])
    np.testing.assert_allclose(got["map"], cli_maps, rtol=1e-4, atol=1e-4)
    codes = read_codes(tmp_path / "codes.csv")
    np.testing.assert_allclose(got["code"], codes, rtol=1e-5, atol=1e-5)
    print(f"  map diff {worst(got['map'], cli_maps):.1e}, code diff {worst(got['code'], codes):.1e}")
    # The batch dimension is free: one image at a time gives the same numbers.
    one = run(session, image=np.ascontiguousarray(x[3:4]))
    np.testing.assert_allclose(one["score"], got["score"][3:4], rtol=1e-5)


# 300 rows: by default a cross-conformal ensemble of 5 networks, all of them in the graph;
# --folds 1 is one network with a held-out split.
@pytest.mark.parametrize("flags", [[], ["--vae", "--elbo", "--batch-norm"], ["--folds", "1"]])
def test_table_detector_scores_rows_with_gaps_like_the_cli(tmp_path, flags):
    write_csv(tmp_path / "normal.csv", sensor_rows(300, seed=1))
    cli("train", tmp_path / "normal.csv", "-o", tmp_path / "t.safetensors", "--epochs", "20", *flags)
    test = np.vstack([sensor_rows(20, seed=2), sensor_rows(20, seed=3, faulty=True)]).astype(np.float32)
    test[::7, 1] = np.nan
    test[3, 4] = np.nan
    write_csv(tmp_path / "test.csv", test)
    cli("score", tmp_path / "t.safetensors", tmp_path / "test.csv", "-o", tmp_path / "s.csv")
    cli("encode", tmp_path / "t.safetensors", tmp_path / "test.csv", "-o", tmp_path / "codes.csv")
    scores, p_values, verdicts, _ = read_scores(tmp_path / "s.csv")

    session, meta = export(tmp_path / "t.safetensors", tmp_path, "table")
    # From Python, the same file as the CLI's, byte for byte.
    bae.load(tmp_path / "t.safetensors").export_onnx(tmp_path / "py.onnx")
    assert (tmp_path / "py.onnx").read_bytes() == (tmp_path / "table.onnx").read_bytes()
    stored = json.loads(meta["bottleneck"])
    assert stored["prep"]["features"] == COLUMNS
    assert len(stored["calibration"].get("folds", [])) == (0 if "--folds" in flags else 5)
    got = run(session, rows=test)
    assert_verdicts_match(got, scores, p_values, verdicts)
    assert verdicts.any() and not verdicts.all()
    codes = read_codes(tmp_path / "codes.csv")
    np.testing.assert_allclose(got["code"], codes, rtol=1e-5, atol=1e-5)
    print(f"  code diff {worst(got['code'], codes):.1e}")
    assert (got["errors"][np.isnan(test)] == 0).all()


def power_spectrum(x, n_fft, hop):
    """|STFT|^2 as the graphs take it: frames centred on multiples of the hop, the signal
    zero-padded by n_fft / 2 on both sides, a periodic Hann window."""
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    padded = np.pad(x.astype(np.float32), n_fft // 2)
    frames = 1 + len(x) // hop
    idx = np.arange(n_fft)[None, :] + hop * np.arange(frames)[:, None]
    spectrum = np.fft.rfft(padded[idx] * window, axis=1)
    return spectrum, window


@pytest.mark.parametrize(
    "flags",
    # The default (mean over the inputs, joined with the band-normalised part), and the plain
    # error's mean of the top 10% of inputs (k known only when the graph runs).
    [[], ["--raw-maps", "--reduce", "top10"]],
)
def test_audio_detector_from_power_spectra(tmp_path, flags):
    rate = 16000
    (tmp_path / "train").mkdir()
    for seed in range(20):
        wavfile.write(tmp_path / "train" / f"{seed:02}.wav", rate, hum(1.0, rate, seed))
    cli("train", tmp_path / "train", "-o", tmp_path / "a.safetensors", "--epochs", "3",
        "--n-mels", "32", *flags)
    folder = tmp_path / "wav"
    folder.mkdir()
    clips = [hum(1.0 + 0.25 * i, rate, 100 + i, fault=i % 2 == 1) for i in range(4)]
    for i, x in enumerate(clips):
        wavfile.write(folder / f"{i}.wav", rate, x)
    cli("score", tmp_path / "a.safetensors", folder, "-o", tmp_path / "s.csv", "--maps", tmp_path / "maps")
    scores, p_values, verdicts, _ = read_scores(tmp_path / "s.csv")

    session, meta = export(tmp_path / "a.safetensors", tmp_path, "audio")
    mel = json.loads(meta["bottleneck"])["features"]["mel"]
    for i, x in enumerate(clips):
        spectrum, _ = power_spectrum(x, mel["n_fft"], mel["hop"])
        power = (np.abs(spectrum) ** 2).astype(np.float32)
        got = run(session, power=power)
        assert_verdicts_match(got, scores[i : i + 1], p_values[i : i + 1], verdicts[i : i + 1])
        # The CLI writes bands by frames (an image of the recording); the graph frames by bands.
        cli_map = np.load(tmp_path / "maps" / f"{i}_map.npy").T
        assert got["map"].shape == (power.shape[0], mel["n_mels"]) == cli_map.shape
        np.testing.assert_allclose(got["map"], cli_map, rtol=1e-4, atol=1e-4)
        margin = np.abs(got["map"] - cli_map) / (1e-4 + 1e-4 * np.abs(cli_map))
        print(f"  map diff {worst(got['map'], cli_map):.1e} ({margin.max():.2f} of the tolerance)")
    assert verdicts.any() and not verdicts.all()


def test_image_denoiser_matches_the_cli_on_whole_images(tmp_path):
    write_images(tmp_path / "good", [board(i * 0.7, size=48) for i in range(12)])
    cli("train", tmp_path / "good", "--task", "denoise", "-o", tmp_path / "d.safetensors",
        "--noise", "gaussian:0.1", "--epochs", "20", "--width", "8", "--patch", "32")
    rng = np.random.default_rng(3)
    noisy_dir = tmp_path / "noisy"
    noisy_dir.mkdir()
    # 16-bit files, so the CLI's output is quantised 30 times finer than the tolerance;
    # sizes that are not multiples of the network's stride, one not square.
    sizes = [(48, 48), (45, 61)]
    inputs = []
    for i, (h, w) in enumerate(sizes):
        img = np.clip(board(i * 1.3, size=64)[:h, :w] / 255 + rng.normal(0, 0.1, (h, w)), 0, 1)
        pixels = np.round(img * 65535).astype(np.uint16)
        Image.fromarray(pixels).save(noisy_dir / f"{i}.png")
        inputs.append(pixels.astype(np.float32) / np.float32(65535))
    cli("denoise", tmp_path / "d.safetensors", noisy_dir, "-o", tmp_path / "clean")

    session, _ = export(tmp_path / "d.safetensors", tmp_path, "denoise")
    for i, x in enumerate(inputs):
        (out,) = session.run(None, {"image": x[None, None]})
        cli_out = np.asarray(Image.open(tmp_path / "clean" / f"{i}.png"), np.float64) / 65535
        assert out.shape == (1, 1) + x.shape
        np.testing.assert_allclose(out[0, 0], cli_out, atol=1e-4)
        print(f"  denoised diff {worst(out[0, 0], cli_out):.1e}")
        assert np.abs(out[0, 0] - x).mean() > 0.003, "the denoiser should change the image"
    # A grayscale model cleans a colour image plane by plane, in the graph as in the library.
    rgb = np.stack([inputs[0], inputs[0][::-1], 1 - inputs[0]], axis=-1)
    (out,) = session.run(None, {"image": np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])})
    library = bae.load(tmp_path / "d.safetensors").transform(rgb[None])
    np.testing.assert_allclose(out[0].transpose(1, 2, 0), library[0], atol=1e-4)
    print(f"  colour denoised diff {worst(out[0].transpose(1, 2, 0), library[0]):.1e}")


def test_audio_denoiser_gain_rebuilds_the_cli_output(tmp_path):
    rate = 8000
    (tmp_path / "train").mkdir()
    for seed in range(8):
        wavfile.write(tmp_path / "train" / f"{seed}.wav", rate, hum(2.0, rate, seed))
    cli("train", tmp_path / "train", "--task", "denoise", "-o", tmp_path / "ad.safetensors",
        "--noise", "white:0.03", "--n-fft", "256", "--hop", "64", "--epochs", "10")
    rng = np.random.default_rng(1)
    noisy = (hum(1.5, rate, 50) + 0.03 * rng.normal(size=int(1.5 * rate))).astype(np.float32)
    (tmp_path / "in").mkdir()
    # Float WAV in, float WAV out: the CLI's samples are not rounded.
    wavfile.write(tmp_path / "in" / "n.wav", rate, noisy)
    cli("denoise", tmp_path / "ad.safetensors", tmp_path / "in", "-o", tmp_path / "out")
    _, cli_out = wavfile.read(tmp_path / "out" / "n.wav")
    assert cli_out.dtype == np.float32

    session, meta = export(tmp_path / "ad.safetensors", tmp_path, "audio_denoise")
    f = json.loads(meta["bottleneck"])["features"]
    n_fft, hop = f["n_fft"], f["hop"]
    spectrum, window = power_spectrum(noisy, n_fft, hop)
    (gain,) = session.run(None, {"power": (np.abs(spectrum) ** 2).astype(np.float32)})
    assert gain.shape == spectrum.shape and 0 <= gain.min() and gain.max() <= 1
    # The inverse STFT: windowed inverse FFTs overlap-added, divided by the summed squared
    # window, the half-frame padding dropped.
    frames = np.fft.irfft(spectrum * gain, n=n_fft, axis=1) * window
    out = np.zeros(len(noisy) + n_fft)
    weight = np.zeros(len(noisy) + n_fft)
    for t, frame in enumerate(frames):
        end = min(t * hop + n_fft, len(out))
        out[t * hop : end] += frame[: end - t * hop]
        weight[t * hop : end] += window[: end - t * hop] ** 2
    rebuilt = np.where(weight > 1e-8, out / np.where(weight > 1e-8, weight, 1), out)
    rebuilt = rebuilt[n_fft // 2 : n_fft // 2 + len(noisy)]
    np.testing.assert_allclose(rebuilt, cli_out, atol=1e-4)
    print(f"  signal diff {worst(rebuilt, cli_out):.1e}")
    assert np.abs(rebuilt - noisy).mean() > 1e-3, "the denoiser should change the signal"
