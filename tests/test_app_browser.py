"""The app in a real browser: Playwright drives Debian's Chromium against the app served on 127.0.0.1.

Skipped, with the reason, where Chromium, playwright or gradio is missing;
CI installs Chromium in ``.ci/run`` and the Python packages come from the
``dev`` extra, and sets ``HF_NEGATIONCLIP_REQUIRE_BROWSER=1`` so that there a
missing browser fails instead of skipping. Screenshots of each tab are written to ``$APP_SCREENSHOTS``
(default ``test-artifacts/app/`` in the repository) and the path is printed.

With ``HF_NEGATIONCLIP_DEMO_DIR`` set to a finished ``make demo`` folder, the
app also serves that demo's baseline and best model, and the page must show
the best model picking the true caption of the Compare tab's pre-filled
examples (the report counts all 20 seeds; the browser checks a few).
"""

import os
import socket
from pathlib import Path

import numpy as np
import pytest

from hf_negationclip.apps import app

CHROMIUM = os.environ.get("HF_NEGATIONCLIP_CHROMIUM", "/usr/bin/chromium")
FIXTURE_RESULTS = Path(__file__).parent / "fixtures" / "results.json"
SHOTS = Path(os.environ.get("APP_SCREENSHOTS", Path(__file__).resolve().parents[1] / "test-artifacts" / "app"))


def _missing() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium; .ci/run installs it in CI)"
    for module in ("playwright", "gradio"):
        try:
            __import__(module)
        except ImportError:
            return f"{module} is not installed (pip install -e '.[dev]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(specs: list[str], results: Path):
    reason = _missing()
    if reason and os.environ.get("HF_NEGATIONCLIP_REQUIRE_BROWSER") == "1":
        pytest.fail(f"the browser test must run here (HF_NEGATIONCLIP_REQUIRE_BROWSER=1): {reason}")
    if reason:
        pytest.skip(reason)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    models = app.load_models(specs)
    demo = app.build_demo(models, results, seed=0)
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, share=False, quiet=True)
    return demo, f"http://127.0.0.1:{port}/", models


@pytest.fixture(scope="module")
def served(tiny_checkpoints):
    demo, url, models = _serve([f"{label}={path}" for label, path in tiny_checkpoints.items()], FIXTURE_RESULTS)
    yield url, models
    demo.close()


@pytest.fixture(scope="module")
def served_demo():
    demo_dir = os.environ.get("HF_NEGATIONCLIP_DEMO_DIR")
    if not demo_dir:
        pytest.skip("set HF_NEGATIONCLIP_DEMO_DIR to a finished `make demo` folder to check its best model")
    demo, url, models = _serve(app.default_model_specs(demo_dir), Path(demo_dir) / "results.json")
    yield url, models
    demo.close()


def _bars(page) -> dict[str, list[tuple[str, float, bool]]]:
    """Per model on the page: (text, probability, is winner) per row, read from the bar chart's attributes."""
    out = {}
    for block in page.locator("#compare-result .nc-model").all():
        rows = block.locator(".nc-row").all()
        out[block.get_attribute("data-model")] = [
            (
                r.get_attribute("data-text"),
                float(r.get_attribute("data-prob")),
                r.get_attribute("data-winner") == "true",
            )
            for r in rows
        ]
    return out


