"""Load test of `bottleneck serve` from a second process (wrk) on loopback.

Serves an image model trained on 128x128 boards, posts one 128x128 PNG per request to
POST /v1/score at concurrency 1, 8 and 32, and reports requests/s, p50/p99 latency and
failed answers for each; then keeps the service busy until it has answered at least
--total requests and compares its resident memory (VmRSS) before and after. Beside it, from
the same run: the same model scoring the same image in-process (`bottleneck score` on a
folder of copies), which is what the service would reach with no HTTP at all.

Prints a Markdown table and one JSON object. Used by bench/serve_load.sh.
"""

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def seconds(text):
    """wrk's latency ('812.00us', '3.21ms', '1.02s') in seconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    value, unit = float(m.group(1)), m.group(2)
    return value * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def wrk(url, script, connections, duration):
    threads = min(connections, 2)
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s",
         "--latency", "-s", script, url],
        check=True, capture_output=True, text=True).stdout
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)$", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)$", out, re.M)
    return {
        "connections": connections,
        "requests": requests,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "p50_ms": seconds(lat["50"]) * 1e3,
        "p99_ms": seconds(lat["99"]) * 1e3,
        "non_2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1).strip() if errors else "none",
    }


def metric(base, name):
    text = urllib.request.urlopen(base + "/metrics").read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name):
            total += float(line.rsplit(" ", 1)[1])
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True, help="a 128x128 PNG to post")
    ap.add_argument("--duration", type=int, default=20, help="seconds per concurrency level")
    ap.add_argument("--total", type=int, default=100_000, help="requests before the last RSS")
    ap.add_argument("--workers", type=int, default=0, help="0: the service's default")
    args = ap.parse_args()

    work = tempfile.mkdtemp(prefix="bn-load-")
    script = os.path.join(work, "post.lua")
    with open(args.image, "rb") as f:
        body = f.read()
    # The body as a Lua string of decimal escapes, so any byte survives.
    escaped = "".join(f"\\{b}" for b in body)
    with open(script, "w") as f:
        f.write('wrk.method = "POST"\n'
                'wrk.headers["Content-Type"] = "image/png"\n'
                f'wrk.body = "{escaped}"\n')

    cmd = [args.bin, "serve", args.model, "--addr", "127.0.0.1:0"]
    if args.workers:
        cmd += ["--workers", str(args.workers)]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    line = server.stderr.readline()
    base = "http://" + line.split("on http://")[1].strip()
    url = base + "/v1/score"
    try:
        # Warm-up: first allocations of every buffer size the service uses.
        wrk(url, script, 8, 5)
        rss_before = rss_kib(server.pid)
        levels = [wrk(url, script, c, args.duration) for c in (1, 8, 32)]
        rss_trace = [(int(metric(base, "bottleneck_http_requests_total")), rss_kib(server.pid))]
        while metric(base, "bottleneck_http_requests_total") < args.total:
            wrk(url, script, 8, 30)
            rss_trace.append(
                (int(metric(base, "bottleneck_http_requests_total")), rss_kib(server.pid)))
            print(f"  {rss_trace[-1][0]} requests answered, RSS {rss_trace[-1][1] / 1024:.1f} MiB",
                  file=sys.stderr)
        answered = int(metric(base, "bottleneck_http_requests_total"))
        rss_after = rss_kib(server.pid)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()

    # In-process: the same model on copies of the same image, one `score` run.
    folder = os.path.join(work, "copies")
    os.makedirs(folder)
    n = 512
    for i in range(n):
        shutil.copy(args.image, os.path.join(folder, f"{i:04d}.png"))
    started = time.perf_counter()
    subprocess.run([args.bin, "score", args.model, folder, "-o", os.path.join(work, "s.csv"),
                    "--quiet"], check=True)
    in_process = n / (time.perf_counter() - started)
    shutil.rmtree(work)

    print("| concurrency | requests/s | p50 ms | p99 ms | non-2xx | in-process `score`, images/s |")
    print("|---|---|---|---|---|---|")
    for lv in levels:
        print(f"| {lv['connections']} | {lv['requests_per_s']:.1f} | {lv['p50_ms']:.1f} | "
              f"{lv['p99_ms']:.1f} | {lv['non_2xx']} | {in_process:.1f} |")
    print()
    print(f"RSS after warm-up {rss_before / 1024:.1f} MiB, after {answered} requests "
          f"{rss_after / 1024:.1f} MiB ({(rss_after - rss_before) / 1024:+.1f} MiB)")
    print(json.dumps({
        "levels": levels,
        "in_process_images_per_s": in_process,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "requests_answered": answered,
        "rss_trace": rss_trace,
    }))


if __name__ == "__main__":
    main()
