"""The Gradio app: see the negation gap between CLIP checkpoints in ten seconds.

``hf-negationclip app`` (or :func:`build_demo`) opens three tabs:

- **Compare**: one image (uploaded, or a random scene of the embedded world)
  against texts, one per line; for each model the probability of each text
  (:meth:`NegationCLIPModel.score`, so the page shows exactly its numbers),
  the winner marked.
- **Negation pairs**: two renders of one scene that differ only in the negated
  object (the same construction as the negation probe), a negated caption,
  each model's pick drawn on the images and a running tally.
- **Benchmarks**: the table and plot of an evaluation ``results.json``.

Everything but :func:`build_demo` works without gradio (the ``app`` extra), so
the scoring, pair and results helpers are tested on their own.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from .. import world as scene_world
from ..benchmarks import ChoiceItem, compare_example, scene_negation_pair
from ..modeling import MAX_TEXT_LENGTH, NegationCLIPModel, load_checkpoint
from .cards import is_hub_id  # noqa: F401  (part of the app module API: tests and callers check specs with it)

logger = logging.getLogger(__name__)

#: where ``make demo`` writes its checkpoints and results; the app's defaults live under it
DEFAULT_DEMO_DIR = "runs/demo"
#: default models: (label, folder relative to the demo dir): the biased baseline and the best NegationCLIP
DEFAULT_MODELS: tuple[tuple[str, str], ...] = (("CLIP (baseline)", "baseline"), ("NegationCLIP", "best"))
DEFAULT_RESULTS = "results.json"
#: ``name`` or ``org/name``, as the Hub spells repository ids


class AppInputError(ValueError):
    """Bad input from the page: its message is shown to the user instead of a stack trace."""


# --------------------------------------------------------------------------- models


@dataclass
class LoadedModel:
    label: str
    source: str
    model: NegationCLIPModel
    processor: object  # a CLIPProcessor

    @property
    def max_text_tokens(self) -> int:
        limit = getattr(self.processor.tokenizer, "model_max_length", MAX_TEXT_LENGTH)
        return int(limit) if limit and limit < 100_000 else MAX_TEXT_LENGTH


def parse_model_spec(spec: str) -> tuple[str, str]:
    """``LABEL=SOURCE`` or ``SOURCE`` (a checkpoint folder or a Hub id) -> (label, source)."""
    label, sep, source = spec.partition("=")
    if not sep:
        label, source = "", spec
    source = source.strip()
    if not source:
        raise ValueError(f"--model {spec!r}: expected PATH, HUB_ID or LABEL=PATH")
    return label.strip() or Path(source.rstrip("/")).name or source, source


def default_model_specs(demo_dir: str | os.PathLike = DEFAULT_DEMO_DIR) -> list[str]:
    """The baseline and the best NegationCLIP of ``make demo``, or a clear error when the demo has not run."""
    specs = [f"{label}={Path(demo_dir) / sub}" for label, sub in DEFAULT_MODELS]
    missing = [s.split("=", 1)[1] for s in specs if not Path(s.split("=", 1)[1]).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"the default models are the checkpoints of `make demo` ({', '.join(missing)} not found): run `make demo` "
            f"first, pass --demo_dir DIR, or name checkpoints with --model PATH_OR_HUB_ID (repeatable)"
        )
    return specs


def load_models(specs: Sequence[str]) -> list[LoadedModel]:
    """Load each ``LABEL=SOURCE`` spec (local folder or Hub id) with its processor, in eval mode."""
    models, labels = [], set()
    for spec in specs:
        label, source = parse_model_spec(spec)
        if label in labels:
            raise ValueError(f"two models are labelled {label!r}: name them with --model LABEL=PATH")
        model, processor = load_checkpoint(source)
        model.eval()
        labels.add(label)
        models.append(LoadedModel(label, source, model, processor))
        logger.info("loaded %s from %s", label, source)
    if not models:
        raise ValueError("no model to show: pass --model PATH_OR_HUB_ID")
    return models


# --------------------------------------------------------------------------- input checks


def parse_texts(raw: str | None, models: Sequence[LoadedModel]) -> list[str]:
    """Non-empty lines of ``raw``; each must fit every model's tokenizer (77 tokens for CLIP)."""
    texts = [line.strip() for line in (raw or "").splitlines() if line.strip()]
    if not texts:
        raise AppInputError("Enter at least one text, one per line.")
    for m in models:
        for i, text in enumerate(texts, 1):
            n = len(m.processor.tokenizer(text)["input_ids"])
            if n > m.max_text_tokens:
                raise AppInputError(
                    f"Text {i} is {n} tokens long; {m.label} reads at most {m.max_text_tokens} "
                    f"(start and end included). Shorten it."
                )
    return texts


