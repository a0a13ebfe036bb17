"""GPU benchmark driver (run it through bench/gpu.sh): serving and training throughput on one host.

Serving: raw ONNX Runtime vs `gan-serve` with 1 and N worker processes, for DCGAN 64x64 and PGGAN at
256x256, 1 and 64 images per `/generate` request, fp32 and fp16 exports. Raw ONNX Runtime is the
service's own session setup (session options, CUDA provider options, host numpy outputs) called back
to back at several batch sizes by one thread; its best is the ceiling. The servers are loaded with
wrk (bench/generate.lua; 32 connections for 1 image, 8 for 64), or with a small Python client when
wrk is missing (then the client, not the server, may be the bound: the report says which was used).

Training: `gan-train dcgan`'s loop (bfloat16 autocast on CUDA) against the pytorch/examples DCGAN
loop (float32, as written) at batch 128 (bench/train_speed.py's two loops, on the device).

Without a GPU it runs the same steps on CPU (pass small sizes, e.g. `--pggan-size 32 --duration 2`)
so the script itself is tested anywhere. Writes WORK/gpu_bench.json and WORK/gpu_bench.md.

    bash bench/gpu.sh [--ort-wheel onnxruntime_gpu-....whl] [--duration 6] [--workers 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------ device


def nvidia_library_dirs() -> list[str]:
    """CUDA/cuDNN libraries shipped as pip packages (nvidia-*-cu12, e.g. with torch): onnxruntime-gpu
    finds them when they are on LD_LIBRARY_PATH of the server processes."""
    dirs = []
    for entry in sys.path:
        base = Path(entry) / "nvidia"
        if base.is_dir():
            dirs += [str(p) for p in sorted(base.glob("*/lib")) if p.is_dir()]
    return dirs


def pick_device(requested: str) -> str:
    import onnxruntime as ort

    if requested != "auto":
        return requested
    return "cuda" if "CUDAExecutionProvider" in ort.get_available_providers() else "cpu"


# ------------------------------------------------------------------------------------------ models


def build_models(work: Path, pggan_size: int, precisions: list[str]) -> dict[tuple[str, str], Path]:
    """{(model, precision): repository with that one model}; DCGAN 64x64 (gan-train defaults) and PGGAN
    grown to `pggan_size` (one training step, then the stage set to the full size: speed does not depend
    on the weights)."""
    import torch

    from export.onnx_export import export_checkpoint
    from trainer.training.checkpoint import load_checkpoint, resolve_checkpoint

    runs = {"dcgan": work / "run-dcgan", "pggan": work / f"run-pggan{pggan_size}"}
    common = ["--steps", "1", "--sample-every", "0", "--checkpoint-every", "0", "--device", "cpu", "--no-progress"]
    if not runs["dcgan"].exists():
        subprocess.run([sys.executable, "-m", "trainer.cli", "dcgan", "--out", str(runs["dcgan"]), *common],
                       check=True, cwd=ROOT)
    if not runs["pggan"].exists():
        subprocess.run([sys.executable, "-m", "trainer.cli", "pggan", "--out", str(runs["pggan"]), "--image-size",
                        str(pggan_size), "--batch-size", "2", *common], check=True, cwd=ROOT)
        path = resolve_checkpoint(runs["pggan"])
        state = load_checkpoint(path)
        for key in ("generator", "generator_ema"):
            if key in state:
                state[key]["grown_resolution"] = torch.tensor(pggan_size, dtype=torch.int64)
                state[key]["grown_alpha"] = torch.tensor(1.0)
        torch.save(state, path)
    repos = {}
    for model, run in runs.items():
        for precision in precisions:
            repo = work / f"models-{model}-{precision}"
            if not (repo / model / "manifest.json").is_file():
                export_checkpoint(run, repo, model, precision=precision)
            repos[(model, precision)] = repo
    return repos


# ------------------------------------------------------------------------------------------ raw ORT


def raw_ort(model_dir: Path, device: str, seconds: float, batches: list[int]) -> dict:
    """The service's session setup, one caller running back to back; images/s per batch size."""
    import numpy as np
    import onnxruntime as ort

    from service.runtime import CPU, CUDA, provider_list, session_options
    from service.served_models import inference_threads
    from service.settings import Settings

    manifest = json.loads((model_dir / "manifest.json").read_text())
    _, threads = inference_threads(Settings(device=device))
    providers = provider_list([CUDA, CPU] if device == "cuda" else [CPU])
    session = ort.InferenceSession(str(model_dir / "model.onnx"), session_options(threads), providers=providers)
    name, dim = manifest["inputs"][0]["name"], manifest["latent_dim"]
    results = {}
    for batch in batches:
        feed = {name: np.random.default_rng(0).standard_normal((batch, dim)).astype(np.float32)}
        for _ in range(3):
            session.run(None, feed)
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            session.run(None, feed)
            count += 1
        results[batch] = count * batch / (time.perf_counter() - start)
    return {"providers": session.get_providers(), "images_per_s": results}


