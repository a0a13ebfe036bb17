"""`POST /super-resolve` on a 1024x1024 input: megapixels/s out and peak memory, against raw ONNX
Runtime running the very same tiles (same tile size, overlap and batch size as the service).

    python bench/bench_super_resolve.py [--blocks 4 --channels 32] [--repeats 3]

The model is an SRResNet made by `gan-train srresnet --steps 1` and `gan-export` (throughput does not
depend on the weights). Peak memory is each process's resident high-water mark (VmHWM), so the raw
run and the server are measured in processes of their own. Writes a block in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / ".work" / "sr"
DOC = ROOT / "docs" / "benchmarks.md"
BEGIN, END = "<!-- sr-bench:begin -->", "<!-- sr-bench:end -->"
SIDE = 1024


def peak_rss_mb(pid: int | str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def build_model(blocks: int, channels: int) -> Path:
    name = f"srresnet-b{blocks}-c{channels}"
    if (WORK / "models" / name / "model.onnx").exists():
        return WORK / "models" / name
    run = WORK / f"run-{name}"
    subprocess.run(["gan-train", "srresnet", "--data", "photos", "--blocks", str(blocks), "--channels", str(channels),
                    "--steps", "1", "--out", str(run), "--no-progress"], check=True, capture_output=True)
    subprocess.run(["gan-export", str(run), "--out", str(WORK / "models"), "--name", name], check=True)
    return WORK / "models" / name


def test_image() -> Path:
    path = WORK / f"input_{SIDE}.png"
    if not path.exists():
        from skimage import data

        Image.fromarray(data.astronaut()).resize((SIDE, SIDE), Image.Resampling.BICUBIC).save(path)
    return path


def raw_run(model_dir: Path, image: Path, repeats: int) -> dict[str, float]:
    """In this (sub)process: the service's tiling and batch size, straight onto ONNX Runtime."""
    import onnxruntime as ort

    from service.manifest import Manifest
    from service.runtime import session_options
    from service.settings import Settings
    from service.tiling import cut, plan, stitch

    settings = Settings()
    manifest = Manifest.read(model_dir)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), session_options(),
                                   providers=["CPUExecutionProvider"])
    pixels = np.asarray(Image.open(image).convert("RGB"), dtype=np.float32) / 255.0
    tiles = plan(pixels.shape[0], pixels.shape[1], settings.sr_tile_size, settings.sr_tile_overlap)
    batch_size = min(settings.sr_max_batch_size or settings.max_batch_size, settings.max_batch_size)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        outputs = []
        for first in range(0, tiles.count, batch_size):
            batch = np.ascontiguousarray(cut(pixels, tiles, first, min(first + batch_size, tiles.count)))
            outputs.append(session.run([manifest.outputs[0].name], {manifest.inputs[0].name: batch})[0])
        stitch(np.concatenate(outputs), tiles, manifest.scale or 4)
        times.append(time.perf_counter() - start)
    return {"seconds": statistics.median(times), "tiles": tiles.count, "peak_rss_mb": peak_rss_mb()}


def server_run(model_dir: Path, image: Path, repeats: int, port: int) -> dict[str, float]:
    import httpx

    env = {**os.environ, "GAN_MODEL_DIR": str(model_dir.parent), "GAN_PORT": str(port), "GAN_HOST": "127.0.0.1",
           "GAN_ACCESS_LOG": "false", "GAN_LOG_LEVEL": "warning", "GAN_REQUEST_TIMEOUT_S": "900"}
    server = subprocess.Popen([sys.executable, "-m", "service.cli"], env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                if httpx.get(url + "/readyz").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        body = image.read_bytes()
        times, size = [], None
        for _ in range(repeats):
            start = time.perf_counter()
            reply = httpx.post(url + "/super-resolve", content=body, headers={"Content-Type": "image/png"},
                               params={"model": model_dir.name}, timeout=600)
            times.append(time.perf_counter() - start)
            reply.raise_for_status()
            size = Image.open(io.BytesIO(reply.content)).size
        return {"seconds": statistics.median(times), "output_size": size, "peak_rss_mb": peak_rss_mb(server.pid)}
    finally:
        server.terminate()
        server.wait(timeout=30)


def write_doc(args: argparse.Namespace, raw: dict, ours: dict) -> None:
    out_mp = (SIDE * 4) ** 2 / 1e6
    block = "\n".join([
        BEGIN,
        f"Command: `python bench/bench_super_resolve.py --blocks {args.blocks} --channels {args.channels} "
        f"--repeats {args.repeats}` (SRResNet x4, {args.blocks} residual blocks of width {args.channels}; "
        f"a {SIDE}x{SIDE} PNG in, {SIDE * 4}x{SIDE * 4} PNG out, {raw['tiles']} tiles of the service's default "
        "size and overlap; medians; load average before: " + args.load + ")",
        "",
        "| | seconds per image | megapixels/s out | peak memory (RSS) |",
        "| --- | --- | --- | --- |",
        f"| raw ONNX Runtime, same tiles and batch size | {raw['seconds']:.2f} | {out_mp / raw['seconds']:.2f} | "
        f"{raw['peak_rss_mb']:.0f} MB |",
        f"| gan-serve `/super-resolve` (decode, tiles, stitch, PNG encode, HTTP) | {ours['seconds']:.2f} | "
        f"{out_mp / ours['seconds']:.2f} | {ours['peak_rss_mb']:.0f} MB |",
        "",
        f"gan-serve / raw ONNX Runtime throughput: {raw['seconds'] / ours['seconds']:.2f}.",
        END,
    ])
    text = DOC.read_text()
    if BEGIN in text:
        text = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), block, text, flags=re.S)
    else:
        text += "\n## `POST /super-resolve`: a 1024x1024 input, gan-serve vs raw ONNX Runtime\n\n" + block + "\n"
    DOC.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--blocks", type=int, default=4)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--port", type=int, default=8811)
    parser.add_argument("--raw", nargs=2, metavar=("MODEL_DIR", "IMAGE"), help=argparse.SUPPRESS)
    parser.add_argument("--no-doc", action="store_true")
    args = parser.parse_args()
    if args.raw:
        print(json.dumps(raw_run(Path(args.raw[0]), Path(args.raw[1]), args.repeats)))
        return
    WORK.mkdir(parents=True, exist_ok=True)
    args.load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    model_dir, image = build_model(args.blocks, args.channels), test_image()
    raw = json.loads(subprocess.run([sys.executable, __file__, "--raw", str(model_dir), str(image),
                                     "--repeats", str(args.repeats)], check=True, capture_output=True,
                                    text=True).stdout)
    ours = server_run(model_dir, image, args.repeats, args.port)
    print(json.dumps({"raw": raw, "gan_serve": ours}))
    if not args.no_doc:
        write_doc(args, raw, ours)


if __name__ == "__main__":
    main()
