"""The negated-caption corpus on the scene world: truth against annotations, forms, distractors, resume, shards."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hf_negationclip import world as scene_world
from hf_negationclip.apps.cli import main
from hf_negationclip.benchmarks import load_world_split
from hf_negationclip.corpus import (
    POSITIONS,
    CorpusConfig,
    Target,
    Vocabulary,
    has_negation,
    question_target,
    run_corpus,
    validate,
)
from hf_negationclip.corpus.backends import ATTRIBUTE_FORMS, OBJECT_FORMS, Job
from hf_negationclip.corpus.backends.rules import rewrite_attribute, rewrite_object
from hf_negationclip.corpus.store import iter_split_records, read_records

VOCAB = Vocabulary(list(scene_world.SHAPES), {"color": list(scene_world.COLORS), "size": list(scene_world.SIZES)})


@pytest.fixture(scope="module")
def corpus(world, tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    summary = run_corpus(CorpusConfig(world_dir=str(world), output_dir=str(out), added_pairs=True, show_progress=False))
    return out, summary


def _records(out, split="train", status="accepted"):
    return [r for r in iter_split_records(out, split) if r["status"] == status]


def _truth(world, split="train"):
    """Objects per image read straight from the world's annotations (independent of the corpus code)."""
    return {im.image_id: im.objects for im in load_world_split(world, split)}


def _holds(target: dict, objects) -> bool:
    """Whether the negated statement is TRUE of these world objects."""
    attrs = target["attributes"]
    if target["kind"] == "object":
        return not any(o["shape"] == target["category"] and all(o[k] == v for k, v in attrs.items()) for o in objects)
    same = [o for o in objects if o["shape"] == target["category"]]
    return bool(same) and all(o[target["key"]] != target["value"] for o in same)


def test_accepted_captions_never_negate_what_is_in_the_image(world, corpus):
    out, _ = corpus
    truth = _truth(world)
    accepted = _records(out)
    assert len(accepted) > 500
    for rec in accepted:
        assert _holds(rec["target"], truth[rec["image_id"]]), rec
        assert has_negation(rec["negated_caption"]) and rec["negated_caption"] != rec["caption"]


def test_every_form_and_position_occurs_and_rejects_have_reasons(corpus, check_png):
    out, summary = corpus
    accepted = [r for s in ("train", "val", "test") for r in _records(out, s)]
    forms = {r["form"] for r in accepted}
    assert forms == set(OBJECT_FORMS) | set(ATTRIBUTE_FORMS)
    assert len(forms) >= 12
    assert {r["position"] for r in accepted} == set(POSITIONS)
    assert {r["pipeline"] for r in accepted} == {"absent-object", "vqa-no"}
    assert {r["target"]["kind"] for r in accepted} == {"object", "attribute"}
    rejected = _records(out, "train", "rejected")
    assert rejected and all(r["reason"] for r in rejected)
    stats = json.loads((out / "corpus_stats.json").read_text())
    assert sum(stats["forms"].values()) == stats["accepted"] == len(accepted)
    check_png(out / "corpus_stats.png", height=400, width=1200, colours=["#4c72b0"])  # two panels of bars


