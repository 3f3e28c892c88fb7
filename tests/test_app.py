"""The app's logic without a browser: scores, pairs, bad input, results, the CLI and the Space folder."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hf_negationclip.apps import app
from hf_negationclip.apps.cli import AppConfig, _merge_repeated_list_flags, main, run_app

FIXTURE_RESULTS = Path(__file__).parent / "fixtures" / "results.json"


@pytest.fixture(scope="module")
def models(tiny_checkpoints):
    return app.load_models([f"{label}={path}" for label, path in tiny_checkpoints.items()])


def test_compare_numbers_equal_model_score(models):
    image, texts = app.scene_example(5)
    page, scores = app.run_compare(models, image, "\n".join(texts))
    for m in models:
        expected = m.model.score([image], texts, m.processor)[0]
        assert torch.allclose(torch.tensor(scores[m.label]), expected)
        shown = [float(x) for x in re.findall(r'data-prob="([0-9.]+)"', page.split(f'data-model="{m.label}"')[1])][:2]
        assert shown == pytest.approx(expected.tolist(), abs=1e-6)
        win = int(expected.argmax())
        assert f"winner: &#8220;{texts[win]}&#8221;" in page.split(f'data-model="{m.label}"')[1].split("nc-model")[0]


def test_scene_example_gives_a_true_negated_caption_first():
    image, (negated, affirmative) = app.scene_example(3)
    assert " with no " in negated and " with no " not in affirmative
    assert negated.split(" with no ")[1] in affirmative  # the same object, affirmed
    assert image.size == (128, 128)


def test_negation_pair_differs_only_at_one_spot():
    item, twin = app.negation_pair(7)
    a, b = (np.asarray(im, dtype=np.int16) for im in item.images)
    changed = (a != b).any(axis=-1).mean()
    assert 0 < changed < 0.2  # one object's footprint, nothing else
    assert item.kind == "negated" and twin.kind == "affirmative"
    assert app.negation_pair(7)[0].text == item.text  # same seed, same pair


def test_pair_picks_follow_similarity_and_tally_counts(models):
    item, _ = app.negation_pair(11)
    picks = app.pair_picks(models, item)
    for m in models:
        batch = m.processor(text=[item.text], images=list(item.images), return_tensors="pt", padding=True)
        sims = m.model.similarity(batch["pixel_values"], batch["input_ids"], batch["attention_mask"])[:, 0]
        assert app.winner(picks[m.label]) == int(sims.argmax())
        assert sum(picks[m.label]) == pytest.approx(1.0)
    image, caption, table, tally = app.run_pair(models, 11, None)
    assert image.width > 2 * 128 and "with no" in caption
    image, caption, table, tally = app.run_pair(models, 12, tally)
    assert all(total == 2 for _, total in tally.values())
    assert 'data-pairs="2"' in table


def test_winner_is_none_on_a_tie():
    assert app.winner([0.5, 0.5]) is None
    assert app.winner([0.2, 0.8]) == 1


@pytest.mark.parametrize(
    "image,texts,message",
    [
        (None, "a red circle", "Add an image first"),
        ("IMAGE", "   \n  ", "Enter at least one text"),
        ("IMAGE", "a photo of " + "very " * 80 + "red circle", "tokens long"),
        ("BROKEN", "a red circle", "Could not read broken.png as an image"),
    ],
)
def test_bad_input_gives_a_message(models, tmp_path, image, texts, message):
    if image == "IMAGE":
        image = Image.new("RGB", (64, 64), "red")
    elif image == "BROKEN":
        image = tmp_path / "broken.png"
        image.write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    page, scores = app.run_compare(models, image, texts)
    assert message in page and "nc-error" in page and scores == {}


def test_results_table_and_plot_come_from_the_file():
    results = app.load_results(FIXTURE_RESULTS)
    headers, rows = app.results_rows(results)
    assert headers == ["metric", "CLIP (fixture)", "NegationCLIP (fixture)", "chance", "n"]
    assert rows[0] == ["negation_probe/accuracy", "0.110 [0.070, 0.160]", "0.930 [0.890, 0.960]", "0.500", 200]
    fig = app.results_figure(results)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["negation_probe/accuracy", "scene_negrefcocog/accuracy"]
    widths = sorted(round(p.get_width(), 3) for p in ax.patches)
    assert widths == [0.11, 0.42, 0.88, 0.93]


def test_bad_results_files_give_messages(tmp_path):
    with pytest.raises(app.AppInputError, match="No results file"):
        app.load_results(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"models": {"x": {"metrics": {"m": {"value": 1}}}}}))
    with pytest.raises(app.AppInputError, match="not an evaluation results file"):
        app.load_results(bad)


def test_model_sources_are_checked(tmp_path):
    assert app.parse_model_spec("base=runs/x") == ("base", "runs/x")
    assert app.parse_model_spec("openai/clip-vit-base-patch32") == (
        "clip-vit-base-patch32",
        "openai/clip-vit-base-patch32",
    )
    assert app.is_hub_id("org/name") and not app.is_hub_id("runs/demo/best") and not app.is_hub_id(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a checkpoint folder"):
        app.load_models([str(tmp_path)])
    with pytest.raises(FileNotFoundError, match="make demo"):
        app.default_model_specs(tmp_path / "no-demo")


def test_cli_app_without_demo_output_says_what_to_do(tmp_path, capsys):
    assert main(["app", "--demo_dir", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the default models are the checkpoints of `make demo`") and "--model" in err


def test_repeated_model_flags_are_merged():
    argv = ["--model", "a", "--port", "1", "--model", "b", "c", "--model=d"]
    assert _merge_repeated_list_flags(AppConfig, argv) == ["--port", "1", "--model", "a", "b", "c", "d"]


def test_run_app_builds_the_blocks_with_results(tiny_checkpoints):
    pytest.importorskip("gradio")
    models = [f"{k}={v}" for k, v in tiny_checkpoints.items()]
    demo = run_app(AppConfig(model=models, results=str(FIXTURE_RESULTS)), launch=False)
    assert demo.title.startswith("NegationCLIP")


def test_push_space_dry_run_stages_the_folder(tmp_path, capsys):
    out = tmp_path / "space"
    argv = [
        "push-space",
        "--repo_id",
        "me/negclip-space",
        "--model",
        "CLIP=openai/clip-vit-base-patch32",
        "--model",
        "me/negationclip-b32",
        "--out_dir",
        str(out),
        "--results",
        str(FIXTURE_RESULTS),
        "--dry_run",
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    for name in ("app.py", "requirements.txt", "README.md", "results.json", "dry run: nothing uploaded"):
        assert name in printed
    readme = (out / "README.md").read_text()
    header = readme.split("---")[1]
    assert "sdk: gradio" in header and "app_file: app.py" in header
    assert "- openai/clip-vit-base-patch32" in header and "- me/negationclip-b32" in header
    source = (out / "app.py").read_text()
    compile(source, "app.py", "exec")
    assert "'CLIP=openai/clip-vit-base-patch32'" in source and "negationclip-b32=me/negationclip-b32" in source
    assert (out / "requirements.txt").read_text().startswith("hf-negationclip[app]==")


def test_staged_space_app_builds_the_demo(tmp_path, monkeypatch, tiny_checkpoints):
    gr = pytest.importorskip("gradio")
    from hf_negationclip.apps.space import stage_space

    stage_space(tmp_path, ["CLIP=org/clip", "org/negclip"], results=FIXTURE_RESULTS)
    asked, real_load_models = [], app.load_models

    def fake_load_models(specs):  # the Space would download these Hub ids; here they are the tiny checkpoints
        asked.extend(specs)
        return real_load_models([str(path) for path in tiny_checkpoints.values()])

    monkeypatch.setattr(app, "load_models", fake_load_models)
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "space_app"}
    exec(compile((tmp_path / "app.py").read_text(), "app.py", "exec"), namespace)
    assert asked == ["CLIP=org/clip", "negclip=org/negclip"]
    assert isinstance(namespace["demo"], gr.Blocks) and namespace["RESULTS"] == "results.json"
    stage_space(tmp_path, ["org/negclip"])  # staged again without results: no stale copy left behind
    assert not (tmp_path / "results.json").exists()


def test_push_space_refuses_local_folders_and_uploads_through_the_hub_code(
    tmp_path, capsys, tiny_checkpoints, fake_hub
):
    folder = str(tiny_checkpoints["clip-a"])
    assert main(["push-space", "--repo_id", "me/s", "--model", folder, "--out_dir", str(tmp_path)]) == 2
    assert "not a Hub model id" in capsys.readouterr().err
    assert main(["push-space", "--repo_id", "me/space", "--model", "org/m", "--out_dir", str(tmp_path / "s")]) == 0
    files = fake_hub.files("me/space", "space")
    assert {"app.py", "requirements.txt", "README.md"} <= set(files)
    assert "sdk: gradio" in files["README.md"].decode()
    # a second push needs consent, and leaves the Space as it was
    assert main(["push-space", "--repo_id", "me/space", "--model", "org/m", "--out_dir", str(tmp_path / "s")]) == 2
    assert "exist" in capsys.readouterr().err
    assert (
        main(
            ["push-space", "--repo_id", "me/space", "--model", "org/m", "--out_dir", str(tmp_path / "s"), "--exist_ok"]
        )
        == 0
    )
