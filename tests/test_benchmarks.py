import os
import pickle
import zlib
from collections import Counter

import numpy as np
import pytest
import torch

from hf_negationclip import build_negation_probe, load_refcocog, load_world_split, safe_pickle_load
from hf_negationclip.corpus import CorpusFormatError
from hf_negationclip.evaluation import image_to_text_recall_at_1, strict_argmax, zero_shot_accuracy


class Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_restricted_unpickler_reads_plain_data_and_refuses_code(tmp_path):
    plain = tmp_path / "plain.p"
    plain.write_bytes(pickle.dumps([{"ref_id": 1, "sentences": [{"raw": "a dog"}]}], protocol=2))
    assert safe_pickle_load(plain) == [{"ref_id": 1, "sentences": [{"raw": "a dog"}]}]
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps(Evil(), protocol=2))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load"):
        safe_pickle_load(evil)


def test_refcocog_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="RefCOCOg file missing"):
        load_refcocog(tmp_path)
    (tmp_path / "refcocog").mkdir()
    (tmp_path / "refcocog" / "refs(umd).p").write_bytes(b"garbage")
    (tmp_path / "refcocog" / "instances.json").write_text("{}")
    with pytest.raises(CorpusFormatError):
        load_refcocog(tmp_path)


def test_python2_style_refs_pickle(tmp_path):
    (tmp_path / "refcocog").mkdir()
    refs = [
        {
            "ref_id": 0,
            "ann_id": 5,
            "image_id": 1,
            "split": "val",
            "category_id": 1,
            "sent_ids": [0],
            "file_name": "COCO_train2014_000000000001_5.jpg",
            "sentences": [{"sent_id": 0, "raw": b"a dog", "sent": "a dog", "tokens": ["a", "dog"]}],
        }
    ]
    (tmp_path / "refcocog" / "refs(umd).p").write_bytes(pickle.dumps(refs, protocol=2))
    (tmp_path / "refcocog" / "instances.json").write_text(
        '{"images": [{"id": 1, "file_name": "COCO_train2014_000000000001.jpg"}], "annotations": [{"id": 5, "image_id": 1}], "categories": [{"id": 1, "name": "dog"}]}'
    )
    data = load_refcocog(tmp_path)
    assert data.split("val")[0]["ann_id"] == 5
    assert str(data.image_path(data.refs[0], "/coco/train2014")).endswith("COCO_train2014_000000000001.jpg")


def test_negation_probe_is_controlled(world):
    images = load_world_split(world, "val")
    items = build_negation_probe(images, n_items=40, seed=0)
    negated = [it for it in items if it.kind == "negated"]
    affirmative = [it for it in items if it.kind == "affirmative"]
    assert len(negated) == len(affirmative) == 40
    assert {it.answer for it in negated} == {0, 1}  # candidate order is shuffled
    for neg, aff in zip(negated, affirmative):
        assert " with no " in neg.text and " with no " not in aff.text
        assert neg.text.replace(" with no ", " with a ").replace(" with a a", " with a").replace(
            " with a o", " with an o"
        ) in (aff.text, aff.text.replace(" with an ", " with a "))
        # the two renders differ only inside one object's footprint
        a, b = (np.asarray(im, dtype=np.int16) for im in neg.images)
        ys, xs = np.nonzero((a != b).any(-1))
        assert 0 < (xs.max() - xs.min()) < 60 and 0 < (ys.max() - ys.min()) < 60
        # right answer of the negated text = the wrong answer of the affirmative one (same two images)
        assert np.array_equal(np.asarray(neg.images[neg.answer]), np.asarray(aff.images[1 - aff.answer]))


def test_strict_argmax_counts_ties_as_wrong():
    scores = torch.tensor([[0.5, 0.5], [0.2, 0.9], [0.9, 0.1]])
    assert strict_argmax(scores).tolist() == [-1, 1, 0]


