"""`/super-resolve` memory: peak RSS of one 1024x1024 request, and whether memory comes back after a
burst of large requests (issue 13: within 15% of the steady level after a minute idle; peak <= 2 GB
at the default settings).

The model is bench_super_resolve.py's SRResNet x4 (4 blocks of width 32, via gan-train + gan-export).
The server runs with the default settings except `GAN_REQUEST_TIMEOUT_S` (2 CPU cores need more than
30 s for a 1024x1024 input). Steps: three small requests, 5 s idle -> steady RSS; one 1024x1024 request
-> peak RSS (VmHWM); a burst of concurrent large and thin requests (512x512 images, 4096x1 and 1x4096
strips) -> RSS; `--idle` s without requests -> RSS, compared with the steady level.

    python bench/bench_memory.py [--idle 60] [--burst 3]
    python bench/bench_memory.py --service-root /tmp/before     # the same driver against other code
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_generate import loadavg  # noqa: E402
from bench.bench_super_resolve import build_model, test_image  # noqa: E402
from bench.serving import ROOT, rss_mb, start_server, stop_server  # noqa: E402


def png(height: int, width: int, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def post(url: str, body: bytes) -> int:
    import httpx

    return httpx.post(url, content=body, headers={"content-type": "image/png"}, timeout=900).status_code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=60.0, help="seconds idle after the burst")
    parser.add_argument("--burst", type=int, default=3, help="512x512 requests in the burst (plus 2 strips)")
    parser.add_argument("--port", type=int, default=8772)
    parser.add_argument("--service-root", type=Path, default=ROOT, help="checkout whose service/ is measured")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    model_dir = build_model(4, 32)
    big = test_image().read_bytes()
    load_before = loadavg()
    proc = start_server(model_dir.parent, args.port, ROOT / "bench" / ".work" / "server-memory.log",
                        args.service_root, request_timeout_s="900")
    url = f"http://127.0.0.1:{args.port}/super-resolve?model={model_dir.name}"
    result: dict[str, object] = {"service_root": str(args.service_root), "load_before": load_before}
    try:
        for seed in range(3):
            assert post(url, png(64, 64, seed)) == 200
        time.sleep(5)
        result["steady_mb"] = steady = rss_mb(proc.pid)
        began = time.perf_counter()
        result["big_status"] = post(url, big)
        result["big_seconds"] = time.perf_counter() - began
        result["peak_1024_mb"] = rss_mb(proc.pid, "VmHWM")
        bodies = [png(512, 512, 10 + i) for i in range(args.burst)] + [png(1, 4096, 20), png(4096, 1, 21)]
        began = time.perf_counter()
        with ThreadPoolExecutor(len(bodies)) as pool:
            result["burst_statuses"] = list(pool.map(lambda body: post(url, body), bodies))
        result["burst_seconds"] = time.perf_counter() - began
        result["after_burst_mb"] = rss_mb(proc.pid)
        result["peak_mb"] = rss_mb(proc.pid, "VmHWM")
        time.sleep(args.idle)
        result["after_idle_mb"] = idle = rss_mb(proc.pid)
        result["idle_over_steady"] = idle / steady
    finally:
        stop_server(proc)
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
