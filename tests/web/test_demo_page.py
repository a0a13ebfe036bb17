"""The demo page at `/`: served as plain files, and used in a real (headless chromium) browser
against a live service with tiny models, checking what the browser decoded, not only the DOM."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from service.app import STATIC_DIR, create_app
from service.settings import Settings
from tests.service.media_testkit import ATTRIBUTES, SCALE, TRANSLATE_SIZE, encode, noise
from tests.service.service_testkit import IMAGE_SIZE, ROOT, LiveServer

MAX_SEED = 2**63 - 1


def pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def data_url_pixels(url: str) -> np.ndarray:
    assert url.startswith("data:image/png;base64,"), url[:40]
    return pixels(base64.b64decode(url.split(",", 1)[1]))


def decoded_pixels(page: Any, selector: str) -> np.ndarray:
    """An <img>'s pixels as the browser decoded them ([H, W, 3]), read back through a canvas."""
    width, height, rgba = page.eval_on_selector(
        selector,
        """img => {
            const canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            const context = canvas.getContext("2d");
            context.drawImage(img, 0, 0);
            const rgba = context.getImageData(0, 0, canvas.width, canvas.height).data;
            return [canvas.width, canvas.height, Array.from(rgba)];
        }""",
    )
    return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[..., :3]


def natural_sizes(page: Any, selector: str) -> list[list[int]]:
    return page.eval_on_selector_all(selector, "imgs => imgs.map(i => [i.naturalWidth, i.naturalHeight])")


def open_page(page: Any, url: str) -> None:
    page.goto(url + "/")
    page.locator("#status[data-state=ready]").wait_for()


def api_images(url: str, body: dict[str, Any]) -> list[np.ndarray]:
    reply = httpx.post(url + "/generate", json=body)
    assert reply.status_code == 200, reply.text
    return [pixels(base64.b64decode(b64)) for b64 in reply.json()["images"]]


# ---------------------------------------------------------------------------- without a browser


def test_page_and_assets_are_served_with_their_types_and_nothing_external(service: LiveServer) -> None:
    client = httpx.Client(base_url=service.url)
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assets = re.findall(r'(?:src|href)="(static/[^"]+)"', page.text)
    assert sorted(assets) == ["static/demo.css", "static/demo.js"]
    expected_types = {".css": "text/css", ".js": "javascript"}
    for asset in assets:
        reply = client.get("/" + asset)
        assert reply.status_code == 200, asset
        assert expected_types[Path(asset).suffix] in reply.headers["content-type"], reply.headers["content-type"]
    missing = client.get("/static/nothing.js")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    # works offline: no file of the page names another host
    for path in STATIC_DIR.iterdir():
        assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", path.read_text()), path.name


