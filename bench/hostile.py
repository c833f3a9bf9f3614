"""Hostile input against `bottleneck` (CLI and service); see bench/hostile.sh.

Every case says what a correct answer is: a clear error (exit 1 and one line on stderr naming
the file, or a 4xx/5xx JSON error from the service), or success with the right result. Each
outcome is counted as clear / crash (a panic, a signal, exit codes other than 0 and 1, a
hang) / silent wrong (success where refusal was due, or an input changed) / leftover (a
temporary file left behind). Peak RSS is measured per CLI case (wait4) and for the service
process (VmHWM).
"""

import argparse
import http.client
import io
import json
import os
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

TIMEOUT = 300


class Tally:
    def __init__(self):
        self.rows = defaultdict(lambda: defaultdict(int))
        self.rss = defaultdict(int)
        self.notes = []

    def add(self, cls, outcome, rss_kb=0, note=""):
        self.rows[cls]["cases"] += 1
        self.rows[cls][outcome] += 1
        self.rss[cls] = max(self.rss[cls], rss_kb)
        if outcome != "clear" and outcome != "ok":
            self.notes.append(f"{cls}: {outcome}: {note}")

    def print(self):
        cols = ["cases", "clear", "ok", "crash", "silent wrong", "leftover"]
        print("| class | " + " | ".join(cols) + " | peak RSS MB |")
        print("|---" * (len(cols) + 2) + "|")
        total = defaultdict(int)
        for cls, r in self.rows.items():
            for c in cols:
                total[c] += r[c]
            cells = " | ".join(str(r[c]) for c in cols)
            print(f"| {cls} | {cells} | {self.rss[cls] / 1024:.0f} |")
        print("| **all** | " + " | ".join(f"**{total[c]}**" for c in cols) + " | |")
        for n in self.notes:
            print("  -", n)