def test_distractors_are_minimal_pairs(world, corpus):
    """Each distractor holds the negated thing, keeps every affirmed phrase, count, spots and background."""
    out, _ = corpus
    truth = _truth(world)
    images = {im.image_id: im for im in load_world_split(world, "train")}
    with_pairs = [r for r in _records(out) if r["distractors"]]
    assert len(with_pairs) > 100
    kinds = set()
    added = 0
    for rec in with_pairs:
        before = truth[rec["image_id"]]
        after = [
            {"shape": o["category"], **o["attributes"], "x": o["center"][0], "y": o["center"][1]}
            for o in rec["distractor_objects"]
        ]
        assert not _holds(rec["target"], after), rec  # the negation is FALSE of the distractor
        if rec.get("positive"):  # an added pair: the positive is the image plus Z, the distractor plus X, same spot
            added += 1
            positive = [
                {"shape": o["category"], **o["attributes"], "x": o["center"][0], "y": o["center"][1]}
                for o in rec["positive_objects"]
            ]
            assert _holds(rec["target"], positive) and positive[:-1] == before == after[:-1], rec
            z, x = positive[-1], after[-1]
            assert (z["x"], z["y"]) == (x["x"], x["y"]) and z["shape"] != x["shape"] and z["color"] != x["color"]
            assert (out / rec["positive"]).is_file()
            before = positive
        assert len(after) == len(before) and [(o["x"], o["y"]) for o in after] == [(o["x"], o["y"]) for o in before]
        for m in VOCAB.mentions(rec["caption"]):  # everything the caption affirms is still there
            assert any(o["shape"] == m.category and all(o[k] == v for k, v in m.attributes) for o in after), (rec, m)
        kinds.add(rec["target"]["kind"])
        path = out / rec["distractors"][0]
        assert path.is_file()
    assert kinds == {"object", "attribute"} and added > 0
    # the rendered pixels are the described scene on the original background
    rec = with_pairs[0]
    im = images[rec["image_id"]]
    expect = scene_world.render_scene(
        [
            {"shape": o["category"], **o["attributes"], "x": o["center"][0], "y": o["center"][1]}
            for o in rec["distractor_objects"]
        ],
        im.image_size,
        im.scene_seed,
    )
    got = np.asarray(Image.open(out / rec["distractors"][0]).convert("RGB"), dtype=float)
    assert np.abs(got - np.asarray(expect, dtype=float)).mean() < 4  # JPEG noise only
    stats = json.loads((out / "corpus_stats.json").read_text())
    assert any(k.startswith("distractors/none/") for k in stats["counts"])  # impossible edits are counted


def test_interchange_file_matches_the_shared_format(world, corpus):
    out, _ = corpus
    data = json.loads((out / "negated_captions_train.json").read_text())
    assert {"info", "licenses", "images", "annotations"} <= set(data)
    assert set(data["images"][0]) == {"id", "file_name", "height", "width"}
    for ann in data["annotations"]:
        assert {
            "id",
            "image_id",
            "caption",
            "updated_caption",
            "negated",
            "cue",
            "form",
            "position",
            "pipeline",
            "proposer",
            "verifier",
            "distractors",
        } <= set(ann)
        assert ann["pipeline"] in ("absent-object", "vqa-no")
        for rel in ann["distractors"]:
            assert not os.path.isabs(rel) and (out / rel).is_file()
    ids = {img["id"] for img in data["images"]}
    assert all((Path(world) / "images" / "train" / img["file_name"]).is_file() for img in data["images"])
    assert {a["image_id"] for a in data["annotations"]} <= ids
    # the paper's reader reads it
    from hf_negationclip.corpus import load_coco_captions

    recs = load_coco_captions(out / "negated_captions_train.json", Path(world) / "images" / "train", "updated_caption")
    assert len(recs) == len(data["annotations"])


def test_rules_rewrites_keep_the_caption_and_vary_the_wording():
    caption = "a small red circle to the left of a blue square"
    texts, forms = set(), set()
    for seed in range(300):
        job = Job(
            1,
            1,
            caption,
            Path("x.jpg"),
            "absent-object",
            seed,
            mentions=VOCAB.mentions(caption),
            target=Target("object", "triangle", (("color", "green"),)),
        )
        text, form = rewrite_object(job, np.random.default_rng(seed))
        job.negated_caption = text
        assert validate(job, VOCAB) is None, text
        texts.add(text)
        forms.add(form)
    assert forms == set(OBJECT_FORMS) and len(texts) > 60
    assert not [t for t in texts if re.search(r"\ba (?:image|[aeiou])", t, re.IGNORECASE)]  # "an image", not "a image"
    job = Job(
        1,
        1,
        "a square on a striped background",
        Path("x.jpg"),
        "vqa-no",
        0,
        mentions=VOCAB.mentions("a square on a striped background"),
        target=Target("attribute", "square", (), "color", "red"),
    )
    outs = {rewrite_attribute(job, np.random.default_rng(s))[0] for s in range(60)}
    assert "a square that is not red on a striped background" in outs and len(outs) >= 8


