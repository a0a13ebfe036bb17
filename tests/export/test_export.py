import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from export import cli
from export.image_output import uint8_parity
from export.onnx_export import ExportError, export_checkpoint, verify_parity
from service.manifest import Manifest
from trainer.registry import get_architecture
from trainer.served import load_served_generator


def served_generator(run_dir):
    served = load_served_generator(run_dir)
    return served.network, served.config


@pytest.mark.parametrize("arch", ["dcgan", "lsgan"])
def test_export_matches_pytorch_at_several_batch_sizes(arch, tiny_checkpoints, tmp_path):
    result = export_checkpoint(tiny_checkpoints[arch], tmp_path / "repo")
    model_dir = tmp_path / "repo" / arch
    assert sorted(p.name for p in model_dir.iterdir()) == ["manifest.json", "model.onnx"]
    onnx.checker.check_model(str(model_dir / "model.onnx"), full_check=True)
    manifest = Manifest.read(model_dir)
    assert manifest == result.manifest
    assert manifest.task == "generate" and manifest.architecture == arch
    assert manifest.inputs[0].name == "latent" and manifest.inputs[0].shape == [None, 16]
    assert manifest.outputs[0].shape == [None, 16, 16, 3]
    assert (manifest.outputs[0].dtype, manifest.outputs[0].layout) == ("uint8", "NHWC") and manifest.uint8_output
    assert manifest.parity_max_abs_error <= manifest.parity_tolerance == 1e-4
    assert manifest.parity_max_level_error in (0, 1)
    assert manifest.provenance.training_step == 4 and len(manifest.provenance.checkpoint_sha256) == 64
    assert manifest.latent_distribution == ("normal" if arch == "dcgan" else "uniform")

    generator, config = served_generator(tiny_checkpoints[arch])
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5, 17):
        z = torch.randn(batch, config.latent_dim)
        with torch.no_grad():
            expected = generator(z).numpy()
        (actual,) = session.run(None, {"latent": z.numpy()})
        assert actual.shape == (batch, 16, 16, 3) and actual.dtype == np.uint8
        assert uint8_parity(actual, expected, (-1.0, 1.0), 1e-4) <= 1  # raises unless only ties differ


def test_export_is_single_file_and_dynamic_in_batch(tiny_checkpoints, tmp_path):
    export_checkpoint(tiny_checkpoints["dcgan"], tmp_path, name="faces-v2", opset=17)
    model = onnx.load(str(tmp_path / "faces-v2" / "model.onnx"))
    assert model.opset_import[0].version >= 17
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value
    assert json.loads((tmp_path / "faces-v2" / "manifest.json").read_text())["name"] == "faces-v2"


def test_failed_parity_writes_nothing(tiny_checkpoints, tmp_path, monkeypatch):
    import export.onnx_export as module

    monkeypatch.setitem(module.TOLERANCE, "fp32", 0.0)  # no float export is bit-identical at every size
    with pytest.raises(ExportError, match="differs from PyTorch"):
        export_checkpoint(tiny_checkpoints["lsgan"], tmp_path / "repo")
    assert list((tmp_path / "repo").iterdir()) == []


def test_parity_check_catches_a_wrong_graph(tiny_checkpoints, tmp_path):
    # export one model, then verify it against a different generator: the check must fail
    export_checkpoint(tiny_checkpoints["dcgan"], tmp_path)
    generator, config = served_generator(tiny_checkpoints["dcgan"])
    with torch.no_grad():
        for p in generator.parameters():
            p.mul_(1.5)
    spec = get_architecture("dcgan").export_spec(config, generator)
    with pytest.raises(ExportError):
        verify_parity(spec, tmp_path / "dcgan" / "model.onnx", 1e-4)