def run(bin_, args, timeout=TIMEOUT, env=None):
    """Exit code (negative: signal; None: hang), stderr and peak RSS (KB) of one run."""
    p = subprocess.Popen([bin_, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         env=env)
    out = {}

    def reader():
        out["err"] = p.stderr.read().decode(errors="replace")

    t = threading.Thread(target=reader)
    t.start()
    deadline = time.time() + timeout
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.time() > deadline:
            p.kill()
            pid, status, usage = os.wait4(p.pid, 0)
            t.join()
            return None, out.get("err", ""), usage.ru_maxrss
        time.sleep(0.02)
    t.join()
    code = os.waitstatus_to_exitcode(status)
    return code, out.get("err", ""), usage.ru_maxrss


def leftovers(*dirs):
    found = []
    for d in dirs:
        for p in Path(d).rglob("*.tmp"):
            found.append(str(p))
    return found


def classify(code, err, expect_error, needle=None):
    if code is None:
        return "crash", "hang"
    if code < 0 or code not in (0, 1) or "panicked" in err:
        return "crash", f"exit {code}: {err.strip()[-300:]}"
    if expect_error:
        if code == 0:
            return "silent wrong", "succeeded where it should refuse"
        lines = [l for l in err.strip().splitlines() if l.strip()]
        if not lines or not lines[-1].startswith("error:"):
            return "crash", f"no error line: {err[-300:]}"
        if needle and needle not in err:
            return "silent wrong", f"error does not name {needle}: {lines[-1]}"
        return "clear", ""
    return ("ok", "") if code == 0 else ("silent wrong", f"failed: {err.strip()[-300:]}")


def png_claiming(path, w, h):
    """A 1x1 PNG whose header claims w x h pixels."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    b[16:20] = struct.pack(">I", w)
    b[20:24] = struct.pack(">I", h)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])))
    Path(path).write_bytes(bytes(b))


def wav_bytes(rate=16000, seconds=1.0, bits=16):
    n = int(rate * seconds)
    data = (np.sin(np.arange(n) * 0.05) * 3000).astype("<i2").tobytes()
    return (b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVEfmt " +
            struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16) + b"data" +
            struct.pack("<I", len(data)) + data)


def setup(bin_, work):
    work.mkdir(parents=True, exist_ok=True)
    models = {}
    if not (work / "boards").exists():
        subprocess.run([bin_, "boards", str(work / "boards"), "--size", "64", "--train", "60",
                        "--test-good", "4", "--per-defect", "2", "--seed", "1"], check=True)
    if not (work / "machines").exists():
        subprocess.run([bin_, "machines", str(work / "machines"), "--seconds", "1",
                        "--train", "30", "--test-good", "3", "--per-fault", "1"], check=True)
    rng = np.random.default_rng(0)
    if not (work / "train.csv").exists():
        x = rng.normal(size=(2000, 4))
        x[:, 1] = 2 * x[:, 0] + 0.1 * x[:, 1]
        with open(work / "train.csv", "w") as f:
            f.write("a,b,c,d\n")
            for r in x:
                f.write(",".join(f"{v:.5f}" for v in r) + "\n")
    specs = {
        "image": ["train", str(work / "boards"), "--epochs", "3", "--width", "8"],
        "table": ["train", str(work / "train.csv"), "--epochs", "10"],
        "audio": ["train", str(work / "machines"), "--epochs", "5", "--n-mels", "32",
                  "--hidden", "32", "--latent", "4"],
        "denoiser": ["train", str(work / "boards" / "train" / "good"), "--task", "denoise",
                     "--epochs", "2", "--width", "8"],
    }
    for name, args in specs.items():
        path = work / f"{name}.safetensors"
        if not path.exists():
            subprocess.run([bin_, *args, "-o", str(path), "--quiet"], check=True)
        models[name] = path
    return models


def cli_cases(bin_, work, models, tally):
    bad = work / "bad"
    bad.mkdir(exist_ok=True)
    good_img = work / "boards" / "test" / "good" / "000.png"

    def case(cls, args, expect_error=True, needle=None, watch=()):
        before = {p: Path(p).read_bytes() for p in watch}
        code, err, rss = run(bin_, args)
        outcome, note = classify(code, err, expect_error, needle)
        changed = [p for p, b in before.items() if Path(p).read_bytes() != b]
        if changed and outcome in ("clear", "ok"):
            outcome, note = "silent wrong", f"changed {changed}"
        left = leftovers(work)
        if left and outcome in ("clear", "ok"):
            outcome, note = "leftover", str(left)
            for p in left:
                os.remove(p)
        tally.add(cls, outcome, rss, f"{' '.join(args)[:160]}: {note}")

    # Outputs aimed at inputs.
    m = str(models["image"])
    test = str(work / "boards" / "test")
    trainimg = str(work / "boards" / "train" / "good" / "000.png")
    for args in (["score", m, test, "-o", m], ["report", m, test, "-o", m],
                 ["train", str(work / "boards"), "-o", trainimg],
                 ["encode", m, test, "-o", str(good_img)],
                 ["score", m, test, "-o", str(work / "s.csv"), "--maps", test],
                 ["impute", str(models["table"]), str(work / "train.csv"), "-o",
                  str(work / "train.csv")]):
        case("outputs over inputs", args + ["-q"], needle="choose another output",
             watch=(m, trainimg, str(good_img), str(work / "train.csv")))

    # Images: truncated, empty, text, a 400-megapixel bomb, 1x1; each alone in a folder.
    imgs = {
        "truncated.png": good_img.read_bytes()[:200],
        "empty.png": b"",
        "text.png": b"hello, not an image\n",
    }
    for name, data in imgs.items():
        d = bad / f"img-{name}"
        d.mkdir(exist_ok=True)
        (d / name).write_bytes(data)
        case("bad images", ["score", m, str(d), "-o", str(work / "s.csv"), "-q"], needle=name)
    d = bad / "img-bomb"
    d.mkdir(exist_ok=True)
    png_claiming(d / "bomb.png", 20000, 20000)
    case("bad images", ["score", m, str(d), "-o", str(work / "s.csv"), "-q"],
         needle="megapixels")
    mixed = bad / "img-mixed"
    mixed.mkdir(exist_ok=True)
    (mixed / "000.png").write_bytes(b"junk")
    png_claiming(mixed / "001.png", 20000, 20000)
    for i in range(12):
        (mixed / f"{i + 2:03}.png").write_bytes(
            (work / "boards" / "train" / "good" / f"{i:03}.png").read_bytes())
    case("bad images", ["train", str(mixed), "-o", str(work / "mixed.safetensors"), "--epochs",
                        "1", "--width", "8", "--skip-bad", "-q"], expect_error=False)
    case("bad images", ["score", m, str(mixed), "-o", str(work / "s.csv"), "--skip-bad", "-q"],
         expect_error=False)

    # WAV: a 2^31 Hz rate, a length that lies, truncated, not WAV.
    a = str(models["audio"])
    base = wav_bytes()
    lying_rate = bytearray(base)
    lying_rate[22:24] = struct.pack("<H", 1)
    lying_rate[24:28] = struct.pack("<I", 1 << 31)
    lying_rate[28:32] = struct.pack("<I", (1 << 31))
    lying_rate[32:34] = struct.pack("<H", 1)
    lying_rate[34:36] = struct.pack("<H", 8)
    long_claim = bytearray(base)
    long_claim[40:44] = struct.pack("<I", 0xFFFFFFF0)
    for name, data in {"rate.wav": bytes(lying_rate), "length.wav": bytes(long_claim),
                       "cut.wav": base[:30], "text.wav": b"not a wav at all"}.items():
        d = bad / f"wav-{name}"
        d.mkdir(exist_ok=True)
        (d / name).write_bytes(data)
        case("bad WAV", ["score", a, str(d), "-o", str(work / "s.csv"), "-q"], needle=name)

    # Tables: .npy with a lying shape and wrong dtype, CSV with a repeated column, inf, text.
    t = str(models["table"])
    arr = np.zeros((3, 4), "<f4")
    buf = io.BytesIO()
    np.save(buf, arr)
    npy = buf.getvalue()

    def npy_edit(old, new):
        """The .npy with a header field swapped, padding trimmed to keep its length."""
        at = npy.index(old)
        end = npy.index(b"\n")
        trim = max(0, len(new) - len(old))
        return npy[:at] + new + npy[at + len(old):end - trim] + npy[end:]

    for name, data in {
        "huge.npy": npy_edit(b"(3, 4)", b"(99999999999, 4)"),
        "short.npy": npy_edit(b"(3, 4)", b"(9, 4)"),
        "ints.npy": npy.replace(b"<f4", b"<i4"),
        "dup.csv": b"a,b,a,d\n1,2,3,4\n",
        "inf.csv": b"a,b,c,d\n1,2,inf,4\n",
        "text.csv": b"a,b,c,d\n1,two,3,4\n",
        "empty.csv": b"",
    }.items():
        p = bad / name
        p.write_bytes(data)
        case("bad tables", ["score", t, str(p), "-o", str(work / "s.csv"), "-q"], needle=name)

    # Model files: bytes flipped at random places, cut short, a foreign safetensors file.
    rng = np.random.default_rng(1)
    for kind, path in models.items():
        data = path.read_bytes()
        for k in range(8):
            b = bytearray(data)
            at = int(rng.integers(0, len(b)))
            b[at] ^= 1 << int(rng.integers(0, 8))
            q = bad / f"{kind}-flip{k}.safetensors"
            q.write_bytes(bytes(b))
            target = {"image": test, "denoiser": test, "table": str(work / "train.csv"),
                      "audio": str(work / "machines" / "test")}[kind]
            cmd = "denoise" if kind == "denoiser" else "score"
            out = str(work / ("dn" if kind == "denoiser" else "s.csv"))
            case("damaged model files", [cmd, str(q), target, "-o", out, "-q"],
                 needle=q.name)
        q = bad / f"{kind}-cut.safetensors"
        q.write_bytes(data[: len(data) // 2])
        case("damaged model files", ["score", str(q), test, "-o", str(work / "s.csv"), "-q"],
             needle=q.name)

    # Killed mid-write: SIGTERM leaves no temporary file; one left by SIGKILL is removed by
    # the next run.
    big = work / "big.csv"
    if not big.exists():
        x = np.random.default_rng(2).normal(size=(3_000_000, 4)).astype("f4")
        np.savetxt(big, x, fmt="%.4f", delimiter=",", header="a,b,c,d", comments="")
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGKILL):
        out = work / "killed.csv"
        p = subprocess.Popen([bin_, "score", t, str(big), "-o", str(out), "-q"],
                             stderr=subprocess.DEVNULL)
        time.sleep(0.7)
        p.send_signal(sig)
        p.wait()
        left = leftovers(work)
        if sig == signal.SIGKILL:
            code, err, rss = run(bin_, ["score", t, str(work / "train.csv"), "-o", str(out),
                                        "-q"])
            left = leftovers(work)
        outcome = "leftover" if left else "clear"
        tally.add("killed mid-write", outcome, 0, f"{sig.name}: {left}")
        for f in left:
            os.remove(f)


class Service:
    def __init__(self, bin_, model, extra=()):
        self.p = subprocess.Popen([bin_, "serve", str(model), "--addr", "127.0.0.1:0", *extra],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while True:
            line = self.p.stderr.readline().decode()
            if not line:
                raise RuntimeError("serve did not start")
            if "on http://" in line:
                host, port = line.split("on http://")[1].strip().split(":")
                self.host, self.port = host, int(port)
                break
        threading.Thread(target=lambda: self.p.stderr.read(), daemon=True).start()

    def request(self, method, path, body=b"", ctype="text/csv", timeout=120):
        c = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            c.request(method, path, body=body, headers={"content-type": ctype})
            r = c.getresponse()
            return r.status, r.read()
        except (OSError, http.client.HTTPException) as e:
            return None, str(e).encode()
        finally:
            c.close()

    def hwm_kb(self):
        for line in Path(f"/proc/{self.p.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def alive(self):
        return self.p.poll() is None

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.p.kill()


def csv_rows(n, seed=3):
    x = np.random.default_rng(seed).normal(size=(n, 4))
    s = io.StringIO()
    s.write("a,b,c,d\n")
    np.savetxt(s, x, fmt="%.3f", delimiter=",")
    return s.getvalue().encode()


def service_cases(bin_, work, models, tally, quick):
    good = csv_rows(20)
    svc = Service(bin_, models["table"])
    _, reference = svc.request("POST", "/v1/score", good)

    def hostile(cls, method, path, body, ctype, expect):
        status, text = svc.request(method, path, body, ctype)
        check, again = svc.request("POST", "/v1/score", good)
        if status is None and None in expect and svc.alive():
            status = None  # refused from its announced length; the connection was closed
        if not svc.alive() or (status is None and None not in expect):
            outcome, note = "crash", f"status {status}: {text[:200]}"
        elif status in expect and check == 200 and again == reference:
            outcome, note = "clear", ""
        elif check != 200 or again != reference:
            outcome, note = "silent wrong", f"next real request: {check}"
        else:
            outcome, note = "silent wrong", f"status {status}: {text[:200]}"
        tally.add(cls, outcome, svc.hwm_kb(), note)

    base_rss = svc.hwm_kb()
    # 3.9 million short rows in 31 MB (under the body limit): refused by the row cap.
    big = b"a,b,c,d\n" + b"1,2,3,4\n" * (100_001 if quick else 3_900_000)
    hostile("service: large requests", "POST", "/v1/score", big, "text/csv", {413})
    hostile("service: large requests", "POST", "/v1/score",
            json.dumps({"rows": [[0.1, 0.2, 0.3, 0.4]] * 100_001}).encode(),
            "application/json", {413})
    # Over the body limit: answered 413 from its length, the connection closed while the
    # client still sends (http.client then sees a broken pipe, not the answer).
    hostile("service: large requests", "POST", "/v1/score", b"x" * (33 << 20), "text/csv",
            {413, None})
    full = csv_rows(100_000, seed=5)
    status, _ = svc.request("POST", "/v1/score", full)
    tally.add("service: large requests", "ok" if status == 200 else "silent wrong",
              svc.hwm_kb(), f"100,000 rows: {status}")
    print(f"service RSS: idle {base_rss / 1024:.0f} MB, after the largest accepted request "
          f"{svc.hwm_kb() / 1024:.0f} MB (VmHWM)")
    for body, ctype in [(b"a,b,a,d\n1,2,3,4\n", "text/csv"), (b"{not json", "application/json"),
                        (b"a,b,c,d\n1,2,3\n", "text/csv"), (b"", "text/csv"),
                        (b'{"rows": [{"a": true}]}', "application/json"),
                        (b"a,b,c,d\n1e39,1,1,1\n", "text/csv")]:
        hostile("service: malformed rows", "POST", "/v1/score", body, ctype, {400, 413, 422})
    for path, method in [("/v1/denoise", "POST"), ("/nope", "GET"), ("/v1/score", "GET")]:
        hostile("service: wrong routes", method, path, good, "text/csv", {404, 405})
    # Answered before the body is read: the rest of a 24 MB upload is drained, so the client
    # reads the answer instead of a broken pipe.
    upload = bytes(range(256)) * (24 << 12)
    for path, expect in [("/v1/denoise", {404}), ("/v1/score?map=perhaps", {400})]:
        hostile("service: wrong routes", "POST", path, upload, "text/csv", expect)

    # Slow and idle connections while real clients are served. A pass of 200 requests takes
    # ~0.15 s, so one pass a side swung 0.71-1.20x over eight runs of two binaries: the best
    # of three a side is compared (the three busy passes end before the slow clients' 2 s).
    def rate(n=200, passes=3):
        ok, best = 0, 0.0
        for _ in range(passes):
            start = time.time()
            for _ in range(n):
                s, _ = svc.request("POST", "/v1/score", good)
                ok += s == 200
            best = max(best, n / (time.time() - start))
        return ok // passes, best

    ok_quiet, quiet = rate()
    stop = threading.Event()

    def trickler():
        try:
            s = socket.create_connection((svc.host, svc.port))
            s.sendall(b"POST /v1/score HTTP/1.1\r\nhost: x\r\ncontent-type: text/csv\r\n"
                      b"content-length: 100000\r\n\r\n")
            while not stop.is_set():
                s.sendall(b"a")
                time.sleep(1.0)
        except OSError:
            pass

    slow = [threading.Thread(target=trickler, daemon=True) for _ in range(100)]
    for t in slow:
        t.start()
    idle = []
    for _ in range(1000):
        try:
            idle.append(socket.create_connection((svc.host, svc.port)))
        except OSError:
            break
    time.sleep(0.5)
    ok_busy, busy = rate()
    stop.set()
    for s in idle:
        s.close()
    within = ok_busy == 200 and busy >= 0.8 * quiet
    tally.add("service: slow and idle clients", "clear" if within else "silent wrong",
              svc.hwm_kb(), f"{busy:.0f} req/s against {quiet:.0f} quiet, {ok_busy}/200 ok")
    print(f"service requests/s: quiet {quiet:.0f} ({ok_quiet}/200 ok), with 100 slow and "
          f"{len(idle)} idle connections {busy:.0f} ({ok_busy}/200 ok)")
    svc.stop()

    # Images: a decompression bomb, a truncated PNG, a GIF; then denoising that times out.
    img = Service(bin_, models["image"])
    png = (work / "boards" / "test" / "good" / "000.png").read_bytes()
    _, ref = img.request("POST", "/v1/score", png, "image/png")
    bomb = work / "bad" / "bomb-upload.png"
    png_claiming(bomb, 20000, 20000)
    for body, expect in [(bomb.read_bytes(), {413}), (png[:100], {400, 422}),
                         (b"GIF89a", {400, 415})]:
        s, text = img.request("POST", "/v1/score", body, "image/png")
        s2, again = img.request("POST", "/v1/score", png, "image/png")
        outcome = "clear" if s in expect and s2 == 200 and again == ref else "silent wrong"
        tally.add("service: bad images", outcome, img.hwm_kb(), f"{s}: {text[:120]}")
    img.stop()
    dn = Service(bin_, models["denoiser"], ["--workers", "1", "--timeout", "1"])
    side = 3400
    x = np.add.outer(np.arange(side), np.arange(side)) % 256
    buf = io.BytesIO()
    Image.fromarray(x.astype(np.uint8)).save(buf, "PNG")
    start = time.time()
    s, _ = dn.request("POST", "/v1/denoise", buf.getvalue(), "image/png")
    s2, _ = dn.request("POST", "/v1/denoise", png, "image/png")
    took = time.time() - start
    outcome = "clear" if s == 504 and s2 == 200 and took < 2.5 else "silent wrong"
    tally.add("service: timed-out work", outcome, dn.hwm_kb(),
              f"504 then next answered after {took:.1f} s ({s}, {s2})")
    dn.stop()
    # Audio: a WAV that lies about its rate, then a real one.
    au = Service(bin_, models["audio"])
    real = (work / "machines" / "test" / "good" / "0000.wav").read_bytes()
    lying = bytearray(real)
    lying[24:28] = struct.pack("<I", 1 << 31)
    for body, expect in [(bytes(lying), {422}), (b"RIFF", {422}), (real, {200})]:
        s, text = au.request("POST", "/v1/score", body, "audio/wav")
        tally.add("service: audio", "clear" if s in expect else "silent wrong", au.hwm_kb(),
                  f"{s}: {text[:120]}")
    au.stop()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--work", required=True)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    models = setup(args.bin, work)
    tally = Tally()
    cli_cases(args.bin, work, models, tally)
    service_cases(args.bin, work, models, tally, args.quick)
    tally.print()


if __name__ == "__main__":
    main()
