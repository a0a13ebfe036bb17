import pytest
import torch
import torch.nn.functional as F

from trainer.losses import VGG_RESCALE, build_content_loss
from trainer.models.vgg import (
    RELU5_4,
    VGG19_ENV,
    VGG19Features,
    VGGWeightsError,
    load_vgg19_features,
    vgg19_layers,
)

# torchvision's vgg19().features: conv indices and the three classifier layers, for a state dict in its layout
TORCHVISION_CONVS = (0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34)


def torchvision_layout_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with exactly the keys and shapes of torchvision's vgg19().state_dict()."""
    generator = torch.Generator().manual_seed(seed)
    state, channels = {}, 3
    widths = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]
    for index, width in zip(TORCHVISION_CONVS, widths, strict=True):
        state[f"features.{index}.weight"] = torch.randn(width, channels, 3, 3, generator=generator) * 0.05
        state[f"features.{index}.bias"] = torch.randn(width, generator=generator) * 0.01
        channels = width
    for index, (out, inp) in zip((0, 3, 6), ((4096, 25088), (4096, 4096), (1000, 4096)), strict=True):
        state[f"classifier.{index}.weight"] = torch.zeros(out, inp)
        state[f"classifier.{index}.bias"] = torch.zeros(out)
    return state


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vgg") / "vgg19-random.pth"
    state = torchvision_layout_state_dict()
    torch.save(state, path)
    return path, state


def test_layers_follow_torchvision_indices():
    layers = vgg19_layers(stop=37)
    convs = tuple(i for i, m in enumerate(layers) if isinstance(m, torch.nn.Conv2d))
    assert convs == TORCHVISION_CONVS
    assert isinstance(layers[35], torch.nn.ReLU) and isinstance(layers[36], torch.nn.MaxPool2d)
    assert RELU5_4 == 36 and len(vgg19_layers()) == 36  # features[:36] ends with relu5_4


def test_a_torchvision_layout_state_dict_loads_unchanged(vgg_file):
    path, state = vgg_file
    model = load_vgg19_features(path)
    for key, value in model.features.state_dict().items():
        torch.testing.assert_close(value, state[f"features.{key}"], rtol=0, atol=0)
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training  # a frozen feature extractor stays in eval mode
    assert model(torch.rand(2, 3, 32, 32) * 2 - 1).shape == (2, 512, 2, 2)


def test_inputs_are_imagenet_normalised(vgg_file):
    model = load_vgg19_features(vgg_file[0])
    images = torch.rand(1, 3, 16, 16) * 2 - 1
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(model(images), model.features(((images + 1) / 2 - mean) / std))


def test_vgg54_content_loss_is_the_rescaled_feature_mse(vgg_file):
    loss = build_content_loss("vgg54", str(vgg_file[0]))
    sr, hr = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 3, 32, 32) * 2 - 1
    expected = F.mse_loss(loss.features(sr) / 12.75, loss.features(hr) / 12.75)
    torch.testing.assert_close(loss(sr, hr), expected)
    assert abs(VGG_RESCALE**2 - 0.00615) < 1e-5  # the paper's "rescaling factor of ~0.006"
    assert len(loss.weights_sha256) == 64


def test_missing_weights_are_refused_with_instructions(tmp_path, monkeypatch):
    monkeypatch.delenv(VGG19_ENV, raising=False)
    instructions = r"(?s)no VGG19 weights given.*download\.pytorch\.org.*--content-loss mse"
    with pytest.raises(VGGWeightsError, match=instructions):
        build_content_loss("vgg54", "")
    with pytest.raises(VGGWeightsError, match=r"(?s)does not exist.*--vgg19-weights PATH or set GAN_VGG19_WEIGHTS"):
        load_vgg19_features(tmp_path / "nowhere.pth")


def test_the_environment_variable_names_the_file(vgg_file, monkeypatch):
    monkeypatch.setenv(VGG19_ENV, str(vgg_file[0]))
    assert isinstance(load_vgg19_features(None), VGG19Features)


def test_a_file_in_another_layout_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(VGGWeightsError, match="not a torchvision VGG19 state dict"):
        load_vgg19_features(path)
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(VGGWeightsError, match="not a readable"):
        load_vgg19_features(tmp_path / "junk.pth")
