"""Downstream referring segmentation: CLIPSeg on our towers, decoder training, text-tower swaps, bad input."""

import json
import shutil

import numpy as np
import pytest
import torch
from transformers import (
    CLIPModel,
    CLIPSegConfig,
    CLIPSegForImageSegmentation,
    CLIPSegProcessor,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPVisionModel,
    CLIPVisionModelWithProjection,
)

from hf_negationclip import world as scene_world
from hf_negationclip.apps.cli import main
from hf_negationclip.downstream import (
    FeatureCache,
    SegmentConfig,
    clipseg_from_clip,
    extract_layers_for,
    load_clipseg,
    load_referring_samples,
    run_segment,
    segmentation_processor,
    summarize,
    swap_text_tower,
    text_blind_ious,
    train_decoder,
    vision_activations,
)
from hf_negationclip.io import FormatError
from hf_negationclip.modeling import NegationCLIPModel, arch_clip_config, load_processor, tiny_clip_config

IDS = torch.tensor([[49406, 320, 1125, 539, 871, 1929, 49407], [49406, 320, 736, 2445, 49407, 49407, 49407]])
MASK = torch.tensor([[1, 1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 0, 0]])


def _features(out):
    return getattr(out, "pooler_output", out)


@pytest.fixture(scope="module")
def seg_world(tmp_path_factory):
    """60 images, half of them in val so the val split holds negated expressions too."""
    out = tmp_path_factory.mktemp("seg_world")
    scene_world.write_world(out, 60, seed=5, splits={"train": 0.5, "val": 0.5}, show_progress=False)
    return out


def _save_tiny(folder, seed, projection_dim=None):
    torch.manual_seed(seed)
    config = tiny_clip_config()
    if projection_dim is not None:
        config.projection_dim = config.text_config.projection_dim = config.vision_config.projection_dim = projection_dim
    NegationCLIPModel(config).save_pretrained(folder)
    load_processor().save_pretrained(folder)
    return folder


def test_tower_classes_load_tiny_and_converted_configs(tmp_path):
    """projection_dim sits in both sub-configs: the *WithProjection towers load every checkpoint, same features."""
    ckpt = _save_tiny(tmp_path / "tiny", 0)
    assert json.loads((ckpt / "config.json").read_text())["text_config"]["projection_dim"] == 128
    clip = CLIPModel.from_pretrained(ckpt).eval()
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        want_txt = _features(clip.get_text_features(input_ids=IDS, attention_mask=MASK))
        want_img = _features(clip.get_image_features(pixel_values=pixels))
        text = CLIPTextModelWithProjection.from_pretrained(ckpt).eval()
        vision = CLIPVisionModelWithProjection.from_pretrained(ckpt).eval()
        assert torch.allclose(text(input_ids=IDS, attention_mask=MASK).text_embeds, want_txt, atol=1e-6)
        assert torch.allclose(vision(pixel_values=pixels).image_embeds, want_img, atol=1e-6)
        plain_text = CLIPTextModel.from_pretrained(ckpt).eval()(input_ids=IDS, attention_mask=MASK).pooler_output
        plain_img = CLIPVisionModel.from_pretrained(ckpt).eval()(pixel_values=pixels).pooler_output
    assert torch.allclose(plain_text @ clip.text_projection.weight.T, want_txt, atol=1e-6)
    assert torch.allclose(plain_img @ clip.visual_projection.weight.T, want_img, atol=1e-6)

    # a converted OpenAI architecture with a non-default embedding width (ViT-L/14 has 768): the config that
    # openai_clip_config builds from a checkpoint's shapes (vision width, layers, patch, image size, text width,
    # layers, embed dim)
    embed = 96
    config = arch_clip_config((64, 1, 16, 32, 64, 1, embed))
    assert config.text_config.projection_dim == config.vision_config.projection_dim == embed
    CLIPModel(config).save_pretrained(tmp_path / "converted")
    assert CLIPTextModelWithProjection.from_pretrained(tmp_path / "converted").text_projection.out_features == embed
    assert CLIPVisionModelWithProjection.from_pretrained(tmp_path / "converted").visual_projection.out_features == embed


def test_extract_layers_follow_depth():
    assert extract_layers_for(12) == [3, 6, 9]  # CLIPSeg's own choice for ViT-B
    assert extract_layers_for(3) == [0, 1, 2]
    assert extract_layers_for(24) == [6, 12, 18]
    assert extract_layers_for(2) == [0, 1]
    with pytest.raises(ValueError, match="do not fit a 3-layer"):
        clipseg_from_clip(NegationCLIPModel(tiny_clip_config()), extract_layers=[3, 6, 9])


