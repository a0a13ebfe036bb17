"""PGGAN export: the EMA generator at the resolution (and alpha) its checkpoint reached, verified by ORT."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.image_output import uint8_parity
from export.onnx_export import export_checkpoint
from service.manifest import Manifest
from tests.conftest import train_tiny
from trainer.models import pggan
from trainer.registry import get_architecture
from trainer.training.checkpoint import load_checkpoint


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs stopped fully grown (16x16 stable, 10 steps) and mid-way through the 8x8 fade (4 steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is faster on a shared machine
    root = tmp_path_factory.mktemp("pggan")
    try:
        yield {"grown": train_tiny("pggan", root / "grown", steps=10).out,
               "fading": train_tiny("pggan", root / "fading", steps=4).out}
    finally:
        torch.set_num_threads(threads)


def ema_generator(run_dir):
    state = load_checkpoint(run_dir)
    arch = get_architecture("pggan")
    assert arch.served_generator_key == "generator_ema"
    generator = arch.build_generator(arch.make_config(state["config"]))
    generator.load_state_dict(state["generator_ema"])
    return generator.eval(), state


@pytest.mark.parametrize(("run", "resolution", "alpha", "images_seen"),
                         [("grown", 16, 1.0, 80), ("fading", 8, 0.5, 32)])
def test_export_serves_the_ema_generator_at_the_reached_stage(runs, tmp_path, run, resolution, alpha, images_seen):
    result = export_checkpoint(runs[run], tmp_path)
    manifest = Manifest.read(tmp_path / "pggan")
    assert manifest == result.manifest and manifest.architecture == "pggan"
    assert manifest.image_size == resolution and manifest.outputs[0].shape == [None, resolution, resolution, 3]
    assert manifest.latent_distribution == "normal" and manifest.inputs[0].shape == [None, 16]
    assert manifest.extra == {"resolution": resolution, "alpha": alpha, "images_seen": images_seen}
    assert manifest.provenance.images_seen == images_seen
    assert manifest.parity_max_abs_error <= manifest.parity_tolerance == 1e-4

    generator, state = ema_generator(runs[run])
    assert not torch.equal(state["generator_ema"]["to_rgb.8.weight"], state["generator"]["to_rgb.8.weight"])
    session = ort.InferenceSession(str(tmp_path / "pggan" / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        z = torch.randn(batch, 16) * 3  # not unit-norm: the latent pixel norm must be inside the graph
        with torch.no_grad():
            expected = generator(z, resolution, alpha).numpy()
            assert np.array_equal(expected, generator(z).numpy())  # G(z) defaults to the recorded stage
        (actual,) = session.run(None, {"latent": z.numpy()})
        assert actual.shape == (batch, resolution, resolution, 3)
        assert uint8_parity(actual, expected, (-1.0, 1.0), 1e-4) <= 1  # raises unless only ties differ

    # only the layers that stage uses travel: no 16x16 weights in the 8x8 export, no old toRGB once grown
    grown = generator.grown()
    assert (grown.rgb_prev is None) == (alpha == 1.0)
    model = onnx.load(str(tmp_path / "pggan" / "model.onnx"))
    convs = [m for m in grown.modules() if isinstance(m, pggan.EqualizedConv2d)]
    assert sum(node.op_type == "Conv" for node in model.graph.node) == len(convs) == (6 if alpha == 1.0 else 5)
    weights = sum(int(np.prod(t.dims)) for t in model.graph.initializer)
    assert 0 <= weights - sum(p.numel() for p in grown.parameters()) < 32  # plus a few scalar constants