def test_reexport_replaces_the_model_atomically(tiny_checkpoints, tmp_path):
    export_checkpoint(tiny_checkpoints["dcgan"], tmp_path, name="m")
    first = (tmp_path / "m" / "manifest.json").read_text()
    export_checkpoint(tiny_checkpoints["lsgan"], tmp_path, name="m")
    assert Manifest.read(tmp_path / "m").architecture == "lsgan"
    assert first != (tmp_path / "m" / "manifest.json").read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    # readable by another user (the serving container's uid reading a bind-mounted repository)
    assert (tmp_path / "m").stat().st_mode & 0o055 == 0o055
    assert all(f.stat().st_mode & 0o044 == 0o044 for f in (tmp_path / "m").iterdir())


def test_cli_reports_success_and_errors(tiny_checkpoints, tmp_path, capsys):
    assert cli.main([str(tiny_checkpoints["dcgan"]), "--out", str(tmp_path)]) == 0
    assert "max |ONNX - PyTorch|" in capsys.readouterr().out
    assert cli.main([str(tmp_path / "nowhere"), "--out", str(tmp_path)]) == 1
    assert "no checkpoint" in capsys.readouterr().err
    assert cli.main([str(tiny_checkpoints["dcgan"]), "--opset", "13"]) == 2


def test_uint8_parity_allows_one_level_only_on_rounding_ties():
    floats = np.array([0.2, 0.5, -1.0, 1.0], dtype=np.float32).reshape(1, 1, 2, 2)  # 153, 191.25, 0, 255
    exact = np.array([153, 191, 0, 255], dtype=np.uint8).reshape(1, 2, 2, 1)
    assert uint8_parity(exact, floats, (-1.0, 1.0), 1e-4) == 0
    tie = np.zeros((1, 1, 1, 1), dtype=np.float32)  # 127.5 after scaling: rint gives 128, 127 is a tie's other side
    assert uint8_parity(np.array([[[[127]]]], dtype=np.uint8), tie, (-1.0, 1.0), 1e-4) == 1
    with pytest.raises(ValueError, match="away from a rounding tie"):
        uint8_parity(exact + np.array([1, 0, 0, 0], dtype=np.uint8).reshape(1, 2, 2, 1), floats, (-1.0, 1.0), 1e-4)
    with pytest.raises(ValueError, match="2 levels"):
        uint8_parity(exact + np.array([0, 2, 0, 0], dtype=np.uint8).reshape(1, 2, 2, 1), floats, (-1.0, 1.0), 1e-4)


def test_precision_fp16_export_is_verified_at_the_fp16_tolerance(tiny_checkpoints, tmp_path, capsys):
    repo = tmp_path / "repo"
    assert cli.main([str(tiny_checkpoints["dcgan"]), "--out", str(repo), "--precision", "fp16"]) == 0
    assert "fp16" in capsys.readouterr().out
    manifest = Manifest.read(repo / "dcgan")
    assert manifest.precision == "fp16" and manifest.parity_tolerance == 2e-2
    assert 0 < manifest.parity_max_abs_error <= 2e-2 and manifest.parity_max_level_error is not None
    model = onnx.load(str(repo / "dcgan" / "model.onnx"))
    kinds = {t.data_type for t in model.graph.initializer if len(t.dims) > 1}
    assert kinds == {onnx.TensorProto.FLOAT16}  # weights in half precision
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # the service feeds float32
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    generator, config = served_generator(tiny_checkpoints["dcgan"])
    session = ort.InferenceSession(str(repo / "dcgan" / "model.onnx"), providers=["CPUExecutionProvider"])
    z = torch.randn(6, config.latent_dim)
    with torch.no_grad():
        expected = generator(z).numpy()
    (actual,) = session.run(None, {"latent": z.numpy()})
    assert uint8_parity(actual, expected, (-1.0, 1.0), 2e-2) <= 1
    # --fp16 stays an alias; it cannot be combined with a contradicting --precision
    assert cli.main([str(tiny_checkpoints["dcgan"]), "--out", str(repo), "--name", "b", "--fp16"]) == 0
    assert Manifest.read(repo / "b").precision == "fp16"
    assert cli.main([str(tiny_checkpoints["dcgan"]), "--out", str(repo), "--fp16", "--precision", "fp32"]) == 2
