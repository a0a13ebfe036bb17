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
from trainer.evaluation import sr_eval
from trainer.served import load_served_generator
from trainer.training.checkpoint import resolve_checkpoint


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny trained SRResNet (BatchNorm statistics moved off their initial values) and its export."""
    root = tmp_path_factory.mktemp("sr")
    run = train_tiny("srresnet", root / "run", steps=4)
    result = export_checkpoint(run.out, root / "repo", name="sr")
    return run.out, result.directory


def served_generator(run_dir):
    return load_served_generator(run_dir).network


def test_manifest_describes_a_x4_super_resolve_model(exported):
    _, model_dir = exported
    manifest = Manifest.read(model_dir)
    assert manifest.task == "super_resolve" and manifest.architecture == "srresnet"
    assert manifest.scale == 4 and manifest.image_size is None and manifest.channels == 3
    assert manifest.input_range == (0.0, 1.0) and manifest.output_range == (-1.0, 1.0)
    assert manifest.inputs[0].name == "image" and manifest.inputs[0].shape == [None, 3, None, None]
    assert manifest.outputs[0].name == "output" and manifest.outputs[0].shape == [None, None, None, 3]
    assert manifest.outputs[0].dtype == "uint8" and manifest.outputs[0].layout == "NHWC"
    assert manifest.parity_max_abs_error <= manifest.parity_tolerance == 1e-4
    assert manifest.extra["blocks"] == 2 and manifest.extra["channels"] == 8


def test_an_srgan_manifest_names_the_srresnet_it_started_from(exported, tmp_path):
    """The chain of provenance: the SRGAN's manifest holds the stage-1 checkpoint's sha256, the same hash
    the SRResNet's own manifest records, so the pair can be matched after the run folders are gone."""
    run_dir, srresnet_dir = exported
    stage2 = train_tiny("srgan", tmp_path / "gan", steps=1, init_from=str(run_dir))
    provenance = Manifest.read(export_checkpoint(stage2.out, tmp_path / "repo", name="gan").directory).provenance
    srresnet = Manifest.read(srresnet_dir).provenance
    start = provenance.model_extra["initialised_from"]
    assert start["arch"] == "srresnet" and start["step"] == srresnet.training_step == 4
    assert start["checkpoint_sha256"] == srresnet.checkpoint_sha256
    assert "initialised_from" not in srresnet.model_extra  # a run from random weights names none


    # a checkpoint written before the hash was recorded (key "sr_initialised_from") still names its start
    checkpoint = resolve_checkpoint(stage2.out)
    state = torch.load(checkpoint, weights_only=False)
    state["sr_initialised_from"] = {k: v for k, v in state.pop("initialised_from").items() if k != "checkpoint_sha256"}
    torch.save(state, checkpoint)
    older = Manifest.read(export_checkpoint(stage2.out, tmp_path / "repo", name="older").directory).provenance
    assert older.model_extra["initialised_from"] == {k: v for k, v in start.items() if k != "checkpoint_sha256"}


def test_graph_is_dynamic_in_batch_height_and_width(exported):
    model = onnx.load(str(exported[1] / "model.onnx"))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True] and dims[1].dim_value == 3
    dims = model.graph.output[0].type.tensor_type.shape.dim  # uint8 NHWC images
    assert [bool(d.dim_param) for d in dims] == [True, True, True, False] and dims[3].dim_value == 3
    for node in model.graph.node:  # BatchNorm exported in inference mode (running statistics)
        if node.op_type == "BatchNormalization":
            assert all(a.i == 0 for a in node.attribute if a.name == "training_mode")


@pytest.mark.parametrize(("batch", "height", "width"), [(1, 8, 8), (2, 13, 21), (3, 32, 17), (1, 48, 40)])
def test_onnx_matches_pytorch_at_several_sizes(exported, batch, height, width):
    run_dir, model_dir = exported
    generator = served_generator(run_dir)
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    lr = torch.rand(batch, 3, height, width, generator=torch.Generator().manual_seed(height))
    with torch.no_grad():
        expected = generator(lr).numpy()
    (actual,) = session.run(None, {"image": lr.numpy()})
    assert actual.shape == (batch, 4 * height, 4 * width, 3)
    assert uint8_parity(actual, expected, (-1.0, 1.0), 1e-4) <= 1  # raises unless only ties differ


def test_an_image_does_not_depend_on_its_batch(exported):
    session = ort.InferenceSession(str(exported[1] / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.random((1, 3, 12, 12), dtype=np.float32)
    (alone,) = session.run(None, {"image": x})
    (together,) = session.run(None, {"image": np.concatenate([x, rng.random((4, 3, 12, 12), dtype=np.float32)])})
    assert np.abs(together[:1].astype(int) - alone).max() <= 1  # 8-bit: at most a rounding tie apart


def test_eval_command_scores_checkpoint_and_onnx_alike(exported, tmp_path, capsys):
    run_dir, model_dir = exported
    folder = tmp_path / "hr"
    folder.mkdir()
    rng = np.random.default_rng(1)
    from PIL import Image

    for i, (w, h) in enumerate([(64, 48), (50, 70)]):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    results = {}
    for name, model in (("checkpoint", run_dir), ("onnx", model_dir)):
        code = sr_eval.main([str(model), "--data", f"folder:{folder}", "--side-by-side", str(tmp_path / f"{name}.png")])
        assert code == 0
        results[name] = json.loads(capsys.readouterr().out)
    assert results["checkpoint"]["images"] == 2 and results["checkpoint"]["border"] == 4
    assert results["checkpoint"]["psnr_y"] == pytest.approx(results["onnx"]["psnr_y"], abs=0.05)
    assert results["checkpoint"]["bicubic_psnr_y"] == results["onnx"]["bicubic_psnr_y"]
    assert (tmp_path / "onnx.png").is_file()
    assert sr_eval.main([str(tmp_path / "nowhere"), "--data", f"folder:{folder}"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
