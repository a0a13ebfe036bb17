"""A small CNN that tells which attributes an image has, trained on a data set's real images.

StarGAN's translations are judged by whether an independent classifier sees the target attribute in
them (the paper trains one on real RaFD faces for the same purpose). It is small, trained for a fixed
number of steps from a fixed seed on a fixed subset, so the same data gives the same classifier and
the same scores; the global RNG is left untouched, so evaluating mid-run does not change training.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MAX_INPUT_SIZE = 64  # larger images are averaged down to this before classification
BATCH = 64
LR = 1e-3


class AttributeClassifier(nn.Module):
    def __init__(self, c_dim: int, input_size: int, width: int = 16) -> None:
        super().__init__()
        self.c_dim, self.input_size, self.width = c_dim, input_size, width
        layers: list[nn.Module] = [nn.Conv2d(3, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        dim, side = width, input_size
        while side > 4:
            layers += [nn.Conv2d(dim, dim * 2, 4, 2, 1), nn.LeakyReLU(0.2)]
            dim, side = dim * 2, side // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(dim, c_dim)

    def forward(self, x: Tensor) -> Tensor:
        """Images in [-1, 1], any size -> attribute logits."""
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area")
        return self.head(self.features(x).mean(dim=(2, 3)))


def classifier_input_size(image_size: int) -> int:
    return min(image_size, MAX_INPUT_SIZE)


def train_classifier(images: Tensor, labels: Tensor, steps: int, seed: int = 0) -> AttributeClassifier:
    """Multi-label BCE on (images in [-1, 1] at any size, 0/1 labels), with random horizontal flips."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AttributeClassifier(labels.shape[1], classifier_input_size(images.shape[-1]))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, images.shape[0], (min(BATCH, images.shape[0]),), generator=generator)
        x, y = images[index].float(), labels[index].float()
        flip = torch.rand(x.shape[0], generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        loss = F.binary_cross_entropy_with_logits(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@torch.no_grad()
def predict(model: AttributeClassifier, images: Tensor, group_columns: Sequence[Sequence[int]] = ()) -> Tensor:
    """0/1 predictions: each attribute above probability 0.5, except that within an exclusive group only
    the most probable member can be on (so a prediction is always a valid label)."""
    logits = model(images.float())
    predicted = (logits > 0).float()
    for columns in group_columns:
        columns = list(columns)
        best = logits[:, columns].argmax(dim=1)
        one_hot = F.one_hot(best, len(columns)).float()
        predicted[:, columns] = one_hot * (logits[:, columns].max(dim=1).values > 0).float()[:, None]
    return predicted
