from transformers import CLIPProcessor, CLIPTokenizer

from hf_negationclip import PRESETS, get_preset, load_processor, load_tokenizer, tiny_clip_config
from hf_negationclip.modeling import BOS_TOKEN_ID, EOS_TOKEN_ID


def test_real_openai_ids():
    tok = load_tokenizer()
    assert len(tok) == 49408
    assert tok("a photo of no dog").input_ids == [49406, 320, 1125, 539, 871, 1929, 49407]
    assert (tok.bos_token_id, tok.eos_token_id) == (BOS_TOKEN_ID, EOS_TOKEN_ID)


def test_batch_padding_and_truncation_at_77():
    tok = load_tokenizer()
    long = " ".join(["red circle"] * 100)
    batch = tok(["no dog", long], padding=True, truncation=True, return_tensors="pt")
    assert batch.input_ids.shape == (2, 77)
    assert batch.input_ids[1, -1].item() == EOS_TOKEN_ID  # truncation keeps the EOS that pooling reads
    assert batch.attention_mask[0].sum().item() == 4
    assert batch.input_ids[0, 4:].eq(tok.pad_token_id).all()
    padded = tok(["no dog"], padding="max_length", return_tensors="pt")
    assert padded.input_ids.shape == (1, 77)


def test_default_processor_is_offline_and_sized_for_tiny(tmp_path):
    proc = load_processor()
    assert isinstance(proc, CLIPProcessor)
    assert proc.image_processor.crop_size == {"height": PRESETS["tiny"].image_size, "width": PRESETS["tiny"].image_size}
    proc.save_pretrained(tmp_path)
    again = load_processor(tmp_path)
    assert again.tokenizer("a photo of no dog").input_ids == [49406, 320, 1125, 539, 871, 1929, 49407]
    assert isinstance(CLIPTokenizer.from_pretrained(tmp_path), CLIPTokenizer)


def test_tiny_config_keeps_real_token_ids():
    cfg = tiny_clip_config()
    assert cfg.text_config.bos_token_id == BOS_TOKEN_ID and cfg.text_config.eos_token_id == EOS_TOKEN_ID
    assert cfg.text_config.vocab_size == 49408 and cfg.text_config.max_position_embeddings == 77


def test_presets_and_the_paper_recipe():
    from hf_negationclip.training import RECIPES

    b32 = get_preset("clip-vit-base-patch32")
    assert b32.checkpoint == "openai/clip-vit-base-patch32"
    assert get_preset("openai/clip-vit-large-patch14-336").image_size == 336
    paper = RECIPES["paper"].options()  # the recipe table, not the preset, says how to fine-tune
    assert (paper["learning_rate"], paper["batch_size"], paper["epochs"], paper["train"]) == (1e-6, 512, 15, "text")
