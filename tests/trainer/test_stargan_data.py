import random

import numpy as np
import pytest
import torch
from PIL import Image

from trainer.data import DatasetError
from trainer.data.attributes import (
    LabelError,
    build_label,
    domain_targets,
    is_valid_label,
    parse_groups,
    select_attributes,
    set_attribute,
)
from trainer.data.labelled import (
    ShapesAttributeDataset,
    build_labelled_dataset,
    read_celeba_attributes,
)
from trainer.models.stargan import StarGANConfig, random_labels
from trainer.registry import get_architecture
from trainer.training.translation import StarGAN

CELEBA_NAMES = (  # noqa: SIM905 (the header line of list_attr_celeba.txt, as it reads)
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair Blond_Hair "
    "Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup High_Cheekbones "
    "Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline "
    "Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick "
    "Wearing_Necklace Wearing_Necktie Young"
).split()
HAIR = ["Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair"]
GROUPS = [["red", "green", "blue"]]
ATTRS = ["red", "green", "blue", "male", "young"]


# --- pure label functions (the service mirrors these) ---

def test_build_label_sets_exactly_the_named_attributes():
    assert build_label(["green", "young"], ATTRS, GROUPS) == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert build_label([], ATTRS, GROUPS) == [0.0] * 5


def test_build_label_refuses_unknown_names_and_exclusive_clashes():
    with pytest.raises(LabelError, match="unknown attribute"):
        build_label(["purple"], ATTRS, GROUPS)
    with pytest.raises(LabelError, match="mutually exclusive"):
        build_label(["red", "blue"], ATTRS, GROUPS)


def test_set_attribute_keeps_exclusive_groups_valid():
    label = [1.0, 0.0, 0.0, 1.0, 0.0]
    assert set_attribute(label, "blue", True, ATTRS, GROUPS) == [0.0, 0.0, 1.0, 1.0, 0.0]
    assert set_attribute(label, "red", False, ATTRS, GROUPS) == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert set_attribute(label, "young", True, ATTRS, GROUPS) == [1.0, 0.0, 0.0, 1.0, 1.0]


def test_domain_targets_switch_group_members_on_and_flip_free_attributes():
    targets = domain_targets([1.0, 0.0, 0.0, 1.0, 0.0], ATTRS, GROUPS)
    assert targets == [[1, 0, 0, 1, 0], [0, 1, 0, 1, 0], [0, 0, 1, 1, 0], [1, 0, 0, 0, 0], [1, 0, 0, 1, 1]]
    assert all(is_valid_label(t, ATTRS, GROUPS) for t in targets)
    assert not is_valid_label([1, 1, 0, 0, 0], ATTRS, GROUPS) and not is_valid_label([1, 0, 0], ATTRS, GROUPS)


def test_selection_by_name_or_group_keeps_the_given_order():
    named = {"colour": ["c_r", "c_g"], "shape": ["s_o", "s_x"]}
    available = ["s_o", "s_x", "c_r", "c_g"]
    assert select_attributes("colour", available, named) == ["c_r", "c_g"]
    assert select_attributes("c_g,shape", available, named) == ["c_g", "s_o", "s_x"]
    with pytest.raises(LabelError, match="unknown attribute 'c_b'"):
        select_attributes("c_b", available, named)
    with pytest.raises(LabelError, match="twice"):
        select_attributes("colour,c_r", available, named)
    assert parse_groups("a|b|c; d|e;") == [["a", "b", "c"], ["d", "e"]]


def test_random_labels_respect_exclusive_groups():
    labels = random_labels(500, 5, [[0, 1, 2]], torch.Generator().manual_seed(0))
    assert set(labels.unique().tolist()) == {0.0, 1.0}
    assert labels[:, :3].sum(1).max() == 1 and (labels[:, :3].sum(1) == 0).any()
    assert 0.3 < labels[:, 3].mean() < 0.7


