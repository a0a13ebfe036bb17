"""The last step of every exported generator graph: its float output -> 8-bit images, channels-last.

Why in the graph: on a GPU the mapping then runs on the device and a quarter of the bytes (uint8
instead of float32) cross to the host; on any device the service's codec thread skips one pass over
every pixel. The mapping is exactly the service's former `codecs.to_uint8`, so images do not change:

    uint8 NHWC = Cast(Round(Clip((y - low) * (255 / (high - low)), 0, 255))), transposed from NCHW

ONNX `Round` rounds half to even, like numpy's `rint`. The mapping is appended to the ONNX file
after the float graph was exported (and, for fp16, converted), so it always computes in float32 and
the float graph's parity with PyTorch is checked before it is appended.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

#: Layout of the 8-bit images the graph returns (recorded in the manifest's output spec).
LAYOUT = "NHWC"


def to_uint8_reference(images: np.ndarray, value_range: tuple[float, float]) -> np.ndarray:
    """numpy version of the appended mapping ([N, C, H, W] floats -> [N, H, W, C] uint8), for parity."""
    low, high = value_range
    scaled = (np.asarray(images, dtype=np.float32) - np.float32(low)) * np.float32(255.0 / (high - low))
    return np.rint(np.clip(scaled, 0.0, 255.0)).astype(np.uint8).transpose(0, 2, 3, 1)


def append_uint8_mapping(path: Path, output_name: str, value_range: tuple[float, float]) -> None:
    """Rewrite the ONNX file at `path` so its output `output_name` is uint8 NHWC (same name)."""
    model = onnx.load(str(path))
    graph = model.graph
    outputs = [o for o in graph.output if o.name == output_name]
    if len(outputs) != 1:
        raise ValueError(f"{path}: no single graph output named {output_name!r}")
    old = outputs[0]
    dims = list(old.type.tensor_type.shape.dim)
    if len(dims) != 4:
        raise ValueError(f"{path}: output {output_name!r} has rank {len(dims)}; an NCHW image batch needs 4")
    float_name = f"{output_name}_float"
    for node in graph.node:  # the float result gets a new name; the graph output keeps the old one
        node.output[:] = [float_name if name == output_name else name for name in node.output]
        node.input[:] = [float_name if name == output_name else name for name in node.input]
    elem = old.type.tensor_type.elem_type
    low, high = value_range
    prefix = f"{output_name}_to_uint8"
    constants = {
        f"{prefix}_low": np.array(low, dtype=np.float32),
        f"{prefix}_scale": np.array(255.0 / (high - low), dtype=np.float32),
        f"{prefix}_zero": np.array(0.0, dtype=np.float32),
        f"{prefix}_max": np.array(255.0, dtype=np.float32),
    }
    graph.initializer.extend(numpy_helper.from_array(value, name) for name, value in constants.items())
    source = float_name
    nodes = []
    if elem != TensorProto.FLOAT:  # e.g. an fp16 graph exported without float32 outputs
        nodes.append(helper.make_node("Cast", [source], [f"{prefix}_f32"], to=TensorProto.FLOAT))
        source = f"{prefix}_f32"
    nodes += [
        helper.make_node("Sub", [source, f"{prefix}_low"], [f"{prefix}_shifted"]),
        helper.make_node("Mul", [f"{prefix}_shifted", f"{prefix}_scale"], [f"{prefix}_scaled"]),
        helper.make_node("Clip", [f"{prefix}_scaled", f"{prefix}_zero", f"{prefix}_max"], [f"{prefix}_clipped"]),
        helper.make_node("Round", [f"{prefix}_clipped"], [f"{prefix}_rounded"]),
        helper.make_node("Cast", [f"{prefix}_rounded"], [f"{prefix}_u8"], to=TensorProto.UINT8),
        helper.make_node("Transpose", [f"{prefix}_u8"], [output_name], perm=[0, 2, 3, 1]),
    ]
    graph.node.extend(nodes)
    shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in dims]
    new = helper.make_tensor_value_info(output_name, TensorProto.UINT8, [shape[0], shape[2], shape[3], shape[1]])
    index = list(graph.output).index(old)
    graph.output.remove(old)
    graph.output.insert(index, new)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def uint8_parity(actual: np.ndarray, expected_float: np.ndarray, value_range: tuple[float, float],
                 float_tolerance: float) -> int:
    """Largest level difference between the graph's uint8 images and the reference mapping of the
    PyTorch output; raises ValueError unless every difference is at most 1 level and sits on a
    rounding tie, i.e. where the scaled PyTorch value is within the float tolerance of x.5 (the float
    graph may legitimately land on either side of it)."""
    expected = to_uint8_reference(expected_float, value_range)
    if actual.shape != expected.shape or actual.dtype != np.uint8:
        raise ValueError(f"uint8 output {actual.dtype}{list(actual.shape)} != expected uint8{list(expected.shape)}")
    diff = np.abs(actual.astype(np.int16) - expected.astype(np.int16))
    worst = int(diff.max(initial=0))
    if worst > 1:
        raise ValueError(f"uint8 images differ from PyTorch's by {worst} levels (at most 1 is allowed)")
    if worst:
        low, high = value_range
        scale = 255.0 / (high - low)
        scaled = (expected_float.astype(np.float64) - low) * scale
        distance_to_tie = np.abs(scaled - np.floor(scaled) - 0.5).transpose(0, 2, 3, 1)
        off = diff > 0
        slack = float_tolerance * scale + 1e-3
        if (distance_to_tie[off] > slack).any():
            raise ValueError(
                f"{int(off.sum())} uint8 level(s) differ from PyTorch's away from a rounding tie "
                f"(farthest {float(distance_to_tie[off].max()):.3g} levels from x.5, allowed {slack:.3g})"
            )
    return worst
