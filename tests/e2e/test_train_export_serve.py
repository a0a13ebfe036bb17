"""The whole flow on real artefacts: a trained checkpoint, its exported ONNX model, the live service."""

import base64
import io

import httpx
import numpy as np
import torch
from PIL import Image

from export.onnx_export import export_checkpoint
from service.app import create_app
from service.settings import Settings
from tests.export.test_export import served_generator
from tests.service.service_testkit import LiveServer


def decode_png(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"), dtype=np.int16)


def test_served_images_are_the_trained_generators_images(tiny_checkpoints, tmp_path):
    repo = tmp_path / "models"
    for arch in ("dcgan", "lsgan"):
        export_checkpoint(tiny_checkpoints[arch], repo)
    app = create_app(Settings(model_dir=repo, max_batch_delay_ms=2))
    with LiveServer(app) as server:
        server.wait_ready()
        models = httpx.get(server.url + "/models").json()
        assert {m["name"] for m in models["models"]} == {"dcgan", "lsgan"}
        for arch in ("dcgan", "lsgan"):
            generator, config = served_generator(tiny_checkpoints[arch])
            latents = np.random.default_rng(0).uniform(-1, 1, (3, config.latent_dim)).astype(np.float32)
            reply = httpx.post(server.url + "/generate", json={"model": arch, "latents": latents.tolist()})
            assert reply.status_code == 200, reply.text
            images = np.stack([decode_png(b) for b in reply.json()["images"]])
            with torch.no_grad():
                expected = generator(torch.from_numpy(latents)).numpy()
            expected_u8 = np.round((np.clip(expected, -1, 1) + 1) * 127.5).transpose(0, 2, 3, 1)
            assert images.shape == expected_u8.shape == (3, 16, 16, 3)
            assert np.abs(images - expected_u8).max() <= 1  # PNG is lossless; 1 level of rounding slack
            seeded = [httpx.post(server.url + "/generate", json={"model": arch, "num_images": 2, "seed": 5})
                      for _ in range(2)]
            assert seeded[0].json()["images"] == seeded[1].json()["images"]


def png_bytes(image_u8: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image_u8).save(buffer, format="PNG")
    return buffer.getvalue()


def test_served_translation_is_the_trained_generators_translation(tiny_checkpoints, tmp_path):
    result = export_checkpoint(tiny_checkpoints["stargan"], tmp_path / "models")
    manifest = result.manifest
    generator, config = served_generator(tiny_checkpoints["stargan"])
    size = manifest.image_size
    target = manifest.attributes[1]
    image_u8 = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)
    app = create_app(Settings(model_dir=tmp_path / "models", max_batch_delay_ms=2))
    with LiveServer(app) as server:
        server.wait_ready()
        reply = httpx.post(server.url + "/translate", files={"image": ("x.png", png_bytes(image_u8), "image/png")},
                           data={"attributes": target})
        assert reply.status_code == 200, reply.text
        served = np.asarray(Image.open(io.BytesIO(reply.content)).convert("RGB"), dtype=np.int16)
        bad = httpx.post(server.url + "/translate", files={"image": ("x.png", png_bytes(image_u8), "image/png")},
                         data={"attributes": "no_such_attribute"})
        assert bad.status_code == 422 and target in bad.text
    label = torch.zeros(1, len(manifest.attributes))
    label[0, manifest.attributes.index(target)] = 1.0
    x = torch.from_numpy(image_u8.astype(np.float32) / 127.5 - 1.0).permute(2, 0, 1)[None]
    with torch.no_grad():
        expected = generator(x, label)[0].numpy()
    expected_u8 = np.round((np.clip(expected, -1, 1) + 1) * 127.5).transpose(1, 2, 0)
    assert served.shape == expected_u8.shape
    assert np.abs(served - expected_u8).max() <= 1