def test_validation_names_its_reasons():
    job = Job(
        1, 1, "a red circle and a blue square", Path("x.jpg"), "absent-object", 0, target=Target("object", "star", ())
    )
    cases = {
        "": "empty output",
        "a red circle and a blue square with a star": "no negation cue",
        "a circle and a square with no star": "dropped content words",
        "a red circle and a blue square with no triangle": "does not name the negated thing",
        "Rewritten caption: a red circle and a blue square with no star": "prompt text leaked",
        "no star": "bad length",
    }
    for text, reason in cases.items():
        job.negated_caption, job.reason = text, None
        assert validate(job, VOCAB) == reason, text
    job.negated_caption = "a red circle and a blue square with no star"
    assert validate(job, VOCAB) is None


def test_question_targets():
    mentions = VOCAB.mentions("a square and a blue circle")
    assert question_target("Is the square red?", mentions, VOCAB) == Target("attribute", "square", (), "color", "red")
    assert question_target("Is the circle red?", mentions, VOCAB) is None  # the caption says it is blue
    assert question_target("Is the star red?", mentions, VOCAB) is None  # no star in this caption
    assert question_target("Is there a red star in the picture?", mentions, VOCAB) == Target(
        "object", "star", (("color", "red"),)
    )
    assert question_target("Is there a blue circle in the picture?", mentions, VOCAB) is None
    assert question_target("What colour is it?", mentions, VOCAB) is None


def test_shards_partition_the_corpus(world, corpus, tmp_path):
    out, _ = corpus
    for index in range(2):
        run_corpus(
            CorpusConfig(
                world_dir=str(world),
                output_dir=str(tmp_path),
                splits="val",
                num_shards=2,
                shard_index=index,
                added_pairs=True,
                show_progress=False,
            )
        )
    assert len(list((tmp_path / "shards" / "val").glob("shard-*-of-00002.jsonl"))) == 2
    merged = sorted(json.dumps(r, sort_keys=True) for r in iter_split_records(tmp_path, "val"))
    single = sorted(json.dumps(r, sort_keys=True) for r in iter_split_records(out, "val"))
    assert merged == single


