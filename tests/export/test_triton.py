"""The Triton model repository written by `gan-export --triton-repo` / `--triton-from`.

Triton itself cannot run here, so the config is checked against Triton's real protobuf schema
(tritonclient's model_config_pb2: an unknown field or enum value fails to parse) and against the ONNX
graph it describes, and the ONNX file is checked to be the verified export, byte for byte.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2  # Triton's own schema; dev extra: tritonclient[grpc]

from export import cli, triton
from export.triton import TritonExportError, TritonOptions, write_triton_model
from service.manifest import Manifest
from service.settings import Settings

ONNX_TO_TRITON = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
                  onnx.TensorProto.UINT8: "TYPE_UINT8"}
# What each tiny model's Triton signature must be (dims without the batch axis; -1 = dynamic).
EXPECTED_IO = {
    "dcgan": ([("latent", [16])], [("image", [16, 16, 3])]),
    "srresnet": ([("image", [3, -1, -1])], [("output", [-1, -1, 3])]),
    "stargan": ([("image", [3, 16, 16]), ("label", [3])], [("translated", [16, 16, 3])]),
}


def settings_default(field: str) -> object:
    return Settings.model_fields[field].default


def parse_config(model_dir: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def graph_io(path: Path) -> tuple[list[onnx.ValueInfoProto], list[onnx.ValueInfoProto]]:
    model = onnx.load(str(path))
    initializers = {t.name for t in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in initializers], list(model.graph.output)


def triton_dims(value: onnx.ValueInfoProto) -> list[int]:
    """The ONNX shape as Triton must declare it: batch axis dropped, symbolic axes as -1."""
    dims = value.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].HasField("dim_value"), f"{value.name}: batch axis must be dynamic"
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims[1:]]


@pytest.fixture(scope="module")
def repos(tiny_checkpoints, tmp_path_factory):
    """dcgan, srresnet and stargan exported through the CLI with --triton-repo (default options)."""
    root = tmp_path_factory.mktemp("triton")
    for arch in EXPECTED_IO:
        assert cli.main([str(tiny_checkpoints[arch]), "--out", str(root / "models"), "--triton-repo",
                         str(root / "triton")]) == 0
    return root / "models", root / "triton"


@pytest.mark.parametrize("arch", list(EXPECTED_IO))
def test_config_describes_the_onnx_graph(arch, repos):
    models, tritons = repos
    model_dir = tritons / arch
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt", "manifest.json"]
    assert [p.name for p in (model_dir / "1").iterdir()] == ["model.onnx"]
    config = parse_config(model_dir)
    assert config.name == arch and config.platform == "onnxruntime_onnx"

    inputs, outputs = graph_io(model_dir / "1" / "model.onnx")
    for declared, actual in ((config.input, inputs), (config.output, outputs)):
        assert [t.name for t in declared] == [v.name for v in actual]
        for tensor, value in zip(declared, actual, strict=True):
            assert model_config_pb2.DataType.Name(tensor.data_type) == ONNX_TO_TRITON[
                value.type.tensor_type.elem_type]
            assert list(tensor.dims) == triton_dims(value)
    expected_inputs, expected_outputs = EXPECTED_IO[arch]
    assert [(t.name, list(t.dims)) for t in config.input] == expected_inputs
    assert [(t.name, list(t.dims)) for t in config.output] == expected_outputs


@pytest.mark.parametrize("arch", list(EXPECTED_IO))
def test_files_are_the_verified_export(arch, repos):
    models, tritons = repos
    assert (tritons / arch / "1" / "model.onnx").read_bytes() == (models / arch / "model.onnx").read_bytes()
    assert (tritons / arch / "manifest.json").read_bytes() == (models / arch / "manifest.json").read_bytes()
    assert Manifest.read(tritons / arch).name == arch


def test_batching_mirrors_the_service_defaults(repos):
    config = parse_config(repos[1] / "dcgan")
    max_batch = settings_default("max_batch_size")
    assert config.max_batch_size == max_batch == 32
    batching = config.dynamic_batching
    assert list(batching.preferred_batch_size) == [max_batch]
    assert batching.max_queue_delay_microseconds == round(settings_default("max_batch_delay_ms") * 1000) == 5000
    policy = batching.default_queue_policy
    assert policy.timeout_action == model_config_pb2.ModelQueuePolicy.REJECT
    assert "timeout_action: REJECT" in (repos[1] / "dcgan" / "config.pbtxt").read_text()
    assert policy.default_timeout_microseconds == round(settings_default("request_timeout_s") * 1e6) == 30_000_000
    assert policy.max_queue_size == settings_default("max_queue_size") == 256
    (group,) = config.instance_group
    assert group.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU and group.count == 1
    assert "KIND_CPU" in (repos[1] / "dcgan" / "config.pbtxt").read_text()  # the note for CPU hosts


def test_default_copies_match_service_settings():
    # export/triton.py copies these (the export image has no pydantic-settings); they must not drift
    assert settings_default("max_batch_size") == triton.DEFAULT_MAX_BATCH_SIZE
    assert settings_default("max_batch_delay_ms") == triton.DEFAULT_MAX_BATCH_DELAY_MS
    assert settings_default("max_queue_size") == triton.DEFAULT_MAX_QUEUE_SIZE
    assert settings_default("request_timeout_s") == triton.DEFAULT_REQUEST_TIMEOUT_S


@pytest.mark.parametrize("arch", list(EXPECTED_IO))
def test_a_full_batch_shaped_by_the_config_runs(arch, repos):
    """What Triton would send (max_batch_size rows, -1 filled in) is accepted by the model file."""
    config = parse_config(repos[1] / arch)
    session = ort.InferenceSession(str(repos[1] / arch / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = config.max_batch_size
    rng = np.random.default_rng(0)
    feeds = {t.name: rng.random((batch, *[12 if d == -1 else d for d in t.dims]), dtype=np.float32)
             for t in config.input}
    outputs = session.run([t.name for t in config.output], feeds)
    for tensor, array in zip(config.output, outputs, strict=True):
        assert array.shape[0] == batch and array.ndim == len(tensor.dims) + 1
        assert all(d in (-1, n) for d, n in zip(tensor.dims, array.shape[1:], strict=True))


def test_triton_from_an_exported_folder_with_options(repos, tmp_path, capsys):
    models, _ = repos
    args = ["--triton-from", str(models / "srresnet"), "--triton-repo", str(tmp_path), "--name", "sr-x4",
            "--triton-max-batch-size", "8", "--triton-max-batch-delay-ms", "2.5", "--triton-max-queue-size", "64",
            "--triton-request-timeout-s", "0.75", "--triton-instance-kind", "cpu", "--triton-instance-count", "2"]
    assert cli.main(args) == 0
    assert "sr-x4" in capsys.readouterr().out
    config = parse_config(tmp_path / "sr-x4")
    assert config.name == "sr-x4" and config.max_batch_size == 8
    assert list(config.dynamic_batching.preferred_batch_size) == [8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 2500
    assert config.dynamic_batching.default_queue_policy.max_queue_size == 64
    assert config.dynamic_batching.default_queue_policy.default_timeout_microseconds == 750_000
    assert [(g.kind, g.count) for g in config.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_CPU, 2)]
    assert (tmp_path / "sr-x4" / "1" / "model.onnx").read_bytes() == (models / "srresnet" / "model.onnx").read_bytes()

    # writing again replaces the model folder whole and leaves no staging folders behind
    assert cli.main(args[:6]) == 0
    assert parse_config(tmp_path / "sr-x4").max_batch_size == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sr-x4"]


def test_a_manifest_that_disagrees_with_the_graph_writes_nothing(repos, tmp_path):
    models, _ = repos
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes((models / "stargan" / "model.onnx").read_bytes())
    manifest = Manifest.read(models / "stargan")
    renamed = manifest.model_copy(update={"inputs": [manifest.inputs[0].model_copy(update={"name": "img"}),
                                                     manifest.inputs[1]]})
    renamed.write(broken)
    with pytest.raises(TritonExportError, match="graph inputs"):
        write_triton_model(broken, tmp_path / "triton")
    output = manifest.outputs[0].model_copy(update={"shape": [None, 3, 32, 32]})
    resized = manifest.model_copy(update={"outputs": [output]})
    resized.write(broken)
    with pytest.raises(TritonExportError, match="has shape"):
        write_triton_model(broken, tmp_path / "triton")
    assert not (tmp_path / "triton").exists()  # checked before anything is created


def test_cli_usage_and_errors(repos, tmp_path, capsys):
    models, _ = repos
    assert cli.main(["--triton-from", str(models / "dcgan")]) == 2
    assert "needs --triton-repo" in capsys.readouterr().err
    assert cli.main(["checkpoint.pt", "--triton-from", str(models / "dcgan"), "--triton-repo", str(tmp_path)]) == 2
    assert cli.main([]) == 2
    assert cli.main(["--triton-from", str(models / "dcgan"), "--triton-repo", str(tmp_path),
                     "--triton-max-batch-size", "0"]) == 2
    assert "max_batch_size" in capsys.readouterr().err
    assert cli.main(["--triton-from", str(tmp_path / "nowhere"), "--triton-repo", str(tmp_path / "t")]) == 1
    assert "no manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()


def test_options_are_validated():
    with pytest.raises(TritonExportError):
        TritonOptions(request_timeout_s=0)
    with pytest.raises(TritonExportError):
        TritonOptions(instance_kind="tpu")  # type: ignore[arg-type]