def test_zero_shot_and_recall_on_known_embeddings():
    eye = torch.eye(3)
    acc = zero_shot_accuracy(eye, [0, 1, 0], eye)
    assert acc.value == pytest.approx(2 / 3) and acc.chance == pytest.approx(1 / 3) and acc.n == 3
    # captions 0,1 belong to image 0; 2,3 to image 1; image 1's top caption is image 0's
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    txt = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.6, 0.8]])
    r1 = image_to_text_recall_at_1(img, txt, [0, 0, 1, 1])
    assert r1.value == 1.0 and r1.chance == 0.5
    r1 = image_to_text_recall_at_1(img, txt[[0, 1, 2, 2]], [0, 0, 1, 1])
    assert r1.value == 0.5


def test_shape_probe_differs_only_in_one_objects_shape(world):
    from hf_negationclip import world as scene_world
    from hf_negationclip.benchmarks import build_shape_probe

    images = load_world_split(world, "val")
    items = build_shape_probe(images, n_items=30, seed=1)
    assert len(items) == 30 and {it.answer for it in items} == {0, 1}
    for it in items:
        color, shape = it.text.split()[1:]
        assert color in scene_world.COLORS and shape in scene_world.SHAPES
        a, b = (np.asarray(im, dtype=np.int16) for im in it.images)
        ys, xs = np.nonzero((a != b).any(-1))
        assert 0 < xs.max() - xs.min() < 128 / scene_world.GRID and 0 < ys.max() - ys.min() < 128 / scene_world.GRID
        # the only change is which pixels the same-coloured object covers: at every changed pixel one of the
        # two renders shows exactly the named colour, so colour alone cannot decide
        rgb = np.array(scene_world.COLOR_RGB[color])
        diff = (a != b).any(-1)
        assert ((a[diff] == rgb).all(-1) | (b[diff] == rgb).all(-1)).all()


@pytest.fixture(scope="module")
def tiny():
    from hf_negationclip.modeling import NegationCLIPModel, load_processor, tiny_clip_config

    torch.manual_seed(0)
    return NegationCLIPModel(tiny_clip_config(64)).eval(), load_processor(image_size=64)


def test_encode_texts_batches_by_length_and_returns_input_order(tiny):
    from hf_negationclip.modeling import encode_texts

    model, processor = tiny
    texts = ["a cat", "a big red square next to a small blue circle with no star", "no", "a green star", "x y z w"]
    widths, real_tokenizer = [], processor.tokenizer

    def tokenizer(batch, **kw):
        tok = real_tokenizer(batch, **kw)
        widths.append(tok["input_ids"].shape[1] * len(batch))  # padded tokens of this batch
        return tok

    one_by_one = torch.cat([encode_texts(model, real_tokenizer, [t]) for t in texts])
    widths.clear()
    got = encode_texts(model, tokenizer, texts, batch_size=2)
    assert torch.allclose(got, one_by_one, atol=1e-5)  # input order, whatever the batching
    assert torch.allclose(got.norm(dim=-1), torch.ones(len(texts)))
    sorted_tokens = sum(widths)
    widths.clear()
    encode_texts(model, tokenizer, texts, batch_size=2, sort_by_length=False)
    assert sorted_tokens < sum(widths)  # less padding than batches in input order
    raw = encode_texts(model, real_tokenizer, texts[:2], normalize=False)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(2))
    assert model.training is False and encode_texts(model, real_tokenizer, []).shape == (0, 128)


def test_embedding_cache_encodes_each_key_once_and_score_uses_the_same_encoder(tiny, tmp_path):
    from PIL import Image

    from hf_negationclip.modeling import EmbeddingCache, encode_images

    model, processor = tiny
    paths = []
    for i, colour in enumerate(("red", "blue", "green")):
        paths.append(tmp_path / f"{i}.png")
        Image.new("RGB", (64, 64), colour).save(paths[-1])
    rendered = []

    def render(keys):
        rendered.extend(keys)
        return (Image.open(k).convert("RGB") for k in keys)

    cache = EmbeddingCache(model, processor, batch_size=2)
    cache.add_images(paths[:2], render)
    cache.add_images([paths[1], paths[2], paths[0]], render)
    cache.add_texts(["a red square", "a blue square", "a red square"])
    assert rendered == paths and len(cache.text_rows) == 2
    direct = encode_images(model, processor, [paths[2], paths[0]])
    assert torch.allclose(cache.images([paths[2], paths[0]]), direct, atol=1e-6)
    images = [Image.open(p).convert("RGB") for p in paths]
    texts = ["a red square", "a blue square"]
    probs = model.score(images, texts, processor, batch_size=2)
    expected = (model.logit_scale.exp() * cache.images(paths) @ cache.texts(texts).T).softmax(-1)
    assert torch.allclose(probs, expected, atol=1e-5)


