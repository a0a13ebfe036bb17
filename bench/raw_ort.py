"""Raw ONNX Runtime throughput of the benchmark model: the ceiling a server can approach.

No HTTP, no encoding, no batching logic: threads call `session.run` back to back on a fixed latent
batch, for each batch size, under three configurations:

* `service`: exactly what gan-serve does with the current GAN_* settings
  (`service.runtime.session_options` and `service.served_models.inference_threads`; by default one
  caller and ONNX Runtime's default intra-op threads, one per core);
* `2 streams`: the service's options with GAN_INFERENCE_STREAMS=2: two concurrent callers of a
  session with cores / 2 intra-op threads (1 on a 2-core host);
* `ORT defaults`: `ort.InferenceSession(path)` with nothing set (spinning on, one thread per core),
  one caller.

    python bench/raw_ort.py [--model bench/.work/models/dcgan] [--seconds 3] [--json out.json]

The best images/s over every (configuration, batch size) is the "raw ORT" reference of the
benchmark, whichever configuration gives it.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # noqa: E402 - run as a script

from service.runtime import session_options  # noqa: E402
from service.served_models import cpu_count, inference_threads  # noqa: E402
from service.settings import Settings  # noqa: E402

BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64)


def service_options() -> tuple[ort.SessionOptions, int]:
    """gan-serve's session options for this host and settings, and its number of streams."""
    settings = Settings()
    streams, threads = inference_threads(settings)
    return session_options(threads, settings.intra_op_spinning), streams


def measure(session: ort.InferenceSession, input_name: str, dim: int, batch: int, seconds: float, callers: int) -> dict:
    """Images/s of `callers` threads each running `batch` rows back to back, after a warm-up."""
    z = np.random.default_rng(0).standard_normal((batch, dim), dtype=np.float32)
    for _ in range(2):
        session.run(None, {input_name: z})
    counts = [0] * callers
    start = time.perf_counter()
    stop = start + seconds

    def loop(index: int) -> None:
        while True:
            session.run(None, {input_name: z})
            counts[index] += 1
            if time.perf_counter() >= stop and counts[index] >= 2:
                return

    cpu0 = time.process_time()
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(callers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    calls = sum(counts)
    return {
        "batch": batch,
        "images_per_s": calls * batch / elapsed,
        "ms_per_call": elapsed / calls * 1e3 * callers,
        "cpu_ms_per_image": cpu / (calls * batch) * 1e3,
    }


def run(
    model_dir: Path, seconds: float, batch_sizes: tuple[int, ...] = BATCH_SIZES, only: str | None = None
) -> dict:
    path = str(model_dir / "model.onnx")
    manifest = json.loads((model_dir / "manifest.json").read_text())
    input_name = manifest["inputs"][0]["name"]
    dim = manifest["latent_dim"]
    options, streams = service_options()
    half = max(1, cpu_count() // 2)
    providers = ["CPUExecutionProvider"]
    configs = {
        "service": (lambda: ort.InferenceSession(path, options, providers=providers), streams),
        "2 streams": (lambda: ort.InferenceSession(path, session_options(half), providers=providers), 2),
        "ORT defaults": (lambda: ort.InferenceSession(path, providers=providers), 1),
    }
    if streams == 2 and options.intra_op_num_threads == half:
        del configs["2 streams"]  # the same as `service`
    if only is not None:
        configs = {only: configs[only]}
    results: dict[str, list[dict]] = {}
    labels: dict[str, str] = {}
    for config, (make, callers) in configs.items():
        session = make()
        threads = session.get_session_options().intra_op_num_threads
        labels[config] = f"{callers} caller(s) x {threads or 'default'} intra-op thread(s)"
        rows = results[config] = []
        for batch in batch_sizes:
            row = measure(session, input_name, dim, batch, seconds, callers)
            rows.append(row)
            print(
                f"{config:12s} batch {batch:3d}: {row['images_per_s']:7.1f} img/s  "
                f"{row['ms_per_call']:7.2f} ms/call  {row['cpu_ms_per_image']:5.2f} CPU-ms/img",
                flush=True,
            )
        del session
    best = {c: max(rows, key=lambda r: r["images_per_s"]) for c, rows in results.items()}
    overall = max(best, key=lambda c: best[c]["images_per_s"])
    return {
        "results": results,
        "labels": labels,
        "best": {c: {"batch": b["batch"], "images_per_s": b["images_per_s"]} for c, b in best.items()},
        "best_config": overall,
        "best_images_per_s": best[overall]["images_per_s"],
        "best_batch": best[overall]["batch"],
        "onnxruntime": ort.__version__,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("bench/.work/models/dcgan"), help="model folder")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring time per batch size")
    parser.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)), help="comma-separated")
    parser.add_argument("--config", choices=["service", "2 streams", "ORT defaults"], help="measure only this one")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    sizes = tuple(int(s) for s in args.batch_sizes.split(","))
    report = run(args.model, args.seconds, sizes, args.config)
    for config, b in report["best"].items():
        print(f"best {config}: {b['images_per_s']:.1f} img/s at batch {b['batch']}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