def open_image(value) -> Image.Image:
    """A PIL RGB image from the page's value (PIL image, array or file path); clear errors for the rest."""
    value = _payload_path(value)
    if value is None:
        raise AppInputError('Add an image first: upload one or click "random scene".')
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    if isinstance(value, np.ndarray):
        return Image.fromarray(value.astype(np.uint8)).convert("RGB")
    try:
        with Image.open(value) as img:
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        name = Path(str(value)).name
        raise AppInputError(f"Could not read {name} as an image ({type(err).__name__}). Upload a PNG or JPEG.") from err


def _payload_path(value):
    """The file behind gradio's raw image payload (the Compare event skips gradio's own decoding)."""
    if isinstance(value, dict):
        url = value.get("url") or ""
        if not value.get("path") and url.startswith("data:"):
            return io.BytesIO(base64.b64decode(url.split(",", 1)[1]))
        return value.get("path")
    return getattr(value, "path", value)


# --------------------------------------------------------------------------- compare


def compare_scores(models: Sequence[LoadedModel], image: Image.Image, texts: Sequence[str]) -> dict[str, list[float]]:
    """Per model label, the probability of each text for ``image`` (:meth:`NegationCLIPModel.score`)."""
    return {m.label: m.model.score([image], list(texts), m.processor)[0].tolist() for m in models}


def winner(probs: Sequence[float]) -> int | None:
    """Index of the strictly largest probability; ``None`` on a tie (a tie picks nothing)."""
    best = max(probs)
    hits = [i for i, p in enumerate(probs) if p == best]
    return hits[0] if len(hits) == 1 else None


_PALETTE = ("#e4572e", "#2e86ab", "#a23b72", "#3bb273", "#f18f01", "#6c4ab6")


def bars_html(scores: dict[str, list[float]], texts: Sequence[str]) -> str:
    """One bar chart per model; every row carries ``data-prob`` so the numbers can be read back exactly."""
    blocks = []
    for k, (label, probs) in enumerate(scores.items()):
        win = winner(probs)
        color = _PALETTE[k % len(_PALETTE)]
        rows = []
        for i, (text, p) in enumerate(zip(texts, probs)):
            mark = '<b class="nc-win">&#9733; winner</b>' if i == win else ""  # fixed-width cell: bars stay aligned
            rows.append(
                f'<div class="nc-row" data-text="{html.escape(text)}" data-prob="{p:.6f}" data-winner="{str(i == win).lower()}" '
                f'style="display:flex;align-items:center;gap:8px;margin:3px 0">'
                f'<span style="flex:0 0 38%;overflow:hidden;text-overflow:ellipsis;white-space:nowrap" title="{html.escape(text)}">'
                f"{html.escape(text)}</span>"
                f'<span style="flex:1;background:#eee;border-radius:3px;height:18px">'
                f'<span class="nc-bar" style="display:block;height:18px;border-radius:3px;width:{100 * p:.2f}%;'
                f'background:{color}"></span></span>'
                f'<span style="flex:0 0 60px;text-align:right">{100 * p:.1f}%</span>'
                f'<span style="flex:0 0 80px">{mark}</span></div>'
            )
        verdict = f"winner: &#8220;{html.escape(texts[win])}&#8221;" if win is not None else "tie: no winner"
        blocks.append(
            f'<div class="nc-model" data-model="{html.escape(label)}" style="margin-bottom:14px">'
            f'<div style="font-weight:600">{html.escape(label)} <span class="nc-verdict" '
            f'style="font-weight:400">({verdict})</span></div>{"".join(rows)}</div>'
        )
    return "".join(blocks)


def message_html(text: str) -> str:
    return f'<div class="nc-error" style="color:#b00020;font-weight:600">&#9888; {html.escape(text)}</div>'


