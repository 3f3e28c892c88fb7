"""NegationCLIPModel tools: plain-class compatibility, freeze, LoRA, text-encoder export, OpenAI conversion."""

import json
from collections import OrderedDict

import pytest
import torch
from torch import nn
from transformers import AutoModel, CLIPModel, CLIPProcessor, CLIPTextModel, CLIPTokenizer, CLIPVisionModel

from hf_negationclip import NegationCLIPModel, load_processor, tiny_clip_config
from hf_negationclip.apps.cli import main
from hf_negationclip.modeling import convert_openai_checkpoint

IDS = torch.tensor([[49406, 320, 1125, 539, 871, 1929, 49407], [49406, 320, 1929, 49407, 49407, 49407, 49407]])
MASK = torch.tensor([[1] * 7, [1] * 4 + [0] * 3])


def _model(seed=0):
    torch.manual_seed(seed)
    return NegationCLIPModel(tiny_clip_config(64)).eval()


def _logits(model, pixels):
    with torch.no_grad():
        return model(input_ids=IDS, attention_mask=MASK, pixel_values=pixels).logits_per_image


def test_checkpoint_loads_in_every_plain_class(tmp_path):
    model, pixels = _model(), torch.randn(2, 3, 64, 64)
    model.save_pretrained(tmp_path)
    ours = _logits(model, pixels)
    assert torch.equal(ours, _logits(CLIPModel.from_pretrained(tmp_path).eval(), pixels))
    assert torch.equal(ours, _logits(AutoModel.from_pretrained(tmp_path).eval(), pixels))
    with torch.no_grad():
        text = CLIPTextModel.from_pretrained(tmp_path).eval()(input_ids=IDS, attention_mask=MASK).pooler_output
        vision = CLIPVisionModel.from_pretrained(tmp_path).eval()(pixel_values=pixels).pooler_output
        assert torch.equal(text, model.text_model(input_ids=IDS, attention_mask=MASK).pooler_output)
        assert torch.equal(vision, model.vision_model(pixel_values=pixels).pooler_output)


def test_freeze_and_text_encoder_export(tmp_path):
    model = _model().freeze(text=False, vision=True)
    assert (
        not any(p.requires_grad for p in model.vision_model.parameters())
        and not model.visual_projection.weight.requires_grad
    )
    assert all(p.requires_grad for p in model.text_model.parameters()) and model.logit_scale.requires_grad
    model.freeze(text=True)
    assert not any(p.requires_grad for p in model.parameters())
    model.export_text_encoder(tmp_path / "text_encoder")
    text = CLIPTextModel.from_pretrained(tmp_path / "text_encoder").eval()
    tok = CLIPTokenizer.from_pretrained(tmp_path / "text_encoder")
    assert tok("a photo of no dog")["input_ids"] == [49406, 320, 1125, 539, 871, 1929, 49407]
    with torch.no_grad():
        assert torch.equal(
            text(input_ids=IDS, attention_mask=MASK).last_hidden_state,
            model.text_model(input_ids=IDS, attention_mask=MASK).last_hidden_state,
        )


def test_lora_save_load_merge_give_equal_outputs(tmp_path):
    model, pixels = _model(), torch.randn(2, 3, 64, 64)
    model.save_pretrained(tmp_path / "base")
    base = NegationCLIPModel.from_pretrained(tmp_path / "base")
    peft_model = base.add_lora(r=4, lora_alpha=8, towers="both")
    assert {n.split(".")[2] for n, p in peft_model.named_parameters() if p.requires_grad} == {
        "text_model",
        "vision_model",
    }
    with torch.no_grad():  # make the adapters non-zero (lora_B starts at zero)
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    peft_model.eval()
    with torch.no_grad():
        adapted = peft_model(input_ids=IDS, attention_mask=MASK, pixel_values=pixels).logits_per_image
    assert not torch.allclose(adapted, _logits(model, pixels))
    peft_model.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(tmp_path / "base")
    reloaded = NegationCLIPModel.from_pretrained(tmp_path / "adapter").eval()
    assert type(reloaded) is NegationCLIPModel
    assert torch.allclose(_logits(reloaded, pixels), adapted, atol=1e-5)
    merged = base.merge_lora().eval()
    assert not any("lora" in n for n, _ in merged.named_parameters())
    assert torch.allclose(_logits(merged, pixels), adapted, atol=1e-5)
    merged.save_pretrained(tmp_path / "merged")
    assert torch.allclose(_logits(CLIPModel.from_pretrained(tmp_path / "merged").eval(), pixels), adapted, atol=1e-5)


