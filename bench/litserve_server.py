"""The benchmark model behind LitServe: the comparison server of bench/bench_generate.py.

Same model file, same request body (`{"num_images": 1, "seed": 7}`; `POST /generate`), same latent
sampling (`service.latents.sample`, PCG64 by seed), same output mapping and PNG encoder
(`service.codecs.to_uint8` / `encode`, zlib level 1), same response JSON
(`{"model", "media_type", "seed", "images": [base64 PNG], "latents": null}`), and the same ONNX
Runtime session options as gan-serve would use with one stream (`service.runtime.session_options`:
ONNX Runtime's default intra-op threads, no spinning). LitServe does its own
batching across requests: `max_batch_size=32`, `batch_timeout=0.005` s, one inference worker, one
API server process (its defaults for one CPU device).

    python bench/litserve_server.py --model bench/.work/models/dcgan --port 8001

Only what the benchmark needs: no validation beyond `num_images`/`seed`, no other endpoints.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from pathlib import Path

import litserve as ls
import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # noqa: E402 - run as a script

from service import codecs, latents  # noqa: E402
from service.runtime import session_options  # noqa: E402


class GeneratorAPI(ls.LitAPI):
    def __init__(self, model_dir: Path, ort_defaults: bool = False, intra_op_threads: int = 0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model_dir = Path(model_dir)
        self.ort_defaults = ort_defaults
        self.intra_op_threads = intra_op_threads

    def setup(self, device: str) -> None:
        manifest = json.loads((self.model_dir / "manifest.json").read_text())
        self.model_name = manifest["name"]
        self.input_name = manifest["inputs"][0]["name"]
        self.latent_dim = manifest["latent_dim"]
        self.distribution = manifest["latent_distribution"]
        self.value_range = tuple(manifest["output_range"])
        path = str(self.model_dir / "model.onnx")
        options = None if self.ort_defaults else session_options(self.intra_op_threads)
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        for rows in (1, 32):  # warm-up, as gan-serve does
            self.session.run(None, {self.input_name: np.zeros((rows, self.latent_dim), np.float32)})

    def decode_request(self, request: dict) -> tuple[int, np.ndarray]:
        count = int(request.get("num_images", 1))
        seed = request.get("seed")
        seed = int(seed) if seed is not None else latents.new_seed()
        return seed, latents.sample(seed, count, self.latent_dim, self.distribution)

    def batch(self, inputs: list[tuple[int, np.ndarray]]) -> tuple[list[int], list[int], np.ndarray]:
        seeds = [seed for seed, _ in inputs]
        counts = [len(z) for _, z in inputs]
        return seeds, counts, np.concatenate([z for _, z in inputs])

    def predict(self, x: tuple[list[int], list[int], np.ndarray]) -> tuple[list[int], list[int], np.ndarray]:
        seeds, counts, z = x
        return seeds, counts, self.session.run(None, {self.input_name: z})[0]

    def unbatch(self, output: tuple[list[int], list[int], np.ndarray]) -> list[tuple[int, np.ndarray]]:
        seeds, counts, images = output
        bounds = np.cumsum([0, *counts])
        return [(seed, images[a:b]) for seed, a, b in zip(seeds, bounds[:-1], bounds[1:], strict=True)]

    def encode_response(self, output: tuple[int, np.ndarray]) -> dict:
        seed, images = output
        # current exports return uint8 NHWC images from the graph, as gan-serve serves them
        pixels = images if images.dtype == np.uint8 else codecs.to_uint8(images, self.value_range)
        return {
            "model": self.model_name,
            "media_type": "image/png",
            "seed": seed,
            "images": [base64.b64encode(codecs.encode(img, "png")).decode("ascii") for img in pixels],
            "latents": None,
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("bench/.work/models/dcgan"), help="model folder")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds")
    parser.add_argument("--ort-defaults", action="store_true", help="ORT default session options")
    parser.add_argument("--workers", type=int, default=1, help="LitServe inference workers (processes)")
    parser.add_argument("--intra-op-threads", type=int, default=0, help="per worker; 0 = ORT default")
    args = parser.parse_args(argv)
    api = GeneratorAPI(
        args.model,
        ort_defaults=args.ort_defaults,
        intra_op_threads=args.intra_op_threads,
        max_batch_size=args.max_batch_size,
        batch_timeout=args.batch_timeout,
        api_path="/generate",
    )
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=args.workers)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
