"""StarGAN's quality figures: do translations show their target attribute, and do they invert?

For each held-out image and each attribute, the target is the image's label with that one attribute
changed (a group member switched on with its peers off, a free attribute flipped; targets equal to the
image's own label are skipped). G runs in eval mode, as exported and served. Reported:
- `target_accuracy`: share of translations the classifier sees with the changed attribute at its target
  value (`per_attribute` splits it by target attribute);
- `all_attributes_accuracy`: share whose whole predicted label equals the target (the other attributes
  kept too);
- `reconstruction_l1`: mean |x - G(G(x,c'),c)| in the [-1, 1] pixel scale of the training loss;
- `real_accuracy`: the classifier's per-attribute accuracy on the real held-out images, which says how
  far its verdicts on translations can be trusted;
- on the built-in shapes only, `shape_kept`: share of translations whose shape, as the
  shapes-classifier-v4 shape head sees it, is the input's true shape (`real_shape_accuracy`: the same
  head on the inputs themselves). The attribute classifier judges only the target attributes, so a
  translation that recolours a square into a blob of the right colour passes it; this catches that.
"""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import Tensor, nn

from trainer.data.attributes import domain_targets
from trainer.evaluation import shapes_features
from trainer.evaluation.attribute_classifier import (
    AttributeClassifier,
    classifier_input_size,
    predict,
    train_classifier,
)

CLASSIFIER_IMAGES = 2000
CLASSIFIER_SEED = 0
CHUNK = 64


def load_images(dataset: Any, count: int, size: int | None = None) -> tuple[Tensor, Tensor]:
    """The first `count` (image, label) pairs, images optionally averaged down to `size` to save memory."""
    images, labels = [], []
    for start in range(0, min(count, len(dataset)), CHUNK):
        pairs = [dataset[i] for i in range(start, min(start + CHUNK, count, len(dataset)))]
        chunk = torch.stack([p[0] for p in pairs])
        if size is not None and chunk.shape[-1] != size:
            chunk = nn.functional.interpolate(chunk, size=(size, size), mode="area")
        images.append(chunk)
        labels.append(torch.stack([p[1] for p in pairs]))
    return torch.cat(images), torch.cat(labels)


def classifier_key(dataset: Any, steps: int) -> str:
    return json.dumps({"data": dataset.describe(), "steps": steps, "images": CLASSIFIER_IMAGES}, sort_keys=True)


def fit_classifier(dataset: Any, steps: int) -> AttributeClassifier:
    """The attribute classifier for a (training) data set: its first CLASSIFIER_IMAGES real images."""
    images, labels = load_images(dataset, CLASSIFIER_IMAGES, classifier_input_size(dataset.image_size))
    return train_classifier(images, labels, steps, CLASSIFIER_SEED)


def group_columns(attributes: list[str], groups: list[list[str]]) -> list[list[int]]:
    return [[attributes.index(a) for a in group] for group in groups]


def shape_judge(held_out: Any) -> tuple[nn.Module, Tensor] | None:
    """(shapes-classifier-v4, the true shape label of each held-out image) for the built-in shapes data,
    None for other data sets (their shapes are not known)."""
    shapes = getattr(held_out, "shapes", None)
    if shapes is None or not hasattr(shapes, "shape_labels"):
        return None
    return shapes_features.load_extractor(int(held_out.image_size)), shapes.shape_labels


@torch.no_grad()
def translation_metrics(
    generator: nn.Module, classifier: AttributeClassifier, images: Tensor, labels: Tensor,
    attributes: list[str], groups: list[list[str]], device: torch.device,
    judge: tuple[nn.Module, Tensor] | None = None,
) -> dict[str, Any]:
    """The figures of the module docstring; `judge` (see shape_judge) adds shape_kept."""
    columns = group_columns(attributes, groups)
    shape_net = judge[0].to(device) if judge is not None else None
    shape_kept, shape_real = 0.0, 0.0
    was_training = generator.training
    generator.eval()
    classifier = classifier.to(device)
    try:
        hits = torch.zeros(len(attributes))
        counts = torch.zeros(len(attributes))
        all_hits, rec_sum, rec_count = 0.0, 0.0, 0
        real_correct = torch.zeros(len(attributes))
        for start in range(0, images.shape[0], CHUNK):
            x = images[start : start + CHUNK].to(device)
            c = labels[start : start + CHUNK].to(device)
            real_correct += (predict(classifier, x, columns) == c).float().sum(0).cpu()
            true_shapes = judge[1][start : start + CHUNK].to(device) if judge is not None else None
            if shape_net is not None:
                shape_real += float((shape_net(x)[0].argmax(1) == true_shapes).float().sum())
            targets = torch.tensor([domain_targets(label, attributes, groups) for label in c.tolist()], device=device)
            for i in range(len(attributes)):
                target = targets[:, i]
                changed = (target != c).any(dim=1)
                if not changed.any():
                    continue
                xs, cs, ts = x[changed], c[changed], target[changed]
                fake = generator(xs, ts).float()
                predicted = predict(classifier, fake, columns)
                hits[i] += (predicted[:, i] == ts[:, i]).float().sum().cpu()
                counts[i] += xs.shape[0]
                all_hits += float((predicted == ts).all(dim=1).float().sum())
                if shape_net is not None:
                    shape_kept += float((shape_net(fake)[0].argmax(1) == true_shapes[changed]).float().sum())
                rec_sum += float((generator(fake, cs).float() - xs).abs().mean(dim=(1, 2, 3)).sum())
                rec_count += xs.shape[0]
    finally:
        generator.train(was_training)
    total = max(float(counts.sum()), 1.0)
    shape = {} if judge is None else {"shape_kept": round(shape_kept / total, 4),
                                      "real_shape_accuracy": round(shape_real / images.shape[0], 4)}
    return {
        **shape,
        "target_accuracy": round(float(hits.sum()) / total, 4),
        "all_attributes_accuracy": round(all_hits / total, 4),
        "per_attribute": {a: round(float(hits[i] / counts[i]), 4) for i, a in enumerate(attributes) if counts[i] > 0},
        "reconstruction_l1": round(rec_sum / max(rec_count, 1), 5),
        "real_accuracy": round(float(real_correct.mean()) / images.shape[0], 4),
        "translations": int(counts.sum()),
        "held_out_images": int(images.shape[0]),
    }


def evaluate_generator(
    generator: nn.Module, dataset: Any, config: Any, device: torch.device, cache: dict[str, Any],
    held_out_images: int | None = None,
) -> dict[str, Any]:
    """Train (or reuse from `cache`) the classifier on `dataset`, then score G on its held-out images."""
    key = classifier_key(dataset, config.classifier_steps)
    if key not in cache:
        cache[key] = fit_classifier(dataset, config.classifier_steps)
    held_out = dataset.held_out(held_out_images or config.eval_images)
    images, labels = load_images(held_out, len(held_out))
    return translation_metrics(generator, cache[key], images, labels, dataset.attributes, dataset.exclusive_groups,
                               device, shape_judge(held_out))
