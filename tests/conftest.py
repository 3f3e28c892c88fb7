import pytest

from hf_negationclip import synthetic


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A small scene world written once for the whole session (200 images)."""
    out = tmp_path_factory.mktemp("world")
    synthetic.write_world(out, 200, seed=3, show_progress=False)
    return out


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory):
    """Two tiny random CLIP checkpoints (different seeds) saved with their processor: {label: folder}."""
    import torch

    from hf_negationclip.modeling import NegationCLIPModel, load_processor, tiny_clip_config

    out = {}
    for label, seed in (("clip-a", 1), ("clip-b", 2)):
        torch.manual_seed(seed)
        folder = tmp_path_factory.mktemp(label)
        NegationCLIPModel(tiny_clip_config()).save_pretrained(folder)
        load_processor().save_pretrained(folder)
        out[label] = folder
    return out