def run_compare(models: Sequence[LoadedModel], image_value, raw_texts: str | None) -> tuple[str, dict]:
    """The Compare button: (HTML for the page, raw scores). Bad input gives a message, never an exception."""
    try:
        image = open_image(image_value)
        texts = parse_texts(raw_texts, models)
        scores = compare_scores(models, image, texts)
    except AppInputError as err:
        return message_html(str(err)), {}
    return bars_html(scores, texts), scores


# --------------------------------------------------------------------------- negation pairs


def negation_pair(seed: int, image_size: int = scene_world.DEFAULT_IMAGE_SIZE) -> tuple[ChoiceItem, ChoiceItem]:
    """(negated, affirmative) probe items for one random scene: :func:`benchmarks.scene_negation_pair`."""
    return scene_negation_pair(seed, image_size)


def scene_example(seed: int) -> tuple[Image.Image, list[str]]:
    """A scene and two captions for the Compare tab (:func:`benchmarks.compare_example`, the ``app_compare`` probe).

    The true negated caption first, then its affirmative twin.
    """
    return compare_example(seed)


#: the seeds of the Compare tab's pre-filled example that the demo's report checks
COMPARE_SEEDS: tuple[int, ...] = tuple(range(20))


def compare_example_hits(model, processor, seeds: Sequence[int] = COMPARE_SEEDS) -> int:
    """On how many of ``seeds`` the model's winner for :func:`scene_example` is the true (negated) caption."""
    hits = 0
    for seed in seeds:
        image, texts = scene_example(seed)
        hits += winner(model.score([image], texts, processor)[0].tolist()) == 0
    return hits


def pair_picks(models: Sequence[LoadedModel], item: ChoiceItem) -> dict[str, list[float]]:
    """Per model, the probability of each candidate image for the item's text (softmax over images)."""
    out = {}
    for m in models:
        pixels = m.processor(images=list(item.images), return_tensors="pt")["pixel_values"]
        tok = m.processor.tokenizer([item.text], padding=True, truncation=True, return_tensors="pt")
        sims = m.model.similarity(pixels, tok["input_ids"], tok["attention_mask"])[:, 0]
        out[m.label] = (m.model.logit_scale.exp().detach() * sims).softmax(dim=0).tolist()
    return out


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one bitmap size
        return ImageFont.load_default()


def draw_pair(item: ChoiceItem, picks: dict[str, list[float]], side: int = 224) -> Image.Image:
    """Both candidates side by side; under each, the models that picked it (a tie picks neither)."""
    font, pad, line = _font(15), 8, 20
    height = side + pad * 2 + line * (len(picks) + 1)
    canvas = Image.new("RGB", (2 * side + 3 * pad, height), "white")
    draw = ImageDraw.Draw(canvas)
    for k, img in enumerate(item.images):
        x = pad + k * (side + pad)
        right = k == item.answer
        canvas.paste(img.resize((side, side), Image.NEAREST), (x, pad))
        draw.rectangle(
            (x - 3, pad - 3, x + side + 2, pad + side + 2), outline="#2e7d32" if right else "#9e9e9e", width=3
        )
        y = pad + side + 4
        draw.text(
            (x, y), f"{'AB'[k]}: {'right answer' if right else 'has the negated object'}", fill="black", font=font
        )
        for label, probs in picks.items():
            y += line
            if winner(probs) == k:
                draw.text(
                    (x, y), f"picked by {label} ({probs[k]:.0%})", fill="#2e7d32" if right else "#c62828", font=font
                )
    return canvas


def tally_html(tally: dict[str, list[int]]) -> str:
    """Running accuracy per model over the pairs shown, beside chance (ties count as wrong)."""
    rows = "".join(
        f'<tr class="nc-tally-row" data-model="{html.escape(label)}" data-correct="{c}" data-total="{n}">'
        f"<td>{html.escape(label)}</td><td>{c} / {n}</td><td>{(c / n if n else 0):.0%}</td></tr>"
        for label, (c, n) in tally.items()
    )
    total = max((n for _, n in tally.values()), default=0)
    return (
        f'<div class="nc-tally" data-pairs="{total}"><b>Tally after {total} pair{"s" if total != 1 else ""}</b> '
        f"(chance 50%; a tie counts as wrong)<table><tr><th>model</th><th>right</th><th>accuracy</th></tr>"
        f"{rows}</table></div>"
    )