def test_world_probe_accuracies_carry_a_wilson_interval():
    from hf_negationclip.evaluation import Accuracy, wilson_interval

    entry = Accuracy(1.0, 0.5, 100).to_dict()
    assert entry["ci95"] == [round(x, 4) for x in wilson_interval(100, 100)] and entry["ci95"][0] < 0.97
    assert Accuracy(0.25, 0.5, 40).to_dict()["ci95"] == [round(x, 4) for x in wilson_interval(10, 40)]


def test_one_table_writer_for_the_harness_and_the_report():
    from hf_negationclip.evaluation import markdown_table

    results = {
        "models": {
            "a": {"metrics": {"t/accuracy": {"value": 0.5, "chance": 0.5, "n": 4, "ci95": [0.15, 0.85]}}},
            "b": {"metrics": {"t/accuracy": {"value": 1.0, "chance": 0.5, "n": 4}, "t/r@1": {"value": 0.25, "n": 4}}},
        }
    }
    assert markdown_table(results).splitlines() == [
        "| metric | chance | n | a | b |",
        "|---|---|---|---|---|",
        "| t/accuracy | 0.500 | 4 | 0.500 [0.15, 0.85] | 1.000 |",
        "| t/r@1 |  | 4 |  | 0.250 |",
    ]
    rows = markdown_table(results, [("t/r@1", "recall"), ("missing", "never shown")]).splitlines()
    assert rows[2:] == ["| recall |  | 4 |  | 0.250 |"]


# --------------------------------------------------------------------------- caption-side probes


def _words(text):
    return [w.strip(",;:") for w in text.lower().split()]


def _oracle_truth(objects, claims):
    """A candidate is true when every thing it says is there is there and every thing it says is absent is not."""
    return all(any(all(o[k] == v for k, v in attrs) for o in objects) == present for attrs, present in claims)


def _text_scorer_accuracy(items, score):
    """Accuracy of a text-only scorer (highest score wins, a tie is wrong)."""
    right = 0
    for it in items:
        scores = [score(t) for t in it.texts]
        best = max(scores)
        right += scores.count(best) == 1 and scores.index(best) == it.answer
    return right / len(items)


def _cue_scorers():
    from hf_negationclip.corpus import has_negation, negation_cues

    def cue_index(t):  # word index of the first cue, -1 without one
        return next((i for i, w in enumerate(_words(t)) if has_negation(w)), -1)

    def tiebreak(t):  # an arbitrary but fixed order among texts a shortcut cannot tell apart
        return zlib.crc32(t.encode()) / 2**33

    return {
        "more cues": lambda t: len(negation_cues(t)) + tiebreak(t),
        "fewer cues": lambda t: -len(negation_cues(t)) + tiebreak(t),
        "later cue": lambda t: cue_index(t) + tiebreak(t),
        "earlier cue": lambda t: -cue_index(t) + tiebreak(t),
        "longer": lambda t: len(t) + tiebreak(t),
        "shorter": lambda t: -len(t) + tiebreak(t),
    }


@pytest.fixture(scope="module")
def caption_probes(world):
    from hf_negationclip.benchmarks import build_app_compare_probe, build_caption_probes

    probes = build_caption_probes(load_world_split(world, "train"), n_items=200, seed=0)
    probes["app_compare"] = build_app_compare_probe(range(200), seed=0)
    return probes


