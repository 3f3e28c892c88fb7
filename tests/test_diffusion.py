"""NegationCLIP text towers inside diffusers: export layout, pipeline swap, the world detector, t2i-train/eval."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from hf_negationclip import world as scene_world
from hf_negationclip.apps.cli import main
from hf_negationclip.downstream import diffusion
from hf_negationclip.modeling import NegationCLIPModel, load_processor, tiny_clip_config


@pytest.fixture(scope="module")
def clip_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("clip")
    NegationCLIPModel(tiny_clip_config()).save_pretrained(folder)
    load_processor().save_pretrained(folder)
    return folder


def _tiny_pipeline(text_encoder, tokenizer, cross_attention_dim=128):
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=16,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDIMScheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def _generate(pipe):
    pipe.set_progress_bar_config(disable=True)
    out = pipe("a red square with no blue circle", num_inference_steps=2, height=16, width=16, output_type="np")
    return out.images


def test_exported_text_encoder_and_tokenizer_load_into_a_stable_diffusion_pipeline(clip_ckpt, tmp_path):
    from transformers import CLIPTextModel, CLIPTokenizer

    model = NegationCLIPModel.from_pretrained(clip_ckpt)
    model.export_text_encoder(tmp_path / "export")
    assert {"vocab.json", "merges.txt"} <= {p.name for p in (tmp_path / "export" / "tokenizer").iterdir()}
    (tmp_path / "export" / "tokenizer" / "tokenizer.json").unlink()  # the slow files alone must be enough
    text = CLIPTextModel.from_pretrained(tmp_path / "export", subfolder="text_encoder")
    tok = CLIPTokenizer.from_pretrained(tmp_path / "export", subfolder="tokenizer")
    assert tok("a photo of no dog")["input_ids"] == [49406, 320, 1125, 539, 871, 1929, 49407]
    assert len(tok) == 49408 and tok.model_max_length == 77
    pipe = _tiny_pipeline(text, tok)
    ids = tok(["a red square with no blue circle"], padding="max_length", return_tensors="pt").input_ids
    embeds, _ = pipe.encode_prompt("a red square with no blue circle", "cpu", 1, False)
    with torch.no_grad():
        assert torch.equal(embeds, model.text_model(input_ids=ids).last_hidden_state)
    images = _generate(pipe)
    assert images.shape == (1, 16, 16, 3) and np.isfinite(images).all()


def test_swap_text_encoder_writes_a_loadable_pipeline_folder(clip_ckpt, tmp_path, capsys):
    from diffusers import StableDiffusionPipeline
    from transformers import CLIPTextConfig, CLIPTextModel

    from hf_negationclip.modeling import load_tokenizer

    torch.manual_seed(5)
    other = CLIPTextModel(CLIPTextConfig(**tiny_clip_config().text_config.to_dict()))
    base = _tiny_pipeline(other, load_tokenizer())
    base.save_pretrained(tmp_path / "base")
    code = main(
        [
            "swap-text-encoder",
            "--pipeline",
            str(tmp_path / "base"),
            "--text_encoder",
            str(clip_ckpt),
            "--out",
            str(tmp_path / "swapped"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "swapped", safety_checker=None)
    ours = NegationCLIPModel.from_pretrained(clip_ckpt).text_model.state_dict()
    swapped = pipe.text_encoder.state_dict()
    assert all(torch.equal(swapped[k], ours[k]) for k in ours)
    key = next(k for k in ours if k.endswith("token_embedding.weight"))
    assert not torch.equal(base.text_encoder.state_dict()[key], ours[key])  # the swap did change the weights
    assert len(pipe.tokenizer) == 49408
    assert torch.equal(pipe.unet.conv_in.weight, base.unet.conv_in.weight)  # the other components are the base's
    assert _generate(pipe).shape == (1, 16, 16, 3)


def test_swap_errors_are_one_line(clip_ckpt, tmp_path, capsys):
    from transformers import CLIPTextConfig, CLIPTextModel

    from hf_negationclip.modeling import load_tokenizer

    cfg = tiny_clip_config().text_config.to_dict()
    narrow = _tiny_pipeline(CLIPTextModel(CLIPTextConfig(**{**cfg, "hidden_size": 64})), load_tokenizer(), 64)
    narrow.save_pretrained(tmp_path / "narrow")
    capsys.readouterr()  # drop the progress bars of saving the fixture
    args = ["swap-text-encoder", "--text_encoder", str(clip_ckpt), "--out"]
    assert main([*args, str(tmp_path / "o1"), "--pipeline", str(tmp_path / "narrow")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "width 128 does not fit the UNet's cross_attention_dim 64" in err
    assert not (tmp_path / "o1").exists()
    (tmp_path / "no-unet").mkdir()
    (tmp_path / "no-unet" / "model_index.json").write_text("{}")
    assert main([*args, str(tmp_path / "o2"), "--pipeline", str(tmp_path / "no-unet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "has no unet/config.json" in err


def _small(img: Image.Image) -> np.ndarray:
    return np.asarray(img.resize((32, 32), Image.BOX))


def test_world_colour_detector_is_exact_on_rendered_images_and_blank_scores_nothing(world):
    rng = np.random.default_rng(0)
    for seed in range(40):
        objects = scene_world.sample_scene(rng)
        found = diffusion.detect_colors(_small(scene_world.render_scene(objects, seed=seed)))
        assert {c for c, present in found.items() if present} == {o["color"] for o in objects}
    blank = _small(scene_world.render_scene([], seed=1))
    assert not any(diffusion.detect_colors(blank).values())
    report = diffusion.validate_detector(world, "val")
    assert report["colour_decision_accuracy"] == 1.0 and report["n_images"] > 10
    items = diffusion.world_prompts(6, seed=1)
    scores = diffusion.score_world_images(items, np.stack([blank] * 6), np.stack([blank] * 6))
    assert scores["negated_prompt/negated_absent"]["value"] == 1.0  # blank: the negated thing is absent ...
    assert scores["negated_prompt/negation_score"]["value"] == 0.0  # ... but nothing asked for is there
    painted = [_small(scene_world.render_scene([_obj(it["c1"], it["s1"])], seed=2)) for it in items]
    scores = diffusion.score_world_images(items, np.stack(painted))
    assert scores["negated_prompt/negation_score"]["value"] == 1.0


def _obj(color, shape):
    return {"shape": shape, "color": color, "size": "large", "x": 64.0, "y": 64.0}


def test_t2i_train_loss_falls_and_eval_swaps_encoders(world, clip_ckpt, tiny_checkpoints, tmp_path, capsys):
    cfg = diffusion.T2ITrainConfig(
        world_dir=str(world),
        text_encoder=str(clip_ckpt),
        output_dir=str(tmp_path / "t2i"),
        channels="16,32",
        batch_size=8,
        max_steps=12,
        learning_rate=1e-3,
        max_images=64,
    )
    result = diffusion.train_t2i(cfg)
    losses = result["losses"]
    assert len(losses) == 12 and np.isfinite(losses).all()
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])
    code = main(
        [
            "t2i-eval",
            "--model_dir",
            str(tmp_path / "t2i"),
            "--text_encoder",
            f"base={clip_ckpt}",
            "--text_encoder",
            f"other={tiny_checkpoints['clip-b']}",
            "--n",
            "4",
            "--steps",
            "2",
            "--guidance",
            "1",
            "3",
            "--threads",
            "1",
            "--output_dir",
            str(tmp_path / "eval"),
        ]
    )
    assert code == 0, capsys.readouterr().err
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert [(r["encoder"], r["guidance"]) for r in res["rows"]] == [
        ("base", 1),
        ("base", 3),
        ("other", 1),
        ("other", 3),
    ]
    assert res["rows"][0]["metrics"]["negated_prompt/negation_score"]["n"] == 4
    assert res["detector"]["colour_decision_accuracy"] == 1.0
    assert "| base | 1 |" in (tmp_path / "eval" / "results.md").read_text()
