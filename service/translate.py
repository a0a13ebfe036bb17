"""The `translate` task: one uploaded image + target attribute sets -> one translated image per set.

read/admit: the upload, its options and target sets (422 for unknown names or a group conflict, 413
for too many), all checked before the image is decoded. decode: the image as the model's input row,
repeated once per target, beside the label rows, on the codec pool; every target row is in one
batcher job, so they compute together. finish: one image's bytes, or the JSON body with one base64
image per target set (`service.json_images`), on the codec pool.

The label vector follows the manifest: one 0/1 value per attribute in `manifest.attributes` order;
the names a target gives are 1, every other attribute is 0. At most one attribute of each
`exclusive_groups` group may be set (e.g. one hair colour), as in training.

Images are prepared as the training data was: shorter side resized to the model's size S (Pillow
bicubic, `reducing_gap=3.0`, as trainer/data/image_folder.py does) and centre-cropped to S x S.
Transparent uploads are composited over white first (the networks were trained on opaque images).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import Response
from PIL import Image

from service import codecs
from service.errors import ApiError
from service.json_images import images_json
from service.manifest import Manifest
from service.media_schemas import TranslateOptions
from service.pipeline import RequestContext, TaskWork
from service.settings import Settings
from service.uploads import DecodedImage, UploadedImage, decode_image, read_uploaded_image


def parse_attribute_set(text: str) -> list[str]:
    """`a,b` or a JSON list `["a", "b"]` -> names (order kept, blanks and duplicates dropped).
    An empty string is the empty set: every attribute 0."""
    text = text.strip()
    if text.startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ApiError(422, "invalid_attributes", f"attribute list {text!r} is not valid JSON ({exc})") from None
        if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
            raise ApiError(422, "invalid_attributes", f"attribute list {text!r} must be a JSON list of names")
    else:
        names = text.split(",")
    return list(dict.fromkeys(name.strip() for name in names if name.strip()))


def build_labels(targets: Sequence[Sequence[str]], manifest: Manifest) -> np.ndarray:
    """[len(targets), len(attributes)] float32 0/1 labels; 422 for unknown names or a group conflict."""
    attributes = manifest.attributes or []
    index = {name: i for i, name in enumerate(attributes)}
    labels = np.zeros((len(targets), len(attributes)), dtype=np.float32)
    for row, names in enumerate(targets):
        unknown = [name for name in names if name not in index]
        if unknown:
            raise ApiError(
                422,
                "unknown_attribute",
                f"unknown attribute(s) {unknown}; model {manifest.name!r} knows {attributes}",
            )
        for group in manifest.exclusive_groups:
            chosen = [name for name in names if name in group]
            if len(chosen) > 1:
                raise ApiError(
                    422,
                    "exclusive_attributes",
                    f"attributes {chosen} are mutually exclusive (at most one of {group} may be set)",
                )
        labels[row, [index[name] for name in names]] = 1.0
    return labels


def resize_center_crop(image: DecodedImage, size: int) -> np.ndarray:
    """[H, W, 3] uint8 -> [size, size, 3]: shorter side to `size`, then the centre square."""
    rgb = image.rgb
    if image.alpha is not None:
        weight = image.alpha.astype(np.float32)[:, :, None] / 255.0
        rgb = np.rint(rgb * weight + 255.0 * (1.0 - weight)).astype(np.uint8)
    pil = Image.fromarray(rgb)
    width, height = pil.size
    factor = size / min(width, height)
    new_w, new_h = max(size, round(width * factor)), max(size, round(height * factor))
    if (new_w, new_h) != (width, height):
        pil = pil.resize((new_w, new_h), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return np.asarray(pil.crop((left, top, left + size, top + size)))


def model_input(image: DecodedImage, manifest: Manifest, size: int) -> np.ndarray:
    """The upload as one float32 [1, 3, size, size] row in the manifest's input range."""
    low, high = manifest.input_range or (-1.0, 1.0)
    square = resize_center_crop(image, size).astype(np.float32)
    square *= np.float32((high - low) / 255.0)
    square += np.float32(low)
    return square.transpose(2, 0, 1)[None]