def test_clipseg_from_our_checkpoint_is_exact(tmp_path):
    torch.manual_seed(1)
    clip = NegationCLIPModel(tiny_clip_config()).eval()
    seg = clipseg_from_clip(clip).eval()
    assert seg.config.extract_layers == [0, 1, 2]
    assert not any(p.requires_grad for p in seg.clip.parameters())
    assert all(p.requires_grad for p in seg.decoder.parameters())
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        assert torch.equal(
            _features(seg.clip.get_text_features(input_ids=IDS, attention_mask=MASK)),
            _features(clip.get_text_features(input_ids=IDS, attention_mask=MASK)),
        )
        assert torch.equal(
            _features(seg.clip.get_image_features(pixel_values=pixels)),
            _features(clip.get_image_features(pixel_values=pixels)),
        )
        full = seg(input_ids=IDS, attention_mask=MASK, pixel_values=pixels).logits
        cond = _features(seg.clip.get_text_features(input_ids=IDS, attention_mask=MASK))
        cached = seg.decoder(vision_activations(seg, pixels), cond).logits  # the path training and scoring take
    assert full.shape == (2, 96, 96) and torch.allclose(full, cached, atol=1e-5)
    seg.save_pretrained(tmp_path / "seg")
    with torch.no_grad():
        again = CLIPSegForImageSegmentation.from_pretrained(tmp_path / "seg").eval()(
            input_ids=IDS, attention_mask=MASK, pixel_values=pixels
        )
    assert torch.allclose(again.logits, full, atol=1e-6)


def test_train_decoder_swap_and_cache(tmp_path, seg_world):
    a, b = _save_tiny(tmp_path / "base", 2), _save_tiny(tmp_path / "other", 3)
    cfg = SegmentConfig(
        model=str(a),
        swap=[f"other={b}"],
        world_dir=str(seg_world),
        output_dir=str(tmp_path / "out"),
        train_steps=60,
        batch_size=16,
        learning_rate=3e-3,
        decoder_intermediate_size=128,
        bootstrap=200,
        threads=1,  # two threads on a shared 2-core machine spin far slower than one
        show_progress=False,
    )
    results = run_segment(cfg)
    log = results["train_log"]
    assert log[-1]["loss"] < 0.7 * log[0]["loss"], log
    assert results["train_counts"]["negated"] > 0 and results["eval_counts"]["negated"] > 0
    assert set(results["encoders"]) == {"base", "other"}
    for entry in results["encoders"].values():
        for kind in ("affirmative", "negated"):
            r = entry[kind]
            assert r["n"] > 0 and r["miou_ci95"][0] <= r["miou"] <= r["miou_ci95"][1]
            assert r["precision@0.5_ci95"][0] <= r["precision@0.5"] <= r["precision@0.5_ci95"][1]
    assert results["encoders"]["base"]["trained_with"] and "negated_delta" in results["encoders"]["other"]
    # pointing: against same-category rivals only (every negated expression of the world has one), chance from them
    for kind in ("affirmative", "negated"):
        point = results["encoders"]["base"][kind]["pointing"]
        assert 0 < point["n"] <= results["encoders"]["base"][kind]["n"] and 0 < point["chance"] <= 0.5
        assert point["ci95"][0] <= point["value"] <= point["ci95"][1]
    assert results["encoders"]["base"]["negated"]["pointing"]["n"] == results["encoders"]["base"]["negated"]["n"]
    # the text-blind reference (every object marked) is below 1 and equal for every encoder by construction
    blind = results["text_blind"]
    assert 0 < blind["affirmative"]["miou"] < 1 and 0 < blind["negated"]["miou"] < 1
    # training only saw affirmative expressions; evaluation splits them by corpus.has_negation
    train, _, _ = load_referring_samples(seg_world, seg_world / "images", "train", negated=False)
    assert train and not any(s.negated for s in train)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| base (trained with) |" in md and "| other |" in md and "text-blind reference" in md
    # a rerun reuses the trained segmenter and the scored IoUs
    stamp = (tmp_path / "out" / "segmenter" / "model.safetensors").stat().st_mtime_ns
    again = run_segment(cfg)
    assert (tmp_path / "out" / "segmenter" / "model.safetensors").stat().st_mtime_ns == stamp
    assert again["encoders"]["other"]["negated"] == results["encoders"]["other"]["negated"]


def test_text_blind_iou_is_the_targets_share_of_every_object(seg_world):
    samples, masks, _ = load_referring_samples(seg_world, seg_world / "images", "val")
    blind = text_blind_ious(samples, masks)
    for s, value in list(zip(samples, blind))[:20]:
        union = np.zeros_like(masks.mask(s.ann_id))
        for a in masks.coco.getAnnIds(imgIds=[s.image_id]):
            union |= masks.mask(a)
        assert value == pytest.approx(masks.mask(s.ann_id).sum() / union.sum())
    rivals = [len(masks.rivals(s.ann_id)) for s in samples if s.negated]
    assert rivals and min(rivals) >= 1  # a negated expression singles its object out among ones of its category


