import os
import pickle

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
