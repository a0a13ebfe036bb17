"""The shapes feature extractor and GeneratorEvaluator: right ordering of scores, fixed seeds, no RNG side effects."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY_CONFIGS
from trainer.data import ImageFolderDataset, ShapesDataset
from trainer.evaluation import inception, shapes_features
from trainer.evaluation.generator_quality import GeneratorEvaluator, latent_generate, quantise, resolve_features
from trainer.registry import get_architecture

SIZE = 16
NAME = shapes_features.NAME
KEYS = {f"fid_{NAME}", f"kid_{NAME}", f"kid_std_{NAME}"}
SHAPE_NAMES = ("circle", "square", "triangle")
VERDICTS = {"shape_confident", "shape_share_min"} | {f"{k}_{s}" for k in ("share", "confident") for s in SHAPE_NAMES}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def extractor(cache_dir):
    return shapes_features.load_extractor(SIZE, cache_dir)


@pytest.fixture(scope="module")
def evaluator(cache_dir, extractor):
    return GeneratorEvaluator(ShapesDataset(SIZE, 300, seed=0), num_samples=200, seed=5, cache_dir=cache_dir)


def _from_dataset(dataset: ShapesDataset):
    position = iter(range(len(dataset)))
    return lambda n: torch.stack([dataset[next(position)] for _ in range(n)])


def _random_dcgan():
    arch = get_architecture("dcgan")
    config = arch.make_config(TINY_CONFIGS["dcgan"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        generator = arch.build_generator(config).eval()
    return latent_generate(generator, config.latent_dim, config.latent_distribution)


def _rng_states():
    return torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate()


def _assert_same_rng(before, after):
    assert torch.equal(before[0], after[0])
    assert np.array_equal(before[1], after[1])
    assert before[2] == after[2]


def test_shapes_extractor_tells_held_out_shapes_and_colours_apart(extractor):
    accuracy = shapes_features.attribute_accuracy(extractor, SIZE, 500, seed=123)
    assert accuracy["shape"] >= 0.9
    assert accuracy["colour"] >= 0.99


def test_shapes_extractor_training_is_deterministic_and_leaves_the_rng_alone(monkeypatch):
    monkeypatch.setattr(shapes_features, "TRAIN_IMAGES", 300)  # rendering is most of a short run's time
    before = _rng_states()
    first = shapes_features.train_extractor(SIZE, steps=5)
    second = shapes_features.train_extractor(SIZE, steps=5)
    _assert_same_rng(before, _rng_states())
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key]), key
    other_seed = shapes_features.train_extractor(SIZE, steps=5, seed=1)
    assert not torch.equal(first.state_dict()["trunk.0.weight"], other_seed.state_dict()["trunk.0.weight"])


def _no_training(*args, **kwargs):
    raise AssertionError("a saved extractor should have been used")


def test_every_shipped_extractor_is_the_current_recipe_and_is_used_without_training(monkeypatch, tmp_path):
    """The judge every machine scores with: shipped weights, not weights trained (differently) on each CPU."""
    monkeypatch.setattr(shapes_features, "train_extractor", _no_training)
    for size in shapes_features.SHIPPED_SIZES:
        assert shapes_features.shipped_path(size).is_file(), size
        net = shapes_features.load_extractor(size, tmp_path)
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert not list(tmp_path.iterdir())  # nothing trained, nothing cached
    accuracy = shapes_features.attribute_accuracy(shapes_features.load_extractor(32), 32, 500, seed=999_331)
    assert accuracy["shape"] >= 0.99 and accuracy["colour"] >= 0.99


def test_a_shipped_extractor_of_another_recipe_is_refused(monkeypatch, tmp_path, extractor):
    monkeypatch.setattr(shapes_features, "SHIPPED_DIR", tmp_path)
    monkeypatch.setattr(shapes_features, "train_extractor", _no_training)
    torch.save({"key": "another recipe", "state": extractor.state_dict()}, shapes_features.shipped_path(SIZE))
    with pytest.raises(RuntimeError, match="ship_shapes_classifier"):
        shapes_features.load_extractor(SIZE, tmp_path / "cache")


def test_a_size_without_shipped_weights_is_trained_here_with_a_warning(monkeypatch, tmp_path, extractor):
    monkeypatch.setattr(shapes_features, "SHIPPED_DIR", tmp_path / "none")
    trained = []
    monkeypatch.setattr(shapes_features, "train_extractor", lambda size: trained.append(size) or extractor)
    with pytest.warns(UserWarning, match="same kind of CPU"):
        shapes_features.load_extractor(SIZE, tmp_path / "cache")
    assert trained == [SIZE] and shapes_features.cache_path(SIZE, tmp_path / "cache").is_file()


def test_shapes_extractor_is_cached_under_its_key(cache_dir, monkeypatch, tmp_path):
    first = shapes_features.load_extractor(SIZE, cache_dir, shipped=False)
    monkeypatch.setattr(shapes_features, "train_extractor", _no_training)
    path = shapes_features.cache_path(SIZE, cache_dir)
    assert path.is_file() and NAME in path.name
    cached = shapes_features.load_extractor(SIZE, cache_dir, shipped=False)
    for key, value in first.state_dict().items():
        assert torch.equal(value, cached.state_dict()[key]), key
    # the recipe itself, not only the shipped weights, still makes a judge worth shipping
    accuracy = shapes_features.attribute_accuracy(first, SIZE, 500, seed=123)
    assert accuracy["shape"] >= 0.97 and accuracy["colour"] >= 0.99

    # a file whose key does not match (another version or recipe) is retrained over, never used
    stale = shapes_features.cache_path(SIZE, tmp_path)
    torch.save({"key": "something else", "state": first.state_dict()}, stale)
    trained = []
    monkeypatch.setattr(shapes_features, "train_extractor", lambda size: trained.append(size) or first)
    shapes_features.load_extractor(SIZE, tmp_path, shipped=False)
    assert trained == [SIZE]
    assert torch.load(stale, weights_only=True)["key"] != "something else"


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(shapes_features.CACHE_ENV, str(tmp_path / "here"))
    assert shapes_features.default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv(shapes_features.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert shapes_features.default_cache_dir() == tmp_path / "xdg" / "gan-forge"


def test_real_shapes_score_far_better_than_noise_or_an_untrained_generator(evaluator):
    real = evaluator(_from_dataset(ShapesDataset(SIZE, 200, seed=9)))
    noise = evaluator(lambda n: torch.rand(n, 3, SIZE, SIZE) * 2 - 1)
    untrained = evaluator(_random_dcgan())
    assert set(real) == set(noise) == set(untrained) == KEYS | VERDICTS
    fid, kid = f"fid_{NAME}", f"kid_{NAME}"
    assert real[fid] < 0.1 * untrained[fid] and real[fid] < 0.1 * noise[fid]
    assert abs(real[kid]) < 0.1 * untrained[kid] and abs(real[kid]) < 0.1 * noise[kid]
    assert untrained[kid] > 0 and noise[kid] > 0


def test_global_intensity_counts_for_little_and_missing_shapes_for_much(evaluator):
    """The features must judge shapes and colours, not the background level: v1, trained on clean
    renders only, scored real shapes on pure black worse than a generator of blank images."""
    images = torch.stack([ShapesDataset(SIZE, 200, seed=9)[i] for i in range(200)])
    background = images[:, :, :1, :1]  # every render's corner pixel is the plain background
    is_background = (images - background).abs().sum(dim=1, keepdim=True) < 0.05
    black = torch.where(is_background, torch.full_like(images, -1.0), images)
    blank = background.expand_as(images)
    fid = f"fid_{NAME}"
    on_black = evaluator(_from_tensor(black))[fid]
    no_shapes = evaluator(_from_tensor(blank))[fid]
    assert on_black < 0.1 * no_shapes


def _from_tensor(images: torch.Tensor):
    """`generate` that hands out the given images in order."""
    start = 0

    def generate(n: int) -> torch.Tensor:
        nonlocal start
        start += n
        return images[start - n : start]

    return generate


def test_calls_are_repeatable_and_leave_every_rng_alone(evaluator):
    generate = _random_dcgan()
    before = _rng_states()
    first = evaluator(generate)
    assert evaluator(generate) == first  # same seed, same latents, same subsets
    _assert_same_rng(before, _rng_states())
    torch.randn(3)  # the caller's own stream moves on; the evaluator's does not
    assert evaluator(generate) == first


def test_construction_leaves_the_rng_alone(cache_dir, extractor):
    before = _rng_states()
    GeneratorEvaluator(ShapesDataset(SIZE, 20, seed=1), num_samples=10, cache_dir=cache_dir)
    _assert_same_rng(before, _rng_states())


def test_generated_images_of_another_size_are_brought_to_the_data_size(evaluator):
    small = evaluator(lambda n: torch.zeros(n, 3, SIZE // 2, SIZE // 2))
    same = evaluator(lambda n: torch.zeros(n, 3, SIZE, SIZE))
    assert small == same
    with pytest.raises(ValueError, match=r"must return \[100, 3, H, W\]"):
        evaluator(lambda n: torch.zeros(n, 1, SIZE, SIZE))


def test_quantise_matches_8_bit_images():
    images = torch.tensor([-1.5, -1.0, -0.2, 0.00392, 0.7, 2.0]).view(1, 1, 1, 6).expand(1, 3, 6, 6)
    levels = (quantise(images, 6) + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4)
    assert levels.min() == 0 and levels.max() == 255
    assert quantise(torch.zeros(2, 3, 4, 4), 8).shape == (2, 3, 8, 8)


def _folder(tmp_path, count=3):
    for i in range(count):
        Image.fromarray(np.full((SIZE, SIZE, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
    return ImageFolderDataset(tmp_path, SIZE)


def test_features_are_chosen_by_data_set(tmp_path):
    assert resolve_features("auto", ShapesDataset(SIZE, 2)) == "shapes"
    folder = _folder(tmp_path)
    assert resolve_features("auto", folder) == "inception"
    with pytest.raises(ValueError, match="only describe the built-in shapes"):
        resolve_features("shapes", folder)
    with pytest.raises(ValueError, match="features must be one of"):
        resolve_features("vgg", folder)


def test_missing_inception_weights_fail_at_construction(tmp_path, monkeypatch):
    monkeypatch.delenv(inception.WEIGHTS_ENV, raising=False)
    with pytest.raises(inception.InceptionWeightsError, match="--inception-weights"):
        GeneratorEvaluator(_folder(tmp_path), features="auto", num_samples=2)


def test_inception_features_name_their_keys(tmp_path):
    """Wiring only: the FID of 2048-d features (a 2048x2048 sqrtm, ~30 s on a busy 2-core machine) is
    the maths tested in test_fid_kid."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        weights = tmp_path / inception.WEIGHTS_FILE
        torch.save(inception.FIDInceptionV3().state_dict(), weights)
    evaluator = GeneratorEvaluator(_folder(tmp_path, 3), num_samples=2, inception_weights=weights)
    assert evaluator.keys == ("fid_inception-v3", "kid_inception-v3", "kid_std_inception-v3")
    assert evaluator.describe() == {"features": "inception-v3", "num_samples": 2, "real_samples": 2, "seed": 0}
    assert evaluator.real_features.shape == (2, inception.FEATURES)
    fake = evaluator.generated_features(lambda n: torch.rand(n, 3, SIZE, SIZE) * 2 - 1)
    assert fake.shape == (2, inception.FEATURES) and fake.dtype == np.float64