# ------------------------------------------------------------------------------------------ servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(repo: Path, device: str, workers: int, port: int, logfile: Path) -> subprocess.Popen:
    env = dict(os.environ)
    env.update(GAN_MODEL_DIR=str(repo), GAN_HOST="127.0.0.1", GAN_PORT=str(port), GAN_DEVICE=device,
               GAN_WORKERS=str(workers), GAN_MAX_BATCH_SIZE="64", GAN_MAX_IMAGES_PER_REQUEST="64",
               GAN_MAX_QUEUE_SIZE="1024", GAN_ACCESS_LOG="false", GAN_LOG_LEVEL="warning",
               # every batch size on CUDA (the point of warm-up there); on CPU the PGGAN would take minutes
               GAN_WARMUP="all" if device == "cuda" else "ends")
    libs = nvidia_library_dirs()
    if libs:
        env["LD_LIBRARY_PATH"] = ":".join([*libs, env.get("LD_LIBRARY_PATH", "")])
    with open(logfile, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli"], env=env, cwd=ROOT, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gan-serve exited ({proc.returncode}); see {logfile}:\n{logfile.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
                if response.status == 200:
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    raise RuntimeError(f"gan-serve not ready after 300 s; see {logfile}")


def stop_server(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def load_wrk(port: int, images: int, connections: int, seconds: float) -> dict:
    argv = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds:g}s", "--timeout", "30s",
            "-s", str(ROOT / "bench" / "generate.lua"), f"http://127.0.0.1:{port}/generate"]
    out = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "BENCH_IMAGES": str(images)},
                         check=True).stdout
    summary = json.loads(re.search(r"^WRKJSON (\{.*\})$", out, re.M).group(1))
    errors = sum(summary["errors"].values())
    return {"images_per_s": summary["requests"] * images / (summary["duration_us"] / 1e6),
            "p99_ms": summary["p99_us"] / 1e3, "errors": errors, "client": "wrk"}


