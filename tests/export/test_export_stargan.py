import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export.image_output import uint8_parity
from export.onnx_export import export_checkpoint
from service.manifest import Manifest
from tests.conftest import train_tiny
from trainer.registry import get_architecture
from trainer.training.checkpoint import load_checkpoint

COLOURS = ["colour_red", "colour_green", "colour_blue"]


@pytest.fixture(scope="module", params=["instance", "running"])
def exported(request, tmp_path_factory):
    """A tiny trained StarGAN (G's InstanceNorm in eval mode by image or running statistics), exported."""
    root = tmp_path_factory.mktemp(f"stargan-{request.param}")
    run = train_tiny("stargan", root / "run", norm_stats=request.param)
    result = export_checkpoint(run.out, root / "repo")
    state = load_checkpoint(run.out)
    arch = get_architecture("stargan")
    generator = arch.build_generator(arch.make_config(state["config"]))
    generator.load_state_dict(state["generator"])
    return result, generator.eval(), request.param


def labels(batch, rng):
    return torch.nn.functional.one_hot(torch.randint(0, 3, (batch,), generator=rng), 3).float()


def test_manifest_declares_the_translate_signature(exported):
    result, _, _ = exported
    manifest = Manifest.read(result.directory)
    assert manifest == result.manifest and manifest.task == "translate" and manifest.architecture == "stargan"
    assert [(t.name, t.shape) for t in manifest.inputs] == [("image", [None, 3, 16, 16]), ("label", [None, 3])]
    assert [(t.name, t.shape, t.dtype) for t in manifest.outputs] == [("translated", [None, 16, 16, 3], "uint8")]
    assert manifest.image_size == 16 and manifest.input_range == (-1.0, 1.0) and manifest.output_range == (-1.0, 1.0)
    assert manifest.attributes == COLOURS and manifest.exclusive_groups == [COLOURS]
    assert manifest.parity_max_abs_error <= manifest.parity_tolerance == 1e-4
    assert json.loads((result.directory / "manifest.json").read_text())["attributes"] == COLOURS


def test_onnx_matches_pytorch_with_dynamic_batch(exported):
    result, generator, _ = exported
    model = onnx.load(str(result.directory / "model.onnx"))
    for value in list(model.graph.input) + list(model.graph.output):
        batch_dim = value.type.tensor_type.shape.dim[0]
        assert batch_dim.dim_param and not batch_dim.dim_value
    session = ort.InferenceSession(str(result.directory / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = torch.Generator().manual_seed(5)
    for batch in (1, 4, 13):
        x, c = torch.rand(batch, 3, 16, 16, generator=rng) * 2 - 1, labels(batch, rng)
        with torch.no_grad():
            expected = generator(x, c).numpy()
        (actual,) = session.run(["translated"], {"image": x.numpy(), "label": c.numpy()})
        assert actual.shape == (batch, 16, 16, 3)
        assert uint8_parity(actual, expected, (-1.0, 1.0), 1e-4) <= 1  # raises unless only ties differ


def test_one_images_output_does_not_depend_on_its_batch(exported):
    result, generator, mode = exported
    norms = [m for m in generator.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert all(m.eval_stats == mode for m in norms)
    assert any(m.running_mean.abs().sum() > 0 for m in norms)  # trained running statistics, not the initial 0/1
    session = ort.InferenceSession(str(result.directory / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = torch.Generator().manual_seed(6)
    x, c = torch.rand(6, 3, 16, 16, generator=rng) * 2 - 1, labels(6, rng)
    (together,) = session.run(None, {"image": x.numpy(), "label": c.numpy()})
    (alone,) = session.run(None, {"image": x[:1].numpy(), "label": c[:1].numpy()})
    assert np.abs(alone[0].astype(int) - together[0]).max() <= 1  # 8-bit: at most a rounding tie apart
    with torch.no_grad():
        torch.testing.assert_close(generator(x[:1], c[:1])[0], generator(x, c)[0], atol=1e-5, rtol=0)
    # and the label matters: the same image to another colour comes out different
    (other,) = session.run(None, {"image": x[:1].numpy(), "label": np.roll(c[:1].numpy(), 1, axis=1)})
    assert np.abs(other.astype(int) - alone).max() > 0


def test_norm_statistics_choice_changes_the_served_output(tmp_path):
    run = train_tiny("stargan", tmp_path / "run")
    state = load_checkpoint(run.out)
    arch = get_architecture("stargan")
    outputs = []
    for mode in ("instance", "running"):
        generator = arch.build_generator(arch.make_config({**state["config"], "norm_stats": mode}))
        generator.load_state_dict(state["generator"])
        with torch.no_grad():
            outputs.append(generator.eval()(torch.zeros(1, 3, 16, 16), torch.tensor([[1.0, 0, 0]])))
    assert not torch.allclose(*outputs)
    with pytest.raises(ValueError, match="InstanceNorm eval statistics"):
        arch.build_generator(arch.make_config({**state["config"], "norm_stats": "batch"}))