@pytest.mark.parametrize("family", ["caption_flip", "scope_swap", "present_negation", "app_compare"])
def test_caption_probe_oracle_reads_the_scene_and_positions_are_uniform(caption_probes, family):
    items = caption_probes[family]
    assert len(items) == 200 and all(it.kind == family and len(it.texts) == 2 for it in items)
    # exactly one candidate is true of the scene, and it is the answer: an oracle that reads the objects gets 1.0
    for it in items:
        truth = [_oracle_truth(it.objects, claims) for claims in it.claims]
        assert truth.count(True) == 1 and truth.index(True) == it.answer, it
        for text, claims in zip(it.texts, it.claims):
            for attrs, _ in claims:  # every claim is about a phrase the caption says
                assert " ".join(v for k, v in attrs) in text
    assert 0.4 <= np.mean([it.answer for it in items]) <= 0.6
    assert len({it.texts for it in items}) >= 150  # many phrasings and scenes, not a few repeated
    if family != "app_compare":
        assert len({it.form for it in items}) >= 8
        assert sum(len(it.claims[0]) >= 3 for it in items) >= 20  # three-object captions too


@pytest.mark.parametrize("family", ["caption_flip", "present_negation", "app_compare"])
def test_flip_families_differ_only_in_the_negation(caption_probes, family):
    from hf_negationclip.corpus import has_negation

    for it in caption_probes[family]:
        right, wrong = it.texts[it.answer], it.texts[1 - it.answer]
        negated, affirmative = (right, wrong) if family != "present_negation" else (wrong, right)
        assert has_negation(negated) and not has_negation(affirmative)
        n, a = _words(negated), _words(affirmative)
        assert len(n) == len(a)  # same length in words: length does not tell them apart
        only_n, only_a = Counter(n) - Counter(a), Counter(a) - Counter(n)
        assert 1 <= sum(only_n.values()) <= 2 and sum(only_a.values()) == sum(only_n.values())
        assert has_negation(" ".join(only_n))


def test_scope_swap_candidates_have_the_same_words(caption_probes):
    from hf_negationclip.corpus import has_negation

    for it in caption_probes["scope_swap"]:
        a, b = it.texts
        assert has_negation(a) and has_negation(b)  # the cue is in both
        norm = lambda t: sorted("a" if w == "an" else w for w in _words(t))  # noqa: E731
        assert norm(a) == norm(b) and a != b


def test_text_only_shortcuts_do_not_solve_the_caption_families(caption_probes):
    flip, present, scope = (caption_probes[f] for f in ("caption_flip", "present_negation", "scope_swap"))
    for name, score in _cue_scorers().items():
        # scope swaps: same words and cue, so every text-only scorer is near chance
        assert _text_scorer_accuracy(scope, score) <= 0.5 + 0.1, name
        # flips and present-object negation use the same templates with the truth reversed: a text-only preference
        # (for the negated side, the longer side...) that wins one loses the other, so their mean is near chance
        mean = (_text_scorer_accuracy(flip, score) + _text_scorer_accuracy(present, score)) / 2
        assert mean <= 0.5 + 0.1, name


def test_app_compare_probe_is_the_apps_example():
    from hf_negationclip.apps import app
    from hf_negationclip.benchmarks import build_app_compare_probe, compare_example

    items = build_app_compare_probe(range(5), seed=0)
    for s, it in enumerate(items):
        image, texts = app.scene_example(s)
        assert texts == compare_example(s)[1] and set(it.texts) == set(texts) and it.texts[it.answer] == texts[0]
        assert np.array_equal(np.asarray(image), np.asarray(it.image))


def test_caption_choice_accuracy_scores_the_true_caption(world, tiny_checkpoints):
    from hf_negationclip.benchmarks import build_caption_flip_probe
    from hf_negationclip.evaluation import caption_choice_accuracy
    from hf_negationclip.modeling import NegationCLIPModel, load_processor

    items = build_caption_flip_probe(load_world_split(world, "val"), n_items=12, seed=0)
    model = NegationCLIPModel.from_pretrained(tiny_checkpoints["clip-a"])
    processor = load_processor(tiny_checkpoints["clip-a"])
    acc = caption_choice_accuracy(model, processor, items)
    assert acc.n == 12 and acc.chance == 0.5
    # the same items with the answer moved to the other caption: the two accuracies add up to 1 (ties aside)
    flipped = [type(it)(**{**it.__dict__, "answer": 1 - it.answer}) for it in items]
    assert acc.value + caption_choice_accuracy(model, processor, flipped).value == pytest.approx(1.0)