def test_app_in_chromium(served, capsys):
    from playwright.sync_api import expect, sync_playwright

    url, models = served
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        page.goto(url)

        # Compare: draw the next "random scene" (its seed shows in the page), score it, read the bars back
        page.locator("#random-scene").click()
        seed_box = page.locator("#scene-seed input")
        expect(seed_box).not_to_have_value("0")
        seed = int(seed_box.input_value())
        image, texts = app.scene_example(seed)
        expect(page.locator("#compare-texts textarea")).to_have_value("\n".join(texts))
        page.locator("#compare-button").click()
        expect(page.locator("#compare-result .nc-row")).to_have_count(len(texts) * len(models))
        shown = _bars(page)
        for m in models:
            expected = m.model.score([image], texts, m.processor)[0].tolist()
            rows = shown[m.label]
            assert [r[0] for r in rows] == texts
            assert [r[1] for r in rows] == pytest.approx(expected, abs=1e-6)
            win = int(np.argmax(expected))
            assert [r[2] for r in rows] == [i == win for i in range(len(texts))]
            verdict = page.locator(f'.nc-model[data-model="{m.label}"] .nc-verdict')
            expect(verdict).to_have_text(f"(winner: \u201c{texts[win]}\u201d)")
            bar = page.locator(f'.nc-model[data-model="{m.label}"] .nc-bar').nth(win)
            assert bar.bounding_box()["width"] > 0
        page.screenshot(path=str(SHOTS / "compare.png"), full_page=True)

        # bad input: an empty text gets a message in the page
        page.locator("#compare-texts textarea").fill("")
        page.locator("#compare-button").click()
        expect(page.locator("#compare-result .nc-error")).to_contain_text("Enter at least one text")
        # ... and so does a file that is not an image
        broken = SHOTS / "broken.png"
        broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
        page.locator("#compare-texts textarea").fill("a red circle")
        page.locator("#compare-image input[type=file]").set_input_files(str(broken))
        page.locator("#compare-button").click()
        expect(page.locator("#compare-result .nc-error")).to_contain_text("Could not read broken.png as an image")

        # Negation pairs: the first pair is scored on load; "next pair" adds one to the tally
        page.get_by_role("tab", name="Negation pairs").click()
        tally = page.locator("#pair-tally .nc-tally")
        expect(tally).to_have_attribute("data-pairs", "1")
        page.locator("#next-pair").click()
        expect(tally).to_have_attribute("data-pairs", "2")
        expect(page.locator("#pair-caption")).to_contain_text("with no")
        expect(page.locator("#pair-image img")).to_be_visible()
        page.screenshot(path=str(SHOTS / "negation_pairs.png"), full_page=True)

        # Benchmarks: the fixture's numbers, from the file
        page.get_by_role("tab", name="Benchmarks").click()
        expect(page.locator("#benchmarks-table")).to_contain_text("0.930 [0.890, 0.960]")
        expect(
            page.locator("#benchmarks-plot img, #benchmarks-plot canvas, #benchmarks-plot svg").first
        ).to_be_visible()
        page.screenshot(path=str(SHOTS / "benchmarks.png"), full_page=True)
        browser.close()
    with capsys.disabled():
        print(f"\nscreenshots of the app's tabs: {SHOTS}")


def test_the_best_model_answers_the_prefilled_compare_examples_in_chromium(served_demo):
    """The Compare tab of seeds 0-2 (type the seed, press Enter, Compare): NegationCLIP's winner is the true caption."""
    from playwright.sync_api import expect, sync_playwright

    url, models = served_demo
    best = next(m for m in models if m.label == "NegationCLIP")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.set_default_timeout(20_000)
        page.goto(url)
        for seed in (0, 1, 2):
            image, texts = app.scene_example(seed)
            page.locator("#scene-seed input").fill(str(seed))
            page.locator("#scene-seed input").press("Enter")
            expect(page.locator("#compare-texts textarea")).to_have_value("\n".join(texts))
            page.locator("#compare-button").click()
            expect(page.locator("#compare-result .nc-row")).to_have_count(len(texts) * len(models))
            expect(page.locator("#compare-result .nc-row").first).to_have_attribute(
                "data-text", texts[0]
            )  # this seed's
            rows = _bars(page)[best.label]
            assert [r[0] for r in rows] == texts  # the true negated caption first, its affirmative twin second
            assert [r[2] for r in rows] == [True, False], (seed, rows)
            expected = best.model.score([image], texts, best.processor)[0].tolist()
            assert [r[1] for r in rows] == pytest.approx(expected, abs=1e-6)
        page.screenshot(path=str(SHOTS / "compare_demo.png"), full_page=True)
        browser.close()
