"""The FID Inception network: pytorch-fid's weights file must load into it unchanged and strictly.

The real weights (pt_inception-2015-12-05-6726825d.pth) cannot be downloaded here, so the structure is
checked against figures taken from the reference definitions: torchvision 0.28.0
torchvision/models/inception.py (Inception3(num_classes=1008, aux_logits=False, init_weights=False)) with
the blocks replaced as pytorch-fid 0.3.0 src/pytorch_fid/inception.py `fid_inception_v3()` does
(FIDInceptionA for Mixed_5b-5d, FIDInceptionC for Mixed_6b-6e, FIDInceptionE_1/E_2 for Mixed_7b/7c).
That model, built from those two sources with torchvision's internal imports stubbed out, has the 566
state-dict tensors and 23,850,960 parameters below, the shapes sampled below, and (with the same random
weights) gave features equal to ours to the last bit; GOLDEN_* below are its outputs for weights made
by `_deterministic_weights`, so a change to any block's pooling or the input handling shows up here.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from trainer.evaluation import inception
from trainer.evaluation.inception import FIDInceptionV3, InceptionWeightsError, load_inception

EXPECTED_TENSORS = 566  # 94 BasicConv2d x (conv.weight + 5 BatchNorm tensors) + fc.weight + fc.bias
EXPECTED_PARAMETERS = 23_850_960
EXPECTED_TENSORS_PER_MODULE = {
    "Conv2d_1a_3x3": 6, "Conv2d_2a_3x3": 6, "Conv2d_2b_3x3": 6, "Conv2d_3b_1x1": 6, "Conv2d_4a_3x3": 6,
    "Mixed_5b": 42, "Mixed_5c": 42, "Mixed_5d": 42, "Mixed_6a": 24,
    "Mixed_6b": 60, "Mixed_6c": 60, "Mixed_6d": 60, "Mixed_6e": 60,
    "Mixed_7a": 36, "Mixed_7b": 54, "Mixed_7c": 54, "fc": 2,
}
EXPECTED_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_mean": (32,),
    "Conv2d_1a_3x3.bn.num_batches_tracked": (),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7dbl_5.conv.weight": (192, 128, 1, 7),
    "Mixed_6e.branch7x7_3.conv.weight": (192, 192, 7, 1),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
    "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch_pool.bn.bias": (192,),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}

# pytorch-fid's InceptionV3([3]) (its input in [0, 1], so (x + 1) / 2 of ours) on
# x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
GOLDEN_SUMS = (1557.76123046875, 1561.7359619140625)
GOLDEN_FIRST = ((4.43526029586792, 0.1096452921628952, 0.0030245317611843348, 0.6397665739059448),
                (4.461571216583252, 0.101009801030159, 0.0028788805939257145, 0.7143537402153015))


def _deterministic_weights(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """He-scaled convolutions and mild BatchNorm statistics, each tensor seeded by its key's CRC32, so
    that any implementation with these key names gets the same weights."""
    out = {}
    for key, value in state.items():
        g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
        if key.endswith("conv.weight"):
            out[key] = torch.randn(value.shape, generator=g) * math.sqrt(2.0 / value[0].numel())
        elif key.endswith(("running_var", "bn.weight")):
            out[key] = 1.0 + 0.1 * torch.rand(value.shape, generator=g)
        elif key.endswith("num_batches_tracked"):
            out[key] = value.clone()
        else:
            out[key] = 0.1 * torch.randn(value.shape, generator=g)
    return out


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """On a shared 2-core machine a second intra-op thread mostly waits for the other one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def network() -> FIDInceptionV3:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return FIDInceptionV3().eval()


def test_state_dict_has_the_reference_keys_and_shapes(network):
    state = network.state_dict()
    assert len(state) == EXPECTED_TENSORS
    assert sum(p.numel() for p in network.parameters()) == EXPECTED_PARAMETERS
    per_module: dict[str, int] = {}
    for key in state:
        per_module[key.split(".")[0]] = per_module.get(key.split(".")[0], 0) + 1
    assert per_module == EXPECTED_TENSORS_PER_MODULE
    assert {k: tuple(state[k].shape) for k in EXPECTED_SHAPES} == EXPECTED_SHAPES
    assert all(k.endswith(("conv.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var",
                           "bn.num_batches_tracked")) or k.startswith("fc.") for k in state)


def test_saved_weights_reload_strictly_and_give_2048_features(network, tmp_path):
    path = tmp_path / inception.WEIGHTS_FILE
    torch.save(network.state_dict(), path)
    loaded = load_inception(path)
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    for key, value in network.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        features = loaded(images)
    assert features.shape == (2, inception.FEATURES)
    assert torch.isfinite(features).all()
    assert (features >= 0).all()  # average of ReLU outputs
    assert not torch.allclose(features[0], features[1])


def test_features_match_pytorch_fid_on_fixed_weights(network):
    model = FIDInceptionV3().eval()
    model.load_state_dict(_deterministic_weights(network.state_dict()), strict=True)
    images = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    with torch.no_grad():
        features = model(images)
    torch.testing.assert_close(features.sum(1), torch.tensor(GOLDEN_SUMS), rtol=1e-4, atol=0)
    torch.testing.assert_close(features[:, :4], torch.tensor(GOLDEN_FIRST), rtol=1e-4, atol=1e-6)


def test_average_pools_leave_padding_out_as_tensorflow_does():
    pooled = inception._avg_pool_same(torch.ones(1, 1, 4, 4))
    assert torch.equal(pooled, torch.ones(1, 1, 4, 4))  # with the zeros counted the corners would be 4/9


def test_missing_weights_say_where_to_get_them_and_how_to_pass_them(monkeypatch, tmp_path):
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    with pytest.raises(InceptionWeightsError) as excinfo:
        load_inception()
    message = str(excinfo.value)
    for part in (inception.WEIGHTS_URL, "--inception-weights", inception.WEIGHTS_ENV):
        assert part in message
    monkeypatch.setenv(inception.WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(InceptionWeightsError, match="no Inception weights file at .*nowhere.pth"):
        load_inception()


def test_a_foreign_weights_file_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(torch.nn.Linear(3, 4).state_dict(), path)
    with pytest.raises(InceptionWeightsError, match="does not hold"):
        load_inception(path)
    (tmp_path / "junk.pth").write_text("not a weights file")
    with pytest.raises(InceptionWeightsError, match="not a readable"):
        load_inception(tmp_path / "junk.pth")