def load_python(port: int, images: int, connections: int, seconds: float) -> dict:
    """Fallback without wrk: `connections` threads on keep-alive http.client connections."""
    import http.client

    counts, errors, stop = [0] * connections, [0], time.monotonic() + seconds

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        seed = i * 1_000_000
        while time.monotonic() < stop:
            seed += 1
            conn.request("POST", "/generate", json.dumps({"num_images": images, "seed": seed}),
                         {"Content-Type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                counts[i] += images
            else:
                errors[0] += 1

    start = time.monotonic()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(connections)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"images_per_s": sum(counts) / (time.monotonic() - start), "p99_ms": None, "errors": errors[0],
            "client": "python"}


def load(port: int, images: int, seconds: float, warmup: float) -> dict:
    connections = 32 if images == 1 else 8
    drive = load_wrk if shutil.which("wrk") else load_python
    drive(port, images, connections, warmup)
    result = drive(port, images, connections, seconds)
    result["connections"] = connections
    return result


# ------------------------------------------------------------------------------------------ training


def training(device: str, batch: int, steps: int, warmup: int) -> dict:
    import torch

    sys.path.insert(0, str(ROOT / "bench"))
    from train_speed import ours_images_per_s, peer_images_per_s

    from trainer.data import ShapesDataset

    dataset = ShapesDataset(image_size=64, length=2048)
    peer = peer_images_per_s(dataset, 64, batch, steps, warmup, device=device)
    ours = ours_images_per_s(64, batch, steps, warmup, device=device)
    return {"device": device, "batch": batch, "steps": steps, "peer_images_per_s": peer,
            "ours_images_per_s": ours, "ratio": ours / peer, "torch": torch.__version__,
            "autocast": "bfloat16" if device.startswith("cuda") else "off (CPU)"}


# ------------------------------------------------------------------------------------------ report


def markdown(report: dict) -> str:
    lines = [
        f"GPU benchmark of {report['date']} on {report['device_name']} (device {report['device']}, "
        f"onnxruntime {report['onnxruntime']}, {report['workers']} workers for the N-worker rows, "
        f"load client {report['client']}, {report['duration']:g} s per measurement).",
        "",
        "| model | precision | images/request | raw ORT best (img/s) | gan-serve 1 worker | "
        f"gan-serve {report['workers']} workers | N workers / raw | p99 ms (N workers) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["serving"]:
        raw = max(row["raw"]["images_per_s"].values())
        one, many = row["servers"].get("1"), row["servers"].get(str(report["workers"]))
        lines.append(
            f"| {row['model']} | {row['precision']} | {row['images']} | {raw:.0f} | "
            f"{one['images_per_s']:.0f} | {many['images_per_s']:.0f} | {many['images_per_s'] / raw:.2f} | "
            f"{many['p99_ms'] if many['p99_ms'] is None else round(many['p99_ms'], 1)} |"
        )
    t = report.get("training")
    if t:
        lines += ["", f"| training, DCGAN 64x64, batch {t['batch']} | images/s |", "|---|---:|",
                  f"| pytorch/examples loop (float32) | {t['peer_images_per_s']:.0f} |",
                  f"| gan-train dcgan (autocast: {t['autocast']}) | {t['ours_images_per_s']:.0f} |",
                  f"| ratio | {t['ratio']:.2f}x |"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=ROOT / "bench" / ".work" / "gpu")
    parser.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto")
    parser.add_argument("--workers", type=int, default=0, help="N for the N-worker rows; 0 = min(cores, 4)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per server measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of load before each measurement")
    parser.add_argument("--raw-seconds", type=float, default=1.5, help="per batch size of raw ORT")
    parser.add_argument("--pggan-size", type=int, default=256)
    parser.add_argument("--precisions", default="fp32,fp16")
    parser.add_argument("--images", default="1,64", help="images per request")
    parser.add_argument("--train-batch", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=50)
    parser.add_argument("--no-train", action="store_true")
    args = parser.parse_args(argv)
    began = time.monotonic()
    args.work.mkdir(parents=True, exist_ok=True)
    import onnxruntime as ort

    device = pick_device(args.device)
    if device == "cuda" and hasattr(ort, "preload_dlls"):
        ort.preload_dlls()  # CUDA/cuDNN from nvidia-* pip packages, when that is where they are
    workers = args.workers or max(2, min(os.cpu_count() or 1, 4))
    precisions = [p for p in args.precisions.split(",") if p]
    image_counts = [int(n) for n in args.images.split(",") if n]
    log(f"device {device} (onnxruntime {ort.__version__}: {ort.get_available_providers()}), workers 1 and {workers}")
    repos = build_models(args.work, args.pggan_size, precisions)
    log(f"models ready after {time.monotonic() - began:.0f} s")
    serving = []
    for (model, precision), repo in repos.items():
        raw = raw_ort(repo / model, device, args.raw_seconds, sorted({1, *image_counts, 64}))
        log(f"{model} {precision} raw ORT on {raw['providers'][0]}: "
            + ", ".join(f"b{b} {v:.0f}" for b, v in raw["images_per_s"].items()))
        rows = {n: {"model": model, "precision": precision, "images": n, "raw": raw, "servers": {}}
                for n in image_counts}
        for count in (1, workers):
            port = free_port()
            proc = start_server(repo, device, count, port, args.work / f"server-{model}-{precision}-{count}.log")
            try:
                for n in image_counts:
                    result = load(port, n, args.duration, args.warmup)
                    rows[n]["servers"][str(count)] = result
                    log(f"{model} {precision} {n} img/req, {count} worker(s): {result['images_per_s']:.0f} img/s")
            finally:
                stop_server(proc)
        serving += rows.values()
    training_result = None
    if not args.no_train:
        torch_device = "cuda" if device == "cuda" else "cpu"
        training_result = training(torch_device, args.train_batch, args.train_steps, warmup=5)
        log(f"training: peer {training_result['peer_images_per_s']:.0f} img/s, "
            f"ours {training_result['ours_images_per_s']:.0f} img/s ({training_result['ratio']:.2f}x)")
    device_name = platform.processor() or platform.machine()
    if device == "cuda":
        with_smi = shutil.which("nvidia-smi")
        if with_smi:
            device_name = subprocess.run([with_smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                         text=True).stdout.strip().splitlines()[0]
    report = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "device": device, "device_name": device_name, "onnxruntime": ort.__version__, "workers": workers,
        "duration": args.duration, "client": "wrk" if shutil.which("wrk") else "python",
        "serving": serving, "training": training_result, "seconds": time.monotonic() - began,
        "command": "bash bench/gpu.sh " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    (args.work / "gpu_bench.json").write_text(json.dumps(report, indent=2))
    table = markdown(report)
    (args.work / "gpu_bench.md").write_text(table)
    print(table)
    log(f"wrote {args.work / 'gpu_bench.json'} and {args.work / 'gpu_bench.md'} in {report['seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