def run_pair(models: Sequence[LoadedModel], seed: int, tally: dict | None) -> tuple[Image.Image, str, str, dict]:
    """One "next pair" click: (annotated image, caption HTML, tally HTML, new tally)."""
    item, _ = negation_pair(seed)
    picks = pair_picks(models, item)
    tally = {m.label: list((tally or {}).get(m.label, (0, 0))) for m in models}
    lines = []
    for label, probs in picks.items():
        pick = winner(probs)
        tally[label][0] += int(pick == item.answer)
        tally[label][1] += 1
        picked = "nothing (tie)" if pick is None else "ABCDEFGH"[pick]
        verdict = "right" if pick == item.answer else "wrong"
        lines.append(
            f'<li class="nc-pick" data-model="{html.escape(label)}" data-pick="{picked}">{html.escape(label)} '
            f"picks {picked} ({verdict})</li>"
        )
    caption = (
        f'<div class="nc-caption">Caption: <b>&#8220;{html.escape(item.text)}&#8221;</b> &mdash; which image '
        f"matches?<ul>{''.join(lines)}</ul></div>"
    )
    return draw_pair(item, picks), caption, tally_html(tally), tally


# --------------------------------------------------------------------------- benchmarks


def load_results(path: str | os.PathLike) -> dict:
    """Read an evaluation ``results.json`` and check the fields the app shows."""
    path = Path(path)
    if not path.is_file():
        raise AppInputError(
            f"No results file at {path}: `make demo` writes one (runs/demo/results.json), "
            f"or start the app with --results PATH."
        )
    try:
        results = json.loads(path.read_text())
        models = results["models"]
        for _label, entry in models.items():
            for _name, m in entry["metrics"].items():
                float(m["value"]), float(m["chance"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise AppInputError(f"{path} is not an evaluation results file ({type(err).__name__}: {err})") from err
    return results


def results_rows(results: dict) -> tuple[list[str], list[list]]:
    """Table (headers, rows): one row per metric, one column per model (value with its 95% interval)."""
    labels = list(results["models"])
    metrics = list(dict.fromkeys(name for entry in results["models"].values() for name in entry["metrics"]))
    rows = []
    for name in metrics:
        cells, chance, n = [], None, None
        for label in labels:
            m = results["models"][label]["metrics"].get(name)
            if m is None:
                cells.append("")
                continue
            chance, n = m["chance"], m.get("n")
            ci = m.get("ci95")
            cells.append(f"{m['value']:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else ""))
        rows.append([name, *cells, "" if chance is None else f"{chance:.3f}", "" if n is None else n])
    return ["metric", *labels, "chance", "n"], rows


def results_figure(results: dict):
    """Grouped bars per metric with 95% intervals, chance as a black tick."""
    from matplotlib.figure import Figure

    labels = list(results["models"])
    metrics = list(dict.fromkeys(name for entry in results["models"].values() for name in entry["metrics"]))
    fig = Figure(figsize=(8, 0.55 * len(metrics) * max(1, len(labels)) / 2 + 1.5), layout="constrained")
    ax = fig.subplots()
    height = 0.8 / max(1, len(labels))
    for k, label in enumerate(labels):
        got = results["models"][label]["metrics"]
        ys = [i + (k - (len(labels) - 1) / 2) * height for i, name in enumerate(metrics) if name in got]
        ms = [got[name] for name in metrics if name in got]
        err = np.array(
            [[m["value"] - m["ci95"][0], m["ci95"][1] - m["value"]] if m.get("ci95") else [0, 0] for m in ms]
        ).T.reshape(2, -1)
        ax.barh(
            ys,
            [m["value"] for m in ms],
            height,
            xerr=err,
            label=label,
            color=_PALETTE[k % len(_PALETTE)],
            ecolor="#555555",
            capsize=3,
        )
    for i, name in enumerate(metrics):
        chance = next(e["metrics"][name]["chance"] for e in results["models"].values() if name in e["metrics"])
        ax.plot([chance, chance], [i - 0.45, i + 0.45], color="black", lw=2, label="chance" if i == 0 else None)
    ax.set_yticks(range(len(metrics)), metrics)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.05)
    ax.set_xlabel("score (95% interval)")
    fig.legend(loc="outside lower center", ncols=len(labels) + 1, fontsize=8)
    return fig


# --------------------------------------------------------------------------- the page


def build_demo(models: Sequence[LoadedModel], results_path: str | os.PathLike | None = None, seed: int = 0):
    """The Gradio Blocks app for ``models`` (see :func:`load_models`); ``results_path`` feeds the Benchmarks tab."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home unless the user asks for them
    import gradio as gr

    models = list(models)
    first_image, first_texts = scene_example(seed)
    with gr.Blocks(title='NegationCLIP: does CLIP know "no"?') as demo:
        gr.Markdown('# Does CLIP know "no"?\nModels: ' + ", ".join(f"**{m.label}** (`{m.source}`)" for m in models))
        with gr.Tab("Compare"):
            with gr.Row():
                with gr.Column():
                    image = gr.Image(
                        value=first_image,
                        type="filepath",
                        format="png",
                        label="image",
                        height=300,
                        sources=["upload", "clipboard"],
                        elem_id="compare-image",
                    )
                    with gr.Row():
                        scene_seed = gr.Number(value=seed, precision=0, label="scene seed", elem_id="scene-seed")
                        random_btn = gr.Button("random scene", elem_id="random-scene")
                with gr.Column():
                    texts = gr.Textbox(
                        value="\n".join(first_texts), lines=5, label="texts (one per line)", elem_id="compare-texts"
                    )
                    compare_btn = gr.Button("Compare", variant="primary", elem_id="compare-button")
            bars = gr.HTML(elem_id="compare-result")

            def on_random(current):
                # the next seed is drawn from the current one, so a page's sequence of scenes can be replayed
                new = int(np.random.default_rng(int(current or 0)).integers(1, 1_000_000))
                img, caps = scene_example(new)
                return new, img, "\n".join(caps)

            def on_compare(image_value, raw):
                return run_compare(models, image_value, raw)[0]

            random_btn.click(on_random, scene_seed, [scene_seed, image, texts], show_progress="hidden")

            def on_seed(value):
                img, caps = scene_example(int(value or 0))
                return img, "\n".join(caps)

            scene_seed.submit(on_seed, scene_seed, [image, texts])
            # preprocess=False: gradio would open the upload itself and turn a broken file into a bare "Error"
            # toast; open_image reads the file instead and explains what is wrong in the page
            compare_btn.click(on_compare, [image, texts], bars, preprocess=False)
        with gr.Tab("Negation pairs"):
            gr.Markdown(
                "Two renders of one scene that differ **only** at one spot. The caption negates the object "
                "at that spot: the right answer is the image without it."
            )
            pair_seed = gr.State(seed)
            tally = gr.State({})
            with gr.Row():
                pair_image = gr.Image(type="pil", label="candidates", interactive=False, elem_id="pair-image")
                with gr.Column():
                    pair_caption = gr.HTML(elem_id="pair-caption")
                    next_btn = gr.Button("next pair", variant="primary", elem_id="next-pair")
                    tally_box = gr.HTML(tally_html({m.label: [0, 0] for m in models}), elem_id="pair-tally")

            def on_next(current_seed, current_tally):
                img, caption, table, new_tally = run_pair(models, current_seed, current_tally)
                return img, caption, table, new_tally, current_seed + 1

            next_btn.click(on_next, [pair_seed, tally], [pair_image, pair_caption, tally_box, tally, pair_seed])
        with gr.Tab("Benchmarks"):
            _benchmarks_tab(gr, results_path)
        demo.load(on_next, [pair_seed, tally], [pair_image, pair_caption, tally_box, tally, pair_seed])
    return demo


def _benchmarks_tab(gr, results_path) -> None:
    try:
        if results_path is None:
            raise AppInputError(
                "No results file given: start the app with --results PATH (make demo writes runs/demo/results.json)."
            )
        results = load_results(results_path)
    except AppInputError as err:
        gr.HTML(message_html(str(err)), elem_id="benchmarks-message")
        return
    headers, rows = results_rows(results)
    gr.Markdown(
        f"From `{results_path}` (created {results.get('created', '?')}, seed {results.get('seed', '?')}); "
        "values with 95% intervals, chance beside each metric."
    )
    gr.Dataframe(value=rows, headers=headers, interactive=False, elem_id="benchmarks-table")
    gr.Plot(results_figure(results), elem_id="benchmarks-plot")