def test_static_files_are_package_data() -> None:
    """A non-editable `pip install .` ships only what [tool.setuptools.package-data] names."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["service"]
    shipped = {path for pattern in patterns for path in STATIC_DIR.parent.glob(pattern) if path.is_file()}
    files = {path for path in STATIC_DIR.rglob("*") if path.is_file()}
    assert files and files <= shipped, sorted(str(p) for p in files - shipped)


# ---------------------------------------------------------------------------- in the browser


def test_sections_follow_the_models(page: Any, service: LiveServer) -> None:
    open_page(page, service.url)
    for section in ("#generate", "#super-resolve", "#translate"):
        assert page.locator(section).is_visible(), section
    # two generate models: a picker; one model of each other task: none
    assert page.locator("#generate-form select[name=model] option").evaluate_all("o => o.map(x => x.value)") == [
        "tiny",
        "tiny-b",
    ]
    assert page.locator("#generate-form .model-picker").is_visible()
    assert not page.locator("#sr-form .model-picker").is_visible()
    assert not page.locator("#translate-form .model-picker").is_visible()


def test_sections_without_models_stay_hidden(page: Any, tmp_path: Path) -> None:
    from tests.service.service_testkit import add_generator

    add_generator(tmp_path / "models", "only")
    with LiveServer(create_app(Settings(model_dir=tmp_path / "models"))) as server:
        server.wait_ready()
        open_page(page, server.url)
        assert page.locator("#generate").is_visible()
        assert page.locator("#super-resolve").is_hidden()
        assert page.locator("#translate").is_hidden()


def test_generate_shows_the_services_images_at_the_models_size(
    page: Any, service: LiveServer, page_script: ModuleType
) -> None:
    open_page(page, service.url)
    form = page.locator("#generate-form")
    form.get_by_label("Images").fill("3")
    # the largest seed: more than a JavaScript number holds exactly, so a rounding page would differ
    form.get_by_label("Seed").fill(str(MAX_SEED))
    form.get_by_role("button", name="Generate").click()
    page_script.wait_for_image(page, "#generate-results figure:nth-child(3) img")
    assert natural_sizes(page, "#generate-results img") == [[IMAGE_SIZE, IMAGE_SIZE]] * 3
    shown = [data_url_pixels(s) for s in page.locator("#generate-results img").evaluate_all("i => i.map(x => x.src)")]
    expected = api_images(service.url, {"model": "tiny", "num_images": 3, "seed": MAX_SEED})
    np.testing.assert_array_equal(np.stack(shown), np.stack(expected))
    assert "seed 9223372036854775807" in page.locator("#generate-results img").first.get_attribute("alt")

    # the picker picks: the other model's images
    form.get_by_label("Model").select_option("tiny-b")
    form.get_by_role("button", name="Generate").click()
    page.wait_for_function("() => document.querySelector('#generate-results img').alt.includes('tiny-b')")
    page_script.wait_for_image(page, "#generate-results figure:nth-child(3) img")
    shown_b = [data_url_pixels(s) for s in page.locator("#generate-results img").evaluate_all("i => i.map(x => x.src)")]
    np.testing.assert_array_equal(
        np.stack(shown_b), np.stack(api_images(service.url, {"model": "tiny-b", "num_images": 3, "seed": MAX_SEED}))
    )

    # "Random seed" gives a new seed, not the one before
    page.get_by_role("button", name="Random seed").click()
    assert re.fullmatch(r"\d+", form.get_by_label("Seed").input_value())
    assert form.get_by_label("Seed").input_value() != str(MAX_SEED)


def test_the_interpolation_slider_walks_from_one_seed_to_the_other(
    page: Any, service: LiveServer, page_script: ModuleType
) -> None:
    open_page(page, service.url)
    walk = page.locator("#walk-form")
    walk.get_by_label("From seed").fill("1")
    walk.get_by_label("To seed").fill("2")
    walk.get_by_label("Steps").fill("5")
    walk.get_by_label("Path").select_option("linear")
    walk.get_by_role("button", name="Walk").click()
    page_script.wait_for_image(page, "#walk-frame")
    slider = page.get_by_label("Position")
    assert slider.get_attribute("max") == "4"
    frame = page.locator("#walk-frame")
    first_src = frame.get_attribute("src")
    assert natural_sizes(page, "#walk-frame") == [[IMAGE_SIZE, IMAGE_SIZE]]
    # the endpoints of a walk between seeds are exactly those seeds' images
    seed_1, seed_2 = (api_images(service.url, {"model": "tiny", "seed": s})[0] for s in (1, 2))
    np.testing.assert_array_equal(data_url_pixels(first_src), seed_1)

    slider.focus()
    slider.press("End")
    page.wait_for_function("src => document.querySelector('#walk-frame').src !== src", arg=first_src)
    np.testing.assert_array_equal(data_url_pixels(frame.get_attribute("src")), seed_2)
    slider.press("ArrowLeft")
    assert page.locator("#walk-position").text_content() == "step 4 of 5 (t = 0.75)"
    middle = data_url_pixels(frame.get_attribute("src"))
    assert not np.array_equal(middle, seed_1) and not np.array_equal(middle, seed_2)


def test_super_resolution_shows_before_and_after_at_the_same_size(
    page: Any, service: LiveServer, page_script: ModuleType
) -> None:
    open_page(page, service.url)
    upload = encode(noise(5, 6, seed=3))  # 6 wide, 5 high
    form = page.locator("#sr-form")
    form.get_by_label("Image").set_input_files({"name": "small.png", "mimeType": "image/png", "buffer": upload})
    form.get_by_role("button", name="Super-resolve").click()
    page.locator("#sr-view").wait_for(state="visible")
    page_script.wait_for_image(page, "#sr-after")
    assert natural_sizes(page, "#sr-before") == [[6, 5]]
    assert natural_sizes(page, "#sr-after") == [[6 * SCALE, 5 * SCALE]]
    reply = httpx.post(service.url + "/super-resolve", files={"image": ("x.png", upload, "image/png")})
    np.testing.assert_array_equal(decoded_pixels(page, "#sr-after"), pixels(reply.content))
    # a fair comparison: the same displayed size, the input enlarged by nearest neighbour
    widths = [page.locator(s).evaluate("i => i.getBoundingClientRect().width") for s in ("#sr-before", "#sr-after")]
    assert widths[0] == widths[1] == 6 * SCALE
    assert page.locator("#sr-before").evaluate("i => getComputedStyle(i).imageRendering") == "pixelated"
    assert "nearest neighbour" in page.locator("#sr-before-caption").text_content()


def test_translation_uses_the_toggled_attributes(page: Any, service: LiveServer, page_script: ModuleType) -> None:
    open_page(page, service.url)
    # exclusive groups are radio groups (one name per group), the rest checkboxes
    names = {
        value: page.locator(f"#attributes input[value={value}]").evaluate("i => [i.type, i.name]")
        for value in ATTRIBUTES
    }
    assert names["colour_red"] == names["colour_blue"] == ["radio", "group-0"]
    assert names["size_small"] == ["radio", "group-1"]
    assert names["striped"][0] == "checkbox"

    upload = encode(noise(12, 10, seed=4))
    form = page.locator("#translate-form")
    form.get_by_label("Image").set_input_files({"name": "in.png", "mimeType": "image/png", "buffer": upload})
    page.locator("#attributes input[value=colour_green]").check()
    page.locator("#attributes input[value=striped]").check()
    form.get_by_role("button", name="Translate").click()
    page_script.wait_for_image(page, "#translate-results figure:nth-child(2) img")
    assert natural_sizes(page, "#translate-results figure:nth-child(2) img") == [[TRANSLATE_SIZE, TRANSLATE_SIZE]]
    assert page.locator("#translate-results figure:nth-child(2) figcaption").text_content() == "colour_green, striped"
    reply = httpx.post(
        service.url + "/translate",
        files={"image": ("x.png", upload, "image/png")},
        data={"attributes": "colour_green,striped"},
    )
    assert reply.status_code == 200, reply.text
    np.testing.assert_array_equal(
        decoded_pixels(page, "#translate-results figure:nth-child(2) img"), pixels(reply.content)
    )

    # several targets: one image per target, in order
    page.get_by_role("button", name="Add target").click()
    page.locator("#attributes input[value=colour_red]").check()
    page.locator("#attributes input[value=striped]").uncheck()
    page.get_by_role("button", name="Add target").click()
    form.get_by_role("button", name="Translate").click()
    page.locator("#translate-results figure:nth-child(3) figcaption").wait_for()
    captions = page.locator("#translate-results figcaption").all_text_contents()
    assert captions == ["Input", "colour_green, striped", "colour_red"]
    page_script.wait_for_image(page, "#translate-results figure:nth-child(3) img")
    assert natural_sizes(page, "#translate-results figure:not(:first-child) img") == [[TRANSLATE_SIZE] * 2] * 2


def test_api_errors_are_shown_in_the_section_that_caused_them(page: Any, service: LiveServer) -> None:
    open_page(page, service.url)
    generate_error = page.locator("#generate-error")
    form = page.locator("#generate-form")
    form.get_by_label("Seed").fill("-1")
    form.get_by_role("button", name="Generate").click()
    generate_error.wait_for(state="visible")
    refused = httpx.post(service.url + "/generate", json={"model": "tiny", "seed": -1}).json()["error"]
    assert generate_error.text_content() == f"{refused['message']} ({refused['code']})"
    assert page.locator("#generate-results img").count() == 0

    # a walk too short for the API: its own box, the generate error untouched
    walk = page.locator("#walk-form")
    walk.get_by_label("Steps").fill("1")
    walk.get_by_role("button", name="Walk").click()
    page.locator("#walk-error").wait_for(state="visible")
    assert "steps" in page.locator("#walk-error").text_content()
    assert "validation_error" in page.locator("#walk-error").text_content()

    # a file that is not an image
    sr = page.locator("#sr-form")
    sr.get_by_label("Image").set_input_files({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"hello"})
    sr.get_by_role("button", name="Super-resolve").click()
    page.locator("#sr-error").wait_for(state="visible")
    assert "(unsupported_image_format)" in page.locator("#sr-error").text_content()
    assert page.locator("#sr-view").is_hidden()

    # a later success clears the error
    form.get_by_label("Seed").fill("5")
    form.get_by_role("button", name="Generate").click()
    generate_error.wait_for(state="hidden")
    page.locator("#generate-results img").first.wait_for()


def test_an_api_key_is_asked_for_sent_and_kept_for_the_tab_only(page: Any, model_repo: Path) -> None:
    key = "s3cret-key"
    with LiveServer(create_app(Settings(model_dir=model_repo, api_keys=[key]))) as server:
        server.wait_ready()
        page.goto(server.url + "/")  # the page and its files need no key; the API calls it makes do
        page.locator("#status[data-state=failed]").wait_for()
        assert "API key" in page.locator("#page-error").text_content()
        assert page.locator("#auth").get_attribute("open") is not None
        assert page.locator("#generate").is_hidden()

        page.locator("#api-key").fill(key)
        page.get_by_role("button", name="Use key").click()
        page.locator("#status[data-state=ready]").wait_for()
        assert page.locator("#page-error").is_hidden()
        page.locator("#generate-form").get_by_role("button", name="Generate").click()
        page.locator("#generate-results img").first.wait_for()
        assert page.evaluate("() => [sessionStorage.getItem('gan-demo-api-key'), localStorage.length]") == [key, 0]


def test_the_screenshot_script_uses_every_section(
    browser: Any, service: LiveServer, page_script: ModuleType, tmp_path: Path
) -> None:
    out = tmp_path / "page.png"
    used = page_script.screenshot(browser, service.url, out, width=1000)
    assert used == ["generate", "super-resolve", "translate"]
    shot = Image.open(out)
    assert shot.width == 1000 and shot.height > 900  # the full page, not one viewport


def test_the_screenshot_script_can_show_a_chosen_model_and_seed(
    page: Any, service: LiveServer, page_script: ModuleType
) -> None:
    """For a reproducible docs image: the grid of the named model at a fixed seed, not the first model at a
    random one."""
    used = page_script.exercise_page(page, service.url + "/", generate_model="tiny-b", seed=5)
    assert used[0] == "generate"
    assert page.locator("#generate-form select[name=model]").input_value() == "tiny-b"
    assert page.locator("#generate-form input[name=seed]").input_value() == "5"
    assert page.locator("#generate-results img").count() == 8
