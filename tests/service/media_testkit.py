"""Helpers for the upload-endpoint tests: tiny super-resolution and translation ONNX models built with
`onnx.helper` (no torch), their manifests, image bytes, and a direct onnxruntime reference."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from service.manifest import MODEL_FILENAME, Manifest, Provenance, TensorSpec

SCALE = 4
#: Pixels of context each output pixel depends on, on each side, in input pixels (two 3x3 convs).
SR_RECEPTIVE_RADIUS = 2
TRANSLATE_SIZE = 8
ATTRIBUTES = ["colour_red", "colour_green", "colour_blue", "size_small", "size_large", "striped"]
EXCLUSIVE = [["colour_red", "colour_green", "colour_blue"], ["size_small", "size_large"]]

_PROVENANCE = Provenance(checkpoint_sha256="0" * 64, training_step=1, exported_at="2024-01-01T00:00:00Z")


def _save(graph: onnx.GraphProto, path: Path) -> None:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def add_super_resolver(repo: Path, name: str = "sr", seed: int = 0) -> Path:
    """x4 SR: Conv3x3(3->8) -> Relu -> Conv3x3(8->48) -> DepthToSpace(4) -> Tanh; input in [0, 1].

    Fully convolutional with a receptive radius of 2 input pixels, so tiles with overlap >= 2 stitch
    exactly."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (8, 3, 3, 3)).astype(np.float32)
    b1 = rng.normal(0, 0.1, (8,)).astype(np.float32)
    w2 = rng.normal(0, 0.3, (3 * SCALE * SCALE, 8, 3, 3)).astype(np.float32)
    b2 = rng.normal(0, 0.1, (3 * SCALE * SCALE,)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c1"], ["r1"]),
            helper.make_node("Conv", ["r1", "W2", "B2"], ["c2"], pads=[1, 1, 1, 1]),
            helper.make_node("DepthToSpace", ["c2"], ["d2s"], blocksize=SCALE, mode="DCR"),
            helper.make_node("Tanh", ["d2s"], ["out"]),
        ],
        "tiny_sr",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 3, "H4", "W4"])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (b1, "B1"), (w2, "W2"), (b2, "B2"))],
    )
    directory = repo / name
    _save(graph, directory / MODEL_FILENAME)
    Manifest(
        name=name,
        task="super_resolve",
        architecture="srgan",
        inputs=[TensorSpec(name="image", shape=[None, 3, None, None])],
        outputs=[TensorSpec(name="out", shape=[None, 3, None, None])],
        input_range=(0.0, 1.0),
        output_range=(-1.0, 1.0),
        scale=SCALE,
        parity_max_abs_error=1e-6,
        parity_tolerance=1e-4,
        provenance=_PROVENANCE,
    ).write(directory)
    return directory


def add_translator(repo: Path, name: str = "stargan", seed: int = 1) -> Path:
    """image [N, 3, S, S] in [-1, 1] + label [N, 6] -> Tanh(Conv3x3(image) + Gemm(label) per channel)."""
    rng = np.random.default_rng(seed)
    c = len(ATTRIBUTES)
    w = rng.normal(0, 0.4, (3, 3, 3, 3)).astype(np.float32)
    wl = rng.normal(0, 0.8, (c, 3)).astype(np.float32)
    bl = np.zeros(3, dtype=np.float32)
    shape = np.array([-1, 3, 1, 1], dtype=np.int64)
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "W"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Gemm", ["label", "WL", "BL"], ["shift"]),
            helper.make_node("Reshape", ["shift", "shape"], ["shift4"]),
            helper.make_node("Add", ["conv", "shift4"], ["sum"]),
            helper.make_node("Tanh", ["sum"], ["translated"]),
        ],
        "tiny_translator",
        [
            helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, TRANSLATE_SIZE, TRANSLATE_SIZE]),
            helper.make_tensor_value_info("label", TensorProto.FLOAT, ["N", c]),
        ],
        [helper.make_tensor_value_info("translated", TensorProto.FLOAT, ["N", 3, TRANSLATE_SIZE, TRANSLATE_SIZE])],
        initializer=[
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(wl, "WL"),
            numpy_helper.from_array(bl, "BL"),
            numpy_helper.from_array(shape, "shape"),
        ],
    )
    directory = repo / name
    _save(graph, directory / MODEL_FILENAME)
    Manifest(
        name=name,
        task="translate",
        architecture="stargan",
        inputs=[
            TensorSpec(name="image", shape=[None, 3, TRANSLATE_SIZE, TRANSLATE_SIZE]),
            TensorSpec(name="label", shape=[None, c]),
        ],
        outputs=[TensorSpec(name="translated", shape=[None, 3, TRANSLATE_SIZE, TRANSLATE_SIZE])],
        image_size=TRANSLATE_SIZE,
        input_range=(-1.0, 1.0),
        output_range=(-1.0, 1.0),
        attributes=ATTRIBUTES,
        exclusive_groups=EXCLUSIVE,
        parity_max_abs_error=1e-6,
        parity_tolerance=1e-4,
        provenance=_PROVENANCE,
    ).write(directory)
    return directory


def run_model(directory: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    """A direct onnxruntime run (the reference the service must match)."""
    session = ort.InferenceSession(str(directory / MODEL_FILENAME), providers=["CPUExecutionProvider"])
    return session.run(None, {k: v.astype(np.float32) for k, v in feeds.items()})[0]


def sr_reference(directory: Path, rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> the model's float output [3, 4H, 4W] for the whole image at once."""
    return run_model(directory, {"image": rgb.astype(np.float32).transpose(2, 0, 1)[None] / 255.0})[0]


def to_uint8(chw: np.ndarray) -> np.ndarray:
    """[3, H, W] in [-1, 1] -> [H, W, 3] uint8, the service's rounding."""
    return np.rint(np.clip((chw.transpose(1, 2, 0) + 1.0) * 127.5, 0, 255)).astype(np.uint8)


def psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(peak * peak / mse)


def noise(height: int, width: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels > 1 else (height, width)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def encode(array: np.ndarray, fmt: str = "PNG", **params: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **params)
    return buf.getvalue()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` RGB pixels (a decompression bomb's header)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 4096, 9)  # would expand to gigabytes if the rows were all sent
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