def test_adapter_with_missing_base_is_a_clear_error(tmp_path):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "/no/such/base"}))
    with pytest.raises(FileNotFoundError, match="needs its base model '/no/such/base'"):
        NegationCLIPModel.from_pretrained(tmp_path / "adapter")


# --------------------------------------------------------------------------- a small CLIP in OpenAI's ``clip`` layout


class _QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class _Block(nn.Module):
    def __init__(self, width, heads, causal_len=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1, self.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [("c_fc", nn.Linear(width, 4 * width)), ("gelu", _QuickGELU()), ("c_proj", nn.Linear(4 * width, width))]
            )
        )
        self.mask = None if causal_len is None else torch.full((causal_len, causal_len), float("-inf")).triu_(1)

    def forward(self, x):  # x: L, N, D (OpenAI's layout)
        y, mask = self.ln_1(x), None if self.mask is None else self.mask[: x.shape[0], : x.shape[0]]
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _Transformer(nn.Module):
    def __init__(self, width, layers, heads, causal_len=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[_Block(width, heads, causal_len) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class _Visual(nn.Module):
    def __init__(self, size, patch, width, layers, embed):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, patch, patch, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * 0.1)
        self.positional_embedding = nn.Parameter(torch.randn((size // patch) ** 2 + 1, width) * 0.1)
        self.ln_pre, self.ln_post = nn.LayerNorm(width), nn.LayerNorm(width)
        self.transformer = _Transformer(width, layers, width // 64)
        self.proj = nn.Parameter(torch.randn(width, embed) * width**-0.5)

    def forward(self, x):
        x = self.conv1(x).flatten(2).permute(0, 2, 1)
        x = torch.cat([self.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + self.positional_embedding
        x = self.transformer(self.ln_pre(x).permute(1, 0, 2)).permute(1, 0, 2)
        return self.ln_post(x[:, 0]) @ self.proj


class _OpenAICLIP(nn.Module):
    def __init__(self, size=64, patch=16, width=128, layers=2, embed=64, context=77, vocab=49408):
        super().__init__()
        self.visual = _Visual(size, patch, width, layers, embed)
        self.transformer = _Transformer(width, layers, width // 64, causal_len=context)
        self.token_embedding = nn.Embedding(vocab, width)
        self.positional_embedding = nn.Parameter(torch.randn(context, width) * 0.01)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.randn(width, embed) * width**-0.5)
        self.logit_scale = nn.Parameter(torch.tensor(2.6592))
        for p in self.parameters():  # non-trivial LayerNorm / bias values so a wrong mapping shows
            if p.dim() == 1 and p is not self.logit_scale:
                p.data.normal_(std=0.1).add_(1.0 if p.shape[0] == width else 0.0)

    def encode_text(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding[: ids.shape[1]]
        x = self.ln_final(self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2))
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


def test_convert_openai_round_trip(tmp_path):
    torch.manual_seed(0)
    ref = _OpenAICLIP().eval()
    torch.save({"state_dict": ref.state_dict()}, tmp_path / "negclip.pth")
    assert main(["convert-openai", "--checkpoint", str(tmp_path / "negclip.pth"), "--out", str(tmp_path / "hf")]) == 0
    model = NegationCLIPModel.from_pretrained(tmp_path / "hf").eval()
    pixels, ids = torch.randn(2, 3, 64, 64), IDS.clone()
    ids[1, 4:] = 0  # OpenAI pads with 0; the causal mask keeps EOS blind to it
    with torch.no_grad():
        want_img, want_txt = ref.visual(pixels), ref.encode_text(ids)
        got_img = model.get_image_features(pixel_values=pixels)
        got_txt = model.get_text_features(input_ids=ids, attention_mask=MASK)
    got_img = getattr(got_img, "pooler_output", got_img)
    got_txt = getattr(got_txt, "pooler_output", got_txt)
    assert torch.allclose(got_img, want_img, atol=1e-5) and torch.allclose(got_txt, want_txt, atol=1e-5)
    assert model.logit_scale.item() == pytest.approx(2.6592)
    assert load_processor(tmp_path / "hf").image_processor.crop_size == {"height": 64, "width": 64}


def test_convert_openai_refuses_pickled_code_and_wrong_arch(tmp_path, capsys):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "evil.pth").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(ValueError, match="refusing to load"):
        convert_openai_checkpoint(tmp_path / "evil.pth", tmp_path / "out")
    assert "pwned" not in capsys.readouterr().out
    torch.save(_OpenAICLIP(layers=1).state_dict(), tmp_path / "small.pth")
    assert (
        main(
            [
                "convert-openai",
                "--checkpoint",
                str(tmp_path / "small.pth"),
                "--arch",
                "ViT-B/32",
                "--out",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )
    assert "does not match ViT-B/32" in capsys.readouterr().err


def _convert_error(tmp_path, capsys, state_or_object, name="ckpt.pth") -> str:
    """Run ``convert-openai`` on a saved object; return its stderr, which must be ONE ``error:`` line (exit 2)."""
    path = tmp_path / name
    if isinstance(state_or_object, (str, bytes)):
        path.write_bytes(state_or_object if isinstance(state_or_object, bytes) else state_or_object.encode())
    else:
        torch.save(state_or_object, path)
    capsys.readouterr()
    with _no_warnings():
        code = main(["convert-openai", "--checkpoint", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "\x1b" not in err, err
    assert "Traceback" not in err and not (tmp_path / "out" / "model.safetensors").exists()
    return lines[0]


class _no_warnings:
    """Fail when anything warns (torch's UserWarning before its own error, say)."""

    def __enter__(self):
        import warnings

        self._catcher = warnings.catch_warnings(record=True)
        self._seen = self._catcher.__enter__()
        warnings.simplefilter("always")
        return self

    def __exit__(self, *exc):
        self._catcher.__exit__(*exc)
        assert [str(w.message) for w in self._seen] == []
        return False


def test_convert_openai_resnet_state_dict_says_resnet(tmp_path, capsys):
    state = {k: v for k, v in _OpenAICLIP().state_dict().items() if not k.startswith("visual.")}
    state.update(
        {  # a ResNet CLIP's vision tower: a conv stem (conv1, like a ViT's patch embedding), stages, attention pool
            "visual.conv1.weight": torch.zeros(32, 3, 3, 3),
            "visual.layer1.0.conv1.weight": torch.zeros(32, 32, 1, 1),
            "visual.attnpool.positional_embedding": torch.zeros(50, 128),
        }
    )
    line = _convert_error(tmp_path, capsys, state)
    assert "ResNet" in line and "only ViT" in line and "ckpt.pth" in line


def test_convert_openai_missing_key_names_what_is_expected(tmp_path, capsys):
    state = _OpenAICLIP().state_dict()
    del state["ln_final.weight"]
    line = _convert_error(tmp_path, capsys, state)
    assert "lacks 'ln_final.weight'" in line and "expected an OpenAI-clip ViT state dict" in line
    state = _OpenAICLIP().state_dict()
    del state["transformer.resblocks.1.mlp.c_fc.bias"]
    assert "lacks 'transformer.resblocks.1.mlp.c_fc.bias'" in _convert_error(tmp_path, capsys, state)
    line = _convert_error(tmp_path, capsys, {"fc.weight": torch.zeros(2, 2)})
    assert "not an OpenAI-clip state dict" in line and "fc.weight" in line
    line = _convert_error(tmp_path, capsys, NegationCLIPModel(tiny_clip_config(64)).state_dict())
    assert "transformers CLIPModel state dict" in line and "needs no conversion" in line


def test_convert_openai_inconsistent_shapes_is_one_line_not_a_traceback(tmp_path, capsys):
    state = _OpenAICLIP().state_dict()
    state["token_embedding.weight"] = torch.zeros(49408, 96)  # the text width is 128 everywhere else
    line = _convert_error(tmp_path, capsys, state)
    assert "shapes disagree" in line and "token_embedding" in line and "[49408, 96]" in line


def test_convert_openai_pickled_model_and_torchscript_are_plain_lines(tmp_path, capsys):
    line = _convert_error(tmp_path, capsys, _OpenAICLIP())  # torch.save(model): pickled classes, not a state dict
    assert "pickled Python objects" in line and "torch.save(model.state_dict()" in line and "_OpenAICLIP" in line
    torch.jit.script(nn.Linear(2, 2)).save(tmp_path / "scripted.pt")
    line = _convert_error(tmp_path, capsys, (tmp_path / "scripted.pt").read_bytes(), "ts.pt")
    assert "TorchScript archive" in line and "jit=False" in line
    line = _convert_error(tmp_path, capsys, "not a checkpoint at all", "text.pth")
    assert "refusing to load" in line and "weights-only" in line


def test_debug_flag_and_env_show_the_traceback_behind_the_error(tmp_path, capsys, monkeypatch):
    state = _OpenAICLIP().state_dict()
    del state["ln_final.weight"]
    torch.save(state, tmp_path / "bad.pth")
    args = ["convert-openai", "--checkpoint", str(tmp_path / "bad.pth"), "--out", str(tmp_path / "out")]
    monkeypatch.delenv("HF_NEGATIONCLIP_DEBUG", raising=False)
    assert main(args) == 2
    plain = capsys.readouterr().err
    assert "Traceback" not in plain and plain.count("\n") == 1
    assert main([*args, "--debug"]) == 2
    shown = capsys.readouterr().err
    assert shown.startswith("Traceback (most recent call last):") and "convert_openai.py" in shown
    assert shown.rstrip().splitlines()[-1] == plain.strip()  # the same one line, after the traceback
    monkeypatch.setenv("HF_NEGATIONCLIP_DEBUG", "1")
    assert main(args) == 2 and "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("HF_NEGATIONCLIP_DEBUG", "0")
    assert main(args) == 2 and "Traceback" not in capsys.readouterr().err


# --------------------------------------------------------------------------- text clean-up as OpenAI's tokenizer does it

CLEANED = [  # (raw text, what OpenAI's tokenizer reads after ftfy + HTML unescaping + whitespace collapse)
    ("there isn’t a cat", "there isn't a cat"),
    ("a dog &amp; a cat", "a dog & a cat"),
    ("a dog &amp;amp; a cat", "a dog & a cat"),
    ("  “no”   dogs\n", '"no" dogs'),
]


def test_load_processor_cleans_text_like_openai_and_saves_plain_clip_files(tmp_path):
    shipped = load_processor()
    shipped.save_pretrained(tmp_path / "ours")
    CLIPProcessor.from_pretrained(tmp_path / "ours").save_pretrained(tmp_path / "plain")  # a folder of plain CLIP code
    assert json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())["tokenizer_class"] == "CLIPTokenizer"
    raw_tokenizer = CLIPTokenizer.from_pretrained(tmp_path / "ours")  # transformers' own class: no clean-up
    for processor in (shipped, load_processor(tmp_path / "ours"), load_processor(tmp_path / "plain")):
        tok = processor.tokenizer
        for raw, clean in CLEANED:
            assert raw_tokenizer(raw)["input_ids"] != raw_tokenizer(clean)["input_ids"]  # the case matters
            assert tok(raw)["input_ids"] == tok(clean)["input_ids"] == raw_tokenizer(clean)["input_ids"]
            assert tok.encode(raw) == raw_tokenizer.encode(clean) and tok.tokenize(raw) == raw_tokenizer.tokenize(clean)
        batch = processor(text=[raw for raw, _ in CLEANED], padding=True, return_tensors="pt")["input_ids"]
        want = raw_tokenizer([clean for _, clean in CLEANED], padding=True, return_tensors="pt")["input_ids"]
        assert torch.equal(batch, want)
        assert tok("isn’t")["input_ids"] == [49406, 2923, 713, 49407]  # isn + 't, as "isn't"


def test_negation_cues_count_curly_apostrophes_and_entities():
    from hf_negationclip.corpus import has_negation, negation_cues, negation_position

    assert negation_cues("there isn’t a cat") == negation_cues("there isn't a cat") == ["isn't"]
    assert has_negation("the dog doesn’t wear a hat") and negation_position("a cat that isn’t red") == "end"
    assert negation_cues("a dog &amp; no cat") == ["no"] and not has_negation("a dog &amp; a cat")