def input_names(manifest: Manifest) -> tuple[str, str]:
    """(image input, label input): the rank-4 input is the image, the rank-2 one the label."""
    image = next((spec.name for spec in manifest.inputs if len(spec.shape) == 4), None)
    label = next((spec.name for spec in manifest.inputs if len(spec.shape) == 2), None)
    if image is None or label is None or len(manifest.inputs) != 2:
        raise ApiError(
            500,
            "bad_manifest",
            f"model {manifest.name!r}: a translate model needs an image input [N, 3, S, S] and a label input [N, c]",
        )
    return image, label


def image_size(manifest: Manifest, image_input: str) -> int:
    """S: the manifest's image_size, else the image input's fixed side."""
    if manifest.image_size:
        return manifest.image_size
    shape = next(spec.shape for spec in manifest.inputs if spec.name == image_input)
    if isinstance(shape[-1], int):
        return shape[-1]
    raise ApiError(500, "bad_manifest", f"model {manifest.name!r}: no image_size and no fixed input side")


def target_sets(options: TranslateOptions) -> list[list[str]]:
    """The attribute sets asked for: `attributes` (one) or `targets` (one image each)."""
    if options.attributes is not None and options.targets is not None:
        raise ApiError(422, "invalid_attributes", "give either `attributes` (one target) or `targets`, not both")
    if options.attributes is not None:
        return [parse_attribute_set(options.attributes)]
    if options.targets:
        return [parse_attribute_set(text) for text in options.targets]
    raise ApiError(
        422,
        "missing_attributes",
        "name the target attributes: `attributes=a,b` (one image) or repeated `targets=...` (one image each)",
    )


class TranslateWork(TaskWork[UploadedImage[TranslateOptions]]):
    """One /translate request: one image per target set, computed together."""

    task = "translate"
    path = "/translate"
    decode_offloaded = True

    def __init__(self, upload: UploadedImage[TranslateOptions], ctx: RequestContext) -> None:
        super().__init__(upload, ctx)
        settings, manifest = ctx.settings, ctx.entry.manifest
        self.upload = upload
        self.options = upload.options
        self.targets = target_sets(self.options)
        limit = settings.max_images_per_request
        if len(self.targets) > limit:
            raise ApiError(
                413, "too_many_images", f"{len(self.targets)} target sets given; this service returns at most {limit}"
            )
        self.labels = build_labels(self.targets, manifest)
        self.image_input, self.label_input = input_names(manifest)
        self.size = image_size(manifest, self.image_input)
        problem = codecs.size_problem(self.options.format, self.size, self.size)
        if problem is not None:
            raise ApiError(422, "output_too_large", problem)
        self.images = self.room = self.rows = len(self.targets)

    @classmethod
    async def read(cls, request: Request, settings: Settings) -> UploadedImage[TranslateOptions]:
        # room for every target set and the few option fields, so 65 targets is a 413 too_many_images
        fields = settings.max_images_per_request + 8
        return await read_uploaded_image(request, TranslateOptions, settings.max_upload_bytes, fields)

    def decode(self) -> None:
        image = decode_image(self.upload.data, self.ctx.settings.max_input_pixels)
        row = model_input(image, self.ctx.entry.manifest, self.size)
        self._feeds = {self.image_input: np.repeat(row, self.rows, axis=0), self.label_input: self.labels}

    async def feeds(self, first: int, stop: int) -> dict[str, np.ndarray]:
        return self._feeds  # one job: every target computes together

    def finish(self, first: int, out: np.ndarray) -> bytes:
        """One target: the image's bytes. Several: the JSON body (base64 joined in, as /generate does)."""
        options = self.options
        if len(self.targets) == 1:
            return codecs.encode(out[0], options.format, options.quality)
        head = {"model": self.ctx.entry.name, "media_type": codecs.MEDIA_TYPES[options.format]}
        return images_json(out, options.format, options.quality, head, {"targets": self.targets})

    async def encode(self, finished: list[Any]) -> Response:
        (content,) = finished
        if len(self.targets) == 1:
            return Response(
                content,
                media_type=codecs.MEDIA_TYPES[self.options.format],
                headers={"X-Attributes": ",".join(self.targets[0])},
            )
        return Response(content, media_type="application/json")