# The CLI, except that the run waits forever once its shard holds 40 lines (``stopped`` beside shards/ says so).
_STOP_AFTER_40_LINES = """
import sys, time
from pathlib import Path
from hf_negationclip.apps.cli import main
from hf_negationclip.corpus.store import ShardWriter
real_write = ShardWriter.write
def write_then_wait(self, records):
    real_write(self, records)
    if Path(self.path).read_bytes().count(b"\\n") >= 40:
        (Path(self.path).parents[2] / "stopped").write_text("40")
        time.sleep(3600)
ShardWriter.write = write_then_wait
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_and_resume_gives_the_uninterrupted_corpus(world, tmp_path):
    args = ["corpus", "--world_dir", str(world), "--splits", "train", "--batch_size", "4", "--show_progress", "false"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    assert main(args + ["--output_dir", str(full)]) == 0
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", _STOP_AFTER_40_LINES, *args, "--output_dir", str(resumed)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    shard = resumed / "shards" / "train" / "shard-00000-of-00001.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (resumed / "stopped").exists() and proc.poll() is None:
        time.sleep(0.01)
    still_running = proc.poll() is None
    proc.send_signal(signal.SIGKILL)  # the run waits after a flushed write of at least 40 lines: the kill lands there
    proc.wait()
    assert still_running, "the run ended before it wrote 40 lines"
    lines_at_kill = shard.read_bytes().count(b"\n")
    with open(shard, "ab") as fh:  # a write torn by the kill
        fh.write(b'{"image_id": 1, "capt')
    assert main(args + ["--output_dir", str(resumed)]) == 0
    a = [json.dumps(r, sort_keys=True) for r in iter_split_records(full, "train")]
    b = [json.dumps(r, sort_keys=True) for r in iter_split_records(resumed, "train")]
    assert sorted(a) == sorted(b) and len(b) == len(set(b)) > lines_at_kill
    assert (full / "negated_captions_train.json").read_bytes() == (resumed / "negated_captions_train.json").read_bytes()


def test_cli_errors_are_one_line(world, tmp_path, capsys):
    assert main(["corpus", "--world_dir", str(tmp_path / "nope"), "--output_dir", str(tmp_path)]) == 2
    assert main(["corpus", "--world_dir", str(world), "--pipelines", "bogus"]) == 2
    assert main(["corpus", "--world_dir", str(world), "--num_shards", "2", "--shard_index", "2"]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 3


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_two_launched_processes_split_the_shard_and_together_give_the_one_process_corpus(tmp_path):
    world = tmp_path / "world"
    scene_world.write_world(world, 20, seed=5, show_progress=False)
    args = ["corpus", "--world_dir", str(world), "--show_progress", "false", "--batch_size", "8"]
    assert main(args + ["--output_dir", str(tmp_path / "one")]) == 0
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).with_name("torchrun")
    two = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node",
            "2",
            "--master_port",
            str(_free_port()),
            "-m",
            "hf_negationclip.apps.cli",
            *args,
            "--output_dir",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    for split in ("train", "val", "test"):
        files = sorted((tmp_path / "two" / "shards" / split).glob("shard-*.jsonl"))
        assert [f.name for f in files] == ["shard-00000-of-00002.jsonl", "shard-00001-of-00002.jsonl"]
        per_process = [[json.dumps(r, sort_keys=True) for r in read_records(f)] for f in files]
        assert all(per_process), "each process decides its own part"
        both = per_process[0] + per_process[1]
        single = [json.dumps(r, sort_keys=True) for r in iter_split_records(tmp_path / "one", split)]
        assert len(both) == len(set(both)) and sorted(both) == sorted(single)  # no duplicates, nothing missing
        exported = [
            json.loads((tmp_path / run / f"negated_captions_{split}.json").read_text()) for run in ("one", "two")
        ]
        strip = lambda data: sorted(
            json.dumps({k: v for k, v in a.items() if k != "id"}, sort_keys=True)  # noqa: E731
            for a in data["annotations"]
        )
        assert strip(exported[0]) == strip(exported[1]) and exported[0]["images"] == exported[1]["images"]
    stats = [json.loads((tmp_path / run / "corpus_stats.json").read_text()) for run in ("one", "two")]
    assert stats[0] == stats[1]  # the counts of both processes, added up
    assert not list((tmp_path / "two").glob("corpus_counts.process-*.json"))


def test_malformed_inputs_give_one_line_errors_naming_the_file(world, tmp_path, capsys):
    import shutil

    root = tmp_path / "root"
    shutil.copytree(world / "annotations", root / "annotations")
    (root / "images" / "val").mkdir(parents=True)
    cap, inst = root / "annotations" / "captions_val.json", root / "annotations" / "instances_val.json"
    args = ["corpus", "--world_dir", str(root), "--splits", "val", "--output_dir", str(tmp_path / "out")]
    inst.write_text(inst.read_text()[:5000])  # torn
    assert main(args) == 2
    inst.write_text('{"images": [], "annotations": []}')  # no categories
    assert main(args) == 2
    cap.write_text("[1, 2]")
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and "Traceback" not in "".join(err)
    assert str(inst) in err[0] and "not valid JSON" in err[0]
    assert str(inst) in err[1] and "'categories'" in err[1]
    assert str(cap) in err[2] and "not COCO captions JSON" in err[2]


# --------------------------------------------------------------------------- minimal text twins


def test_text_twins_are_built_for_the_rules_corpus_and_pass_their_checks(world, corpus):
    from hf_negationclip.corpus.validation import validate_flip, validate_scope_swap

    out, summary = corpus
    splits = sorted(summary["splits"])
    records = [r for split in splits for r in _records(out, split)]
    truth = {k: v for split in splits for k, v in _truth(world, split).items()}
    assert len(records) > 500
    flips = [r for r in records if r["flip"]]
    assert len(flips) >= 0.99 * len(records) and all(r["flip_source"] == "rules" for r in flips)
    objects = [r for r in records if r["target"]["kind"] == "object"]
    swaps = [r for r in objects if r["scope_swap"]]
    assert len(swaps) >= 0.9 * len(objects)
    for r in records:
        target = Target.from_json(r["target"])
        assert r["mcq_wrong"] == [t for t in (r["flip"], r["scope_swap"]) if t]
        if r["flip"]:
            assert validate_flip(r["caption"], r["negated_caption"], r["flip"], target, VOCAB) is None
            assert not has_negation(r["flip"]) and VOCAB.names(r["flip"], target)
            if r["target"]["kind"] == "object" and not r.get("positive"):  # the flip affirms what the image lacks
                assert _holds(r["target"], truth[r["image_id"]])
        else:
            assert r["flip_missing"]
        if r["scope_swap"]:
            assert validate_scope_swap(r["negated_caption"], r["scope_swap"]) is None
            assert has_negation(r["scope_swap"]) and r["scope_swap"] != r["negated_caption"]
    # what could not be built is counted by reason in corpus_stats.json
    stats = json.loads((out / "corpus_stats.json").read_text())["text_twins"]
    assert stats["flip/rules"] == len(flips)
    assert stats["scope_swap/built"] == len([r for r in records if r["scope_swap"]])
    missing = sum(v for k, v in stats.items() if k.startswith("scope missing/"))
    assert missing == len(records) - stats["scope_swap/built"] and stats["scope missing/attribute negation"] > 0
    # and they reach the interchange file as the wrong options
    anns = json.loads((out / "negated_captions_train.json").read_text())["annotations"]
    assert all(isinstance(a["mcq_wrong"], list) for a in anns) and sum(bool(a["mcq_wrong"]) for a in anns) > 0.99 * len(
        anns
    )


def test_flip_and_scope_swap_checks_name_their_reasons():
    from hf_negationclip.corpus.twins import scope_swap, text_twins
    from hf_negationclip.corpus.validation import validate_flip, validate_scope_swap

    cap, neg, target = "a red circle", "a red circle with no blue star", Target("object", "star", (("color", "blue"),))
    assert validate_flip(cap, neg, "a red circle with a blue star", target, VOCAB) is None
    assert validate_flip(cap, neg, "a red circle with no blue star", target, VOCAB) == "cue left in the flip"
    assert validate_flip(cap, neg, "a red circle", target, VOCAB) == "flip is the original caption"
    assert validate_flip(cap, neg, "a circle with a blue star", target, VOCAB) == "flip dropped content words"
    assert validate_flip(cap, neg, "a red circle with a green star", target, VOCAB) == (
        "flip does not name the negated thing"
    )
    assert validate_flip(cap, neg, "a red circle with a blue star and a dog", target, VOCAB) == (
        "flip changes more than the negation"
    )
    assert validate_flip(cap, neg, "Here's the flip: a red circle with a blue star", target, VOCAB) == (
        "prompt text leaked into the flip"
    )
    assert scope_swap(neg, cap, target, VOCAB) == ("a blue star with no red circle", None)
    assert scope_swap("no blue stars here: an orange circle", "an orange circle", target, VOCAB) == (
        "no orange circles here: a blue star",
        None,
    )
    assert scope_swap("a red circle that is not blue", cap, Target("attribute", "circle", (), "color", "blue"), VOCAB)[
        1
    ] == ("attribute negation")
    assert scope_swap("a photo with no blue star", "a photo", target, VOCAB) == (None, "caption names no other object")
    assert scope_swap("a star with no blue star", "a star", target, VOCAB) == ("a blue star with no star", None)
    assert validate_scope_swap(neg, "a blue star with a red circle") == "cue lost in the scope swap"
    assert validate_scope_swap(neg, "a blue star with no red square") == "scope swap changes the words"
    twins = text_twins(neg, cap, target, VOCAB, model_flip="a red circle with a blue star")
    assert twins["flip_source"] == "model" and twins["mcq_wrong"] == [twins["flip"], "a blue star with no red circle"]
    twins = text_twins(neg, cap, target, VOCAB, model_flip="a green dog")
    assert twins["flip_rejected"] == "flip dropped content words" and twins["flip_source"] == "rules"
    assert twins["flip"] == "a red circle with a blue star"


def test_negation_clause_is_the_negation_alone_and_its_flip_alone():
    from hf_negationclip.corpus import negation_clause

    cap = "a red circle"
    assert negation_clause("no blue star here: a red circle", cap, "a blue star here: a red circle") == (
        "No blue star here",
        "A blue star here",
    )
    assert negation_clause("not a blue star, but rather a red circle", cap, "a blue star, but rather a red circle") == (
        "Not a blue star",
        "A blue star",
    )
    assert negation_clause(
        "a red circle, and there isn't a blue star", cap, "a red circle, and there is a blue star"
    ) == (
        "There isn't a blue star",
        "There is a blue star",
    )
    assert negation_clause("A red circle; the circle is not large", cap, "A red circle; the circle is large") == (
        "The circle is not large",
        "The circle is large",
    )
    # nothing when the caption is split around the negation, the clause leans on the caption's noun, or no flip
    assert negation_clause("a red circle with no blue star, left", "a red circle, left", "x") is None
    assert negation_clause("a red circle that is not blue", cap, "a red circle that is blue") is None
    assert negation_clause("a red circle, though not small", cap, "a red circle, though small") is None
    assert negation_clause("no blue star here: a red circle", cap, None) is None
    assert negation_clause("no blue star here: a red circle", cap, "no blue star here: a red circle") is None


def test_swapped_clause_negates_the_object_the_scope_swap_names_in_the_clause_words():
    from hf_negationclip.corpus import swapped_clause

    neg = "there isn't any triangle here, only four shapes: a cross, a diamond and a circle"
    swap = "there isn't any cross here, only four shapes: a triangle, a diamond and a circle"
    cap = "four shapes: a cross, a diamond and a circle"
    assert swapped_clause(neg, cap, "There isn't any triangle here", swap) == "There isn't any cross here"
    neg, swap = "a red circle; a small hexagon is not in the scene", "a small hexagon; a red circle is not in the scene"
    assert swapped_clause(neg, "a red circle", "A small hexagon is not in the scene", swap) == (
        "A red circle is not in the scene"
    )
    neg, swap = "no blue stars here: a red circle", "no red circles here: a blue star"
    assert swapped_clause(neg, "a red circle", "No blue stars here", swap) == "No red circles here"
    # nothing without a swap, for a clause the caption does not hold, or a swap that is not the two phrases traded
    assert swapped_clause(neg, "a red circle", "No blue stars here", None) is None
    assert swapped_clause(neg, "a red circle", "No green star here", swap) is None
    assert swapped_clause(neg, "a red circle", "No blue stars here", "no green squares here: a red circle") is None


def test_bind_ratio_proposes_an_absent_conjunction_of_parts_that_are_there_and_changes_nothing_at_zero():
    from hf_negationclip.corpus.backends import RulesBackend

    caption = "a small red circle to the left of a blue square"

    def targets(**options):
        jobs = [
            Job(1, 1, caption, Path("x.jpg"), "absent-object", seed, mentions=VOCAB.mentions(caption))
            for seed in range(400)
        ]
        RulesBackend(**options).propose(jobs, VOCAB, "random")
        return [j.target for j in jobs]

    default, none, every = targets(), targets(bind_ratio=0.0), targets(bind_ratio=1.0)
    assert default == none and every != none
    fresh = [t for t in every if t.category not in ("circle", "square")]
    assert fresh and all(dict(t.attributes).get("color") in ("red", "blue") for t in fresh)
    # "no red triangle" beside "a red circle": the colour is there, on another shape
    shared = [t for t in none if t.category not in ("circle", "square") and dict(t.attributes).get("color")]
    assert 0 < sum(dict(t.attributes)["color"] in ("red", "blue") for t in shared) < len(shared)
    with pytest.raises(ValueError, match="bind_ratio"):
        CorpusConfig(bind_ratio=1.5)