def test_shape_verdicts_tell_real_shapes_from_blobs_and_a_dropped_shape(evaluator):
    """Real shapes are confidently shapes, all three present; blurred ones are not confidently anything;
    squares only leave the other two shapes at a share near 0."""
    data = ShapesDataset(SIZE, 200, seed=9)
    images = torch.stack([data[i] for i in range(200)])
    real = evaluator(_in_order(images))
    blurred = torch.nn.functional.avg_pool2d(images, 5, stride=1, padding=2, count_include_pad=False)
    blobs = evaluator(_in_order(blurred))
    squares = images[data.shape_labels[:200] == 1]
    one_shape = evaluator(_in_order(squares.repeat(-(-200 // len(squares)), 1, 1, 1)[:200]))
    # the shapes classifier (v3 on) is confident on nearly every real shape (v2, trained 5x shorter: 0.81 at 16 px,
    # 0.86 at 32 px)
    assert real["shape_confident"] > 0.9 and real["shape_share_min"] > 0.2
    assert evaluator.real_verdicts["shape_confident"] > 0.9
    assert blobs["shape_confident"] < real["shape_confident"] - 0.2
    assert one_shape["share_square"] > 0.9 and one_shape["shape_share_min"] < 0.05
    assert abs(sum(real[f"share_{s}"] for s in SHAPE_NAMES) - 1.0) < 1e-6
    for verdicts in (real, blobs, one_shape):  # each shape's confident share is part of the whole
        assert abs(sum(verdicts[f"confident_{s}"] for s in SHAPE_NAMES) - verdicts["shape_confident"]) < 1e-6
        assert all(verdicts[f"confident_{s}"] <= verdicts[f"share_{s}"] + 1e-6 for s in SHAPE_NAMES)
    assert one_shape["confident_circle"] < 0.05 < one_shape["confident_square"]


def test_per_shape_confidence_names_the_shape_drawn_badly(evaluator):
    """Blurring only the circles lowers the circles' confident share and leaves the others' alone."""
    data = ShapesDataset(SIZE, 200, seed=9)
    images = torch.stack([data[i] for i in range(200)])
    circles = data.shape_labels[:200] == 0
    mixed = images.clone()
    mixed[circles] = torch.nn.functional.avg_pool2d(images[circles], 5, stride=1, padding=2, count_include_pad=False)
    real, blurred = evaluator(_in_order(images)), evaluator(_in_order(mixed))
    assert blurred["confident_circle"] < real["confident_circle"] - 0.1
    for shape in ("square", "triangle"):
        assert blurred[f"confident_{shape}"] >= real[f"confident_{shape}"] - 0.02


def _in_order(images: torch.Tensor):
    position = iter(range(len(images)))
    return lambda n: torch.stack([images[next(position)] for _ in range(n)])
