"""Goodput under overload: successful images/s at the connection count that saturates gan-serve, and at
10x that many connections (issue 13: >= 80% of the saturated figure).

`wrk` (1 thread, bench/goodput.lua) sends `{"num_images": 4, "seed": N}` to `POST /generate` of the
DCGAN 64x64 benchmark model (bench/make_model.py) from C keep-alive connections; refusals (503) are
counted, not retried with any delay (wrk ignores Retry-After: the worst case for the server). Each C in
`--connections` runs for `--duration` s; the saturating point is the fewest connections within 10% of
the best goodput (more only add queueing). Then C and `--factor` x C alternate for `--rounds` rounds
and the medians are compared, so the background noise of a shared machine hits both alike (the
largest of several noisy samples against one sample would bias the ratio down).

    python bench/bench_goodput.py [--connections 8,16,32,64] [--factor 10] [--duration 10] [--rounds 3]
    python bench/bench_goodput.py --service-root /tmp/before   # the same driver against other code
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.bench_generate import loadavg  # noqa: E402
from bench.serving import ROOT, start_server, stop_server  # noqa: E402

IMAGES_PER_REQUEST = 4


def wrk(port: int, connections: int, seconds: float) -> dict:
    argv = [
        "wrk", "-t", "1", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "30s",
        "-s", str(ROOT / "bench" / "goodput.lua"), f"http://127.0.0.1:{port}/generate",
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    match = re.search(r"^WRKJSON (\{.*\})$", out, re.M)
    if match is None:
        raise RuntimeError(f"wrk printed no summary:\n{out}")
    summary = json.loads(match.group(1))
    seconds_run = summary["duration_us"] / 1e6
    failed = sum(summary["errors"][k] for k in ("status", "timeout", "read", "write"))
    ok = max(0, summary["requests"] - summary["errors"]["status"] - summary["errors"]["timeout"])
    return {
        "connections": connections,
        "images_per_s": ok * IMAGES_PER_REQUEST / seconds_run,
        "requests_per_s": summary["requests"] / seconds_run,
        "refused_or_failed_per_s": failed / seconds_run,
        "p50_ms": summary["p50_us"] / 1e3,
        "p99_ms": summary["p99_us"] / 1e3,
        "errors": summary["errors"],
    }


def _median(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda run: run["images_per_s"])[len(runs) // 2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", default="8,16,32,64", help="comma-separated connection counts")
    parser.add_argument("--factor", type=int, default=10, help="overload = factor x the saturating connections")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of C and factor x C")
    parser.add_argument("--port", type=int, default=8771)
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".work")
    parser.add_argument("--service-root", type=Path, default=ROOT, help="checkout whose service/ is measured")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    model_repo = args.work / "models"
    if not (model_repo / "dcgan" / "model.onnx").is_file():
        subprocess.run([sys.executable, str(ROOT / "bench" / "make_model.py"), "--work", str(args.work)], check=True)
    load_before = loadavg()
    proc = start_server(model_repo, args.port, args.work / "server-goodput.log", args.service_root)
    try:
        wrk(args.port, 16, 3)  # warm-up
        rows = []
        for connections in [int(c) for c in args.connections.split(",")]:
            rows.append(wrk(args.port, connections, args.duration))
            print(json.dumps(rows[-1]), flush=True)
            time.sleep(1)
        top = max(row["images_per_s"] for row in rows)
        knee = next(row["connections"] for row in rows if row["images_per_s"] >= 0.9 * top)
        saturated, overloaded = [], []
        for _ in range(args.rounds):
            for connections, into in ((knee, saturated), (knee * args.factor, overloaded)):
                into.append(wrk(args.port, connections, args.duration))
                print(json.dumps(into[-1]), flush=True)
                time.sleep(1)
    finally:
        stop_server(proc)
    best = _median(saturated)
    overload = _median(overloaded)
    ratio = overload["images_per_s"] / best["images_per_s"]
    print(f"\nservice: {args.service_root}  load average before: {load_before}")
    print("| connections | successful images/s | refused or failed/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- |")
    for row in rows:
        print(f"| {row['connections']} | {row['images_per_s']:.0f} | {row['refused_or_failed_per_s']:.0f} "
              f"| {row['p50_ms']:.1f} | {row['p99_ms']:.1f} |")
    pairs = zip(saturated, overloaded, strict=True)
    rounds = " / ".join(f"{s['images_per_s']:.0f} vs {o['images_per_s']:.0f}" for s, o in pairs)
    print(f"\nrounds ({knee} vs {knee * args.factor} connections, images/s): {rounds}")
    print(f"median: {knee} connections {best['images_per_s']:.0f} images/s; {knee * args.factor} connections "
          f"{overload['images_per_s']:.0f} images/s ({overload['refused_or_failed_per_s']:.0f} refused/s) "
          f"= {ratio:.0%}")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "saturated": saturated, "overloaded": overloaded,
                                         "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