def test_training_targets_are_a_permutation_of_the_batch_labels(monkeypatch):
    config = StarGANConfig(image_size=16, g_conv_dim=4, d_conv_dim=4, g_repeat_num=1, n_critic=1,
                           attributes="red,green,blue,male", exclusive_groups="red|green|blue")
    algo = get_architecture("stargan").build_algorithm(config, torch.device("cpu"), 0, False)
    assert isinstance(algo, StarGAN) and algo.groups == [["red", "green", "blue"]]
    seen = []
    real_generator = algo.generator.forward
    monkeypatch.setattr(algo.generator, "forward", lambda x, c: seen.append(c.clone()) or real_generator(x, c))
    labels = torch.tensor([[1, 0, 0, 1], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 0], [1, 0, 0, 0], [0, 1, 0, 1]]).float()
    algo.train_step((torch.zeros(6, 3, 16, 16), labels))
    target = seen[0]
    assert sorted(map(tuple, target.tolist())) == sorted(map(tuple, labels.tolist()))
    assert not torch.equal(target, labels)  # shuffled (for this seed)
    assert torch.equal(seen[-1], labels)  # the reconstruction G(G(x, c'), c) goes back to the originals


# --- data sets ---

def test_shapes_attributes_by_group_and_by_name():
    config = StarGANConfig(image_size=16, attributes="")
    data = build_labelled_dataset("shapes:40", config, seed=1)
    assert data.attributes == ["colour_red", "colour_green", "colour_blue", "colour_yellow", "colour_magenta",
                               "colour_cyan"]
    assert config.attributes == ",".join(data.attributes) and config.exclusive_groups == "|".join(data.attributes)
    image, label = data[3]
    assert image.shape == (3, 16, 16) and label.sum() == 1
    assert int(label.argmax()) == int(data.shapes.colour_labels[3])

    config = StarGANConfig(image_size=16, attributes="colour_blue,shape,colour_red")
    data = build_labelled_dataset("shapes:40", config, seed=1)
    assert data.attributes == ["colour_blue", "shape_circle", "shape_square", "shape_triangle", "colour_red"]
    assert data.exclusive_groups == [["shape_circle", "shape_square", "shape_triangle"], ["colour_blue", "colour_red"]]
    assert (data.labels[:, 1:4].sum(1) == 1).all() and data.labels[:, [0, 4]].sum(1).max() == 1
    held = data.held_out(10)
    assert isinstance(held, ShapesAttributeDataset) and len(held) == 10
    assert not torch.equal(held.images, data.images[:10])
    with pytest.raises(LabelError, match="unknown attribute"):
        build_labelled_dataset("shapes:8", StarGANConfig(image_size=16, attributes="colour_purple"))


