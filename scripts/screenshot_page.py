"""Screenshot the service's demo page (GET /) after using it, for the docs.

    python scripts/screenshot_page.py [URL] [--out docs/images/web_demo.png]

Loads the page of a running service in headless chromium (Debian's `/usr/bin/chromium`, driven by
the `playwright` package of the `dev` extra; no browser download), generates a grid and walks half an
interpolation, and, where the service has such models, super-resolves and translates a sample image,
then writes a full-page PNG. The sample images are made here (the built-in shapes data set, or a
photograph bundled with scikit-image, when those are installed), so the script needs no files.
The tests in tests/web/ use `launch_chromium` and `exercise_page` too, so this script cannot rot.
"""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

CHROMIUM = "/usr/bin/chromium"
#: Headless chromium on a machine without outside network: the background services (component
#: updates, sync, safe browsing lists, QUIC probes) would otherwise try to connect out and stall.
CHROMIUM_ARGS = [
    "--no-sandbox",  # root in a container has no user namespace to sandbox with
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
#: Longest wait for one request of the page (the real models on CPU answer within seconds).
ACTION_TIMEOUT_MS = 60_000


def browser_missing(executable: str = CHROMIUM) -> str | None:
    """Why no browser test can run here (None when one can)."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    if not Path(executable).is_file():
        return f"{executable} is absent (apt-get install chromium)"
    return None


@contextmanager
def launch_chromium(executable: str = CHROMIUM) -> Iterator[Any]:
    """A headless chromium (playwright Browser) from the system's binary."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def photo_sample(side: int = 96) -> bytes:
    """A small natural photograph (super-resolution was trained on such), or a drawn scene without
    scikit-image."""
    try:
        from skimage import data

        photo = Image.fromarray(data.astronaut()).crop((150, 20, 310, 180))
        return png(photo.resize((side, side), Image.Resampling.BICUBIC))
    except ImportError:
        rng = np.random.default_rng(0)
        base = (rng.random((side // 8, side // 8, 3)) * 255).astype(np.uint8)
        scene = Image.fromarray(base).resize((side, side), Image.Resampling.BICUBIC)
        ImageDraw.Draw(scene).ellipse((side // 4, side // 4, 3 * side // 4, 3 * side // 4), outline=(255, 255, 255))
        return png(scene)


def shape_sample(side: int = 128) -> bytes:
    """One image of the built-in shapes data set (what the demo's StarGAN translates), or a drawn
    red circle on its dark background when the trainer (torch) is not installed."""
    try:
        from trainer.data.shapes import render, sample_parameters

        return png(Image.fromarray(render(sample_parameters(0, 3), side)))
    except ImportError:
        scene = Image.new("RGB", (side, side), (24, 24, 28))
        ImageDraw.Draw(scene).ellipse((side // 4, side // 4, 3 * side // 4, 3 * side // 4), fill=(220, 40, 40))
        return png(scene)


def wait_for_image(page: Any, selector: str) -> None:
    """Until the element is an image the browser has decoded (not merely an <img> in the DOM); an
    error the page shows meanwhile ends the wait at once, with its message."""
    outcome = page.wait_for_function(
        """s => {
            const img = document.querySelector(s);
            if (img && img.complete && img.naturalWidth > 0) return "ok";
            const shown = [...document.querySelectorAll(".error:not([hidden])")].map(e => e.textContent);
            return shown.length ? shown.join(" | ") : false;
        }""",
        arg=selector,
    ).json_value()
    if outcome != "ok":
        raise RuntimeError(f"no image at {selector}; the page shows: {outcome}")


def exercise_page(page: Any, url: str, api_key: str | None = None, generate_model: str | None = None,
                  seed: int | None = None) -> list[str]:
    """Use every section the service has models for, as a visitor would; returns the sections used.
    `generate_model` and `seed` pick the grid's model and seed (default: the page's first model, a random
    seed), so the docs' screenshot can show a chosen model reproducibly."""
    page.goto(url)
    if api_key:
        page.locator("#auth summary").click()
        page.locator("#api-key").fill(api_key)
        page.get_by_role("button", name="Use key").click()
    # the models must be warm: a cold model answers 503
    page.locator("#status[data-state=ready], #status[data-state=empty]").wait_for()
    used = []
    if page.locator("#generate").is_visible():
        if generate_model:
            page.locator("#generate-form select[name=model]").select_option(generate_model)
        if seed is not None:
            page.locator("#generate-form input[name=seed]").fill(str(seed))
        page.locator("#generate-form").get_by_role("button", name="Generate").click()
        wait_for_image(page, "#generate-results img")
        page.locator("#walk-form").get_by_role("button", name="Walk").click()
        wait_for_image(page, "#walk-frame")
        slider = page.locator("#walk-slider")
        slider.focus()
        for _ in range(int(slider.get_attribute("max") or 0) // 2):
            slider.press("ArrowRight")
        used.append("generate")
    if page.locator("#super-resolve").is_visible():
        page.locator("#sr-form input[type=file]").set_input_files(
            {"name": "photo.png", "mimeType": "image/png", "buffer": photo_sample()}
        )
        page.locator("#sr-form").get_by_role("button", name="Super-resolve").click()
        wait_for_image(page, "#sr-after")
        used.append("super-resolve")
    if page.locator("#translate").is_visible():
        page.locator("#translate-form input[type=file]").set_input_files(
            {"name": "shape.png", "mimeType": "image/png", "buffer": shape_sample()}
        )
        # one target per value of the first exclusive group (e.g. every colour), else the first attribute
        radios = page.locator("#attributes fieldset").first.locator("input[type=radio]:not([value=''])")
        if radios.count():
            for i in range(radios.count()):
                radios.nth(i).check()
                page.get_by_role("button", name="Add target").click()
        else:
            page.locator("#attributes input").first.check()
        page.locator("#translate-form").get_by_role("button", name="Translate").click()
        wait_for_image(page, "#translate-results figure:nth-child(2) img")
        used.append("translate")
    errors = [t for t in page.locator(".error:not([hidden])").all_inner_texts() if t.strip()]
    if errors:
        raise RuntimeError("the page shows errors: " + " | ".join(errors))
    return used


def screenshot(browser: Any, url: str, out: Path, width: int = 1280, api_key: str | None = None,
               generate_model: str | None = None, seed: int | None = None) -> list[str]:
    """Use the page in a fresh tab of `browser` and write the full page to `out`; the sections used."""
    context = browser.new_context(viewport={"width": width, "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(ACTION_TIMEOUT_MS)
        used = exercise_page(page, url.rstrip("/") + "/", api_key, generate_model, seed)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out), full_page=True)
    finally:
        context.close()
    return used


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000", help="the service's base URL")
    parser.add_argument("--out", type=Path, default=Path("docs/images/web_demo.png"), help="PNG to write")
    parser.add_argument("--chromium", default=CHROMIUM, help="chromium binary")
    parser.add_argument("--width", type=int, default=1280, help="viewport width (CSS pixels)")
    parser.add_argument("--api-key", help="for a service started with GAN_API_KEYS")
    parser.add_argument("--generate-model", help="the generate model shown (default: the page's first)")
    parser.add_argument("--seed", type=int, help="the grid's seed (default: the page's random one)")
    args = parser.parse_args(argv)
    missing = browser_missing(args.chromium)
    if missing:
        print(f"screenshot_page: {missing}", file=sys.stderr)
        return 2
    with launch_chromium(args.chromium) as browser:
        used = screenshot(browser, args.url, args.out, args.width, args.api_key, args.generate_model, args.seed)
    print(f"wrote {args.out} ({', '.join(used) or 'no models'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