def test_pointing_summary_counts_only_items_with_rivals():
    s = summarize(
        np.array([0.1, 0.2, 0.3, 0.4]), 200, pointing=np.array([1.0, 0.0, np.nan, 1.0]), rivals=np.array([1, 3, 0, 1])
    )
    assert s["pointing"]["n"] == 3 and s["pointing"]["value"] == pytest.approx(2 / 3)
    assert s["pointing"]["chance"] == pytest.approx((0.5 + 0.25 + 0.5) / 3)


def test_summary_intervals():
    ious = np.array([0.0, 0.4, 0.6, 1.0])
    s = summarize(ious, resamples=500)
    assert s["miou"] == pytest.approx(0.5) and s["precision@0.5"] == pytest.approx(0.5)
    lo, hi = s["precision@0.5_ci95"]
    assert 0.1 < lo < 0.5 < hi < 0.9  # Wilson interval of 2/4


def test_wrong_width_text_tower_is_one_line_error(tmp_path, seg_world, capsys):
    a, narrow = _save_tiny(tmp_path / "base", 2), _save_tiny(tmp_path / "narrow", 4, projection_dim=64)
    seg = clipseg_from_clip(str(a))
    with pytest.raises(ValueError, match="64-wide features but the segmenter's decoder takes 128"):
        swap_text_tower(seg, str(narrow))
    argv = ["segment", "--model", str(a), "--swap", str(narrow), "--world_dir", str(seg_world)]
    capsys.readouterr()  # drop the progress bars of saving the checkpoints
    assert main([*argv, "--output_dir", str(tmp_path / "out"), "--show_progress", "false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # transformers' own loading bars may precede it
    assert err[-1].startswith("error: text tower of") and "do not fit" in err[-1]
    assert sum(line.startswith("error:") for line in err) == 1
    assert not (tmp_path / "out" / "segmenter").exists()  # refused before any training


def test_missing_mask_file_or_mask_is_one_line_error(tmp_path, seg_world, capsys):
    a = _save_tiny(tmp_path / "base", 2)
    broken = tmp_path / "world"
    shutil.copytree(seg_world / "refcocog", broken / "refcocog")
    (broken / "images").symlink_to(seg_world / "images")
    (broken / "refcocog" / "instances.json").unlink()
    argv = ["segment", "--model", str(a), "--world_dir", str(broken), "--output_dir", str(tmp_path / "out")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: RefCOCOg file missing") and "instances.json" in err[-1]
    assert sum(line.startswith("error:") for line in err) == 1

    inst = json.loads((seg_world / "refcocog" / "instances.json").read_text())
    del inst["annotations"][0]["segmentation"]
    (broken / "refcocog" / "instances.json").write_text(json.dumps(inst))
    split = next(
        r["split"]
        for r in load_referring_samples.__globals__["load_refcocog"](seg_world).refs
        if r["ann_id"] == inst["annotations"][0]["id"]
    )
    with pytest.raises(FormatError, match="has no segmentation mask"):
        load_referring_samples(broken, broken / "images", split)


def test_real_clipseg_folder_gets_our_text_tower(tmp_path, seg_world, capsys):
    """A (tiny random) real-architecture CLIPSeg: its text tower swapped for ours, features equal to our model's."""
    text = dict(
        vocab_size=49408, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )  # fmt: skip
    vision = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2)
    torch.manual_seed(5)
    real = CLIPSegForImageSegmentation(
        CLIPSegConfig(
            text_config=text,
            vision_config={**vision, "image_size": 64, "patch_size": 16},
            projection_dim=128,
            extract_layers=[1, 2, 3],
            use_complex_transposed_convolution=True,
        )
    )
    folder = tmp_path / "clipseg"
    real.save_pretrained(folder)
    processor = segmentation_processor(None, 64)
    assert isinstance(processor, CLIPSegProcessor)
    processor.save_pretrained(folder)
    donor = _save_tiny(tmp_path / "ours", 6)

    seg, proc = load_clipseg(str(folder))
    decoder_before = {k: v.clone() for k, v in seg.decoder.state_dict().items()}
    swap_text_tower(seg, str(donor))
    ours = CLIPModel.from_pretrained(donor).eval()
    with torch.no_grad():
        got = _features(seg.eval().clip.get_text_features(input_ids=IDS, attention_mask=MASK))
        want = _features(ours.get_text_features(input_ids=IDS, attention_mask=MASK))
        logits = seg(input_ids=IDS, attention_mask=MASK, pixel_values=torch.randn(2, 3, 64, 64)).logits
    assert torch.allclose(got, want, atol=1e-6)
    assert logits.shape == (2, 64, 64)
    assert all(torch.equal(v, seg.decoder.state_dict()[k]) for k, v in decoder_before.items())

    argv = ["segment", "--clipseg", str(folder), "--train_steps", "0", "--swap", str(donor)]
    argv += ["--world_dir", str(seg_world), "--output_dir", str(tmp_path / "out"), "--bootstrap", "0"]
    assert main([*argv, "--max_eval", "20", "--show_progress", "false"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert set(results["encoders"]) == {"clipseg", "ours"} and results["train_log"] == []
    assert 0 < results["encoders"]["ours"]["negated"]["n"] <= 20
    capsys.readouterr()
    with pytest.raises(OSError, match="not a CLIPSeg folder"):
        load_clipseg(str(tmp_path))


def _text_share(seg, cache, samples):
    """How much the expression moves the decoder's logits on one image: the mean absolute change between two
    objects' expressions over the logits' spread across pixels (about 0 when the text is ignored)."""
    by_image: dict[int, dict[int, object]] = {}
    for s in samples:
        by_image.setdefault(s.image_id, {}).setdefault(s.ann_id, s)
    pairs = [list(d.values())[:2] for d in by_image.values() if len(d) >= 2]
    first, second = [p[0] for p in pairs], [p[1] for p in pairs]
    acts = cache.activations([s.image_path for s in first])
    with torch.no_grad():
        a = seg.decoder(acts, cache.text_features([s.sentence for s in first], "t")).logits
        b = seg.decoder(acts, cache.text_features([s.sentence for s in second], "t")).logits
    return float((a - b).abs().mean() / a.std())


def test_the_decoder_reads_its_text_when_the_text_modulates_the_last_block(seg_world):
    """Regression: with CLIPSeg's FiLM at block 0 the later raw vision reductions drown the text and the decoder
    gives nearly the same logits whatever the expression; at the last block (our default) the expression moves them."""
    train, masks, _ = load_referring_samples(seg_world, seg_world / "images", "train", negated=False)
    share = {}
    for layer in (None, 0):
        torch.manual_seed(0)
        seg = clipseg_from_clip(
            NegationCLIPModel(tiny_clip_config()), decoder_intermediate_size=128, conditional_layer=layer
        )
        assert seg.config.conditional_layer == (2 if layer is None else 0)
        cache = FeatureCache(seg, segmentation_processor(None, 96))
        train_decoder(
            seg, cache, train, masks, steps=150, batch_size=16, learning_rate=1e-2, show_progress=False, tag="t"
        )
        share[layer] = _text_share(seg, cache, train)
    assert share[None] > 0.01 and share[0] < 1e-3 * share[None], share  # measured: 0.04-0.13 against ~1e-6


def test_a_corrupt_image_is_a_one_line_error_naming_it(tmp_path, seg_world, capsys):
    a = _save_tiny(tmp_path / "base", 2)
    broken = tmp_path / "world"
    shutil.copytree(seg_world / "refcocog", broken / "refcocog")
    shutil.copytree(seg_world / "images", broken / "images")
    for image in (broken / "images" / "train").glob("*.jpg"):
        image.write_bytes(b"not a jpeg")
    argv = ["segment", "--model", str(a), "--world_dir", str(broken), "--output_dir", str(tmp_path / "out")]
    capsys.readouterr()
    assert main([*argv, "--train_steps", "2", "--batch_size", "4", "--show_progress", "false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: cannot read image") and "/images/train/" in err[-1]
    assert sum(line.startswith("error:") for line in err) == 1


def test_training_options_out_of_range_are_clear_errors(seg_world):
    train, masks, _ = load_referring_samples(seg_world, seg_world / "images", "train", negated=False)
    seg = clipseg_from_clip(NegationCLIPModel(tiny_clip_config()), decoder_intermediate_size=64)
    cache = FeatureCache(seg, segmentation_processor(None, 96))
    with pytest.raises(ValueError, match="text_noise must be >= 0"):
        train_decoder(seg, cache, train, masks, steps=1, text_noise=-1.0, show_progress=False)
    with pytest.raises(ValueError, match="visual_prompts is a share"):
        train_decoder(seg, cache, train, masks, steps=1, visual_prompts=1.5, show_progress=False)
    with pytest.raises(ValueError, match="conditional_layer 3 does not fit a 3-block decoder"):
        clipseg_from_clip(NegationCLIPModel(tiny_clip_config()), conditional_layer=3)