def make_fake_celeba(root, n=25, missing=()):
    """A tiny CelebA tree in the real layout: img_align_celeba/*.jpg and list_attr_celeba.txt."""
    rng = np.random.default_rng(0)
    (root / "img_align_celeba").mkdir(parents=True)
    rows = {}
    for i in range(1, n + 1):
        name = f"{i:06d}.jpg"
        values = rng.choice([-1, 1], size=len(CELEBA_NAMES))
        rows[name] = values
        if i not in missing:
            pixels = rng.integers(0, 256, (218 // 6, 178 // 6, 3), dtype=np.uint8)  # CelebA's 178x218 aspect
            Image.fromarray(pixels).save(root / "img_align_celeba" / name)
    lines = [str(n), " ".join(CELEBA_NAMES)]
    lines += [name + " " + " ".join(f"{v:2d}" for v in values) for name, values in rows.items()]
    (root / "list_attr_celeba.txt").write_text("\n".join(lines) + "\n")
    return rows


def test_celeba_attribute_file_in_the_real_format(tmp_path):
    rows = make_fake_celeba(tmp_path, n=5)
    names, files, values = read_celeba_attributes(tmp_path / "list_attr_celeba.txt")
    assert names == CELEBA_NAMES and files == list(rows)
    assert values[2] == [1.0 if v == 1 else 0.0 for v in rows["000003.jpg"]]


def test_celeba_loader_paper_attributes_crop_and_test_split(tmp_path):
    rows = make_fake_celeba(tmp_path, n=25)
    config = StarGANConfig(image_size=16)
    data = build_labelled_dataset(f"celeba:{tmp_path}", config)
    assert data.attributes == ["Black_Hair", "Blond_Hair", "Brown_Hair", "Male", "Young"]
    assert data.exclusive_groups == [["Black_Hair", "Blond_Hair", "Brown_Hair"]]
    assert config.attributes == "Black_Hair,Blond_Hair,Brown_Hair,Male,Young"
    # the reference's split: rows shuffled by random.seed(1234); here 25 images -> 2 held out
    order = list(rows)
    random.Random(1234).shuffle(order)
    held = data.held_out(100)
    assert [p.name for p in held.paths] == order[:2]
    assert sorted(p.name for p in data.paths) == sorted(order[2:]) and len(data) == 23
    image, label = data[0]
    assert image.shape == (3, 16, 16) and image.min() >= -1 and image.max() <= 1
    columns = [CELEBA_NAMES.index(a) for a in data.attributes]
    assert label.tolist() == [1.0 if rows[data.paths[0].name][c] == 1 else 0.0 for c in columns]
    assert data.describe()["crop"] == 178 and data.describe()["test_images"] == 2

    custom = StarGANConfig(image_size=16, attributes="Smiling,Eyeglasses", crop=0)
    data = build_labelled_dataset(f"celeba:{tmp_path / 'img_align_celeba'},{tmp_path / 'list_attr_celeba.txt'}", custom)
    assert data.attributes == ["Smiling", "Eyeglasses"] and data.exclusive_groups == [] and data.crop is None


def test_celeba_loader_skips_missing_images_and_reports_bad_paths(tmp_path):
    make_fake_celeba(tmp_path / "c", n=12, missing=(3, 4))
    with pytest.warns(UserWarning, match="2 of 12 listed images are missing"):
        data = build_labelled_dataset(f"celeba:{tmp_path / 'c'}", StarGANConfig(image_size=16))
    assert len(data) + len(data.held_out(100)) == 10
    with pytest.raises(DatasetError, match="list_attr_celeba.txt"):
        build_labelled_dataset(f"celeba:{tmp_path}", StarGANConfig(image_size=16))


def test_csv_loader(tmp_path):
    images = tmp_path / "photos"
    images.mkdir()
    lines = ["file,smiling,glasses,hat"]
    for i in range(12):
        Image.fromarray(np.full((20, 24, 3), i * 20, np.uint8)).save(images / f"p{i}.png")
        lines.append(f"p{i}.png,{i % 2},{'true' if i % 3 == 0 else 'false'},{-1 if i < 6 else 1}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    config = StarGANConfig(image_size=16, attributes="glasses,smiling", exclusive_groups="")
    data = build_labelled_dataset(f"csv:{images},{tmp_path / 'labels.csv'}", config)
    assert data.attributes == ["glasses", "smiling"] and data.exclusive_groups == []
    assert len(data) == 11 and len(data.held_out(10)) == 1  # a tenth held out
    for path, label in zip(data.paths, data.labels, strict=True):
        i = int(path.stem[1:])
        assert label.tolist() == [float(i % 3 == 0), float(i % 2)]
    image, _ = data[0]
    assert image.shape == (3, 16, 16)
    all_columns = build_labelled_dataset(f"csv:{images},{tmp_path / 'labels.csv'}", StarGANConfig(image_size=16))
    assert all_columns.attributes == ["smiling", "glasses", "hat"]
    grouped = StarGANConfig(image_size=16, exclusive_groups="smiling|hat")
    assert build_labelled_dataset(f"csv:{images},{tmp_path / 'labels.csv'}", grouped).exclusive_groups == [
        ["smiling", "hat"]]
    (tmp_path / "bad.csv").write_text("file,a\np0.png,maybe\n")
    with pytest.raises(DatasetError, match="not a binary attribute value"):
        build_labelled_dataset(f"csv:{images},{tmp_path / 'bad.csv'}", StarGANConfig(image_size=16))
    with pytest.raises(DatasetError, match="unknown data spec"):
        build_labelled_dataset("folder:x", StarGANConfig(image_size=16))
