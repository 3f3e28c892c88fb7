import pytest

from hf_negationclip import world as scene_world


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A small scene world written once for the whole session (200 images)."""
    out = tmp_path_factory.mktemp("world")
    scene_world.write_world(out, 200, seed=3, show_progress=False)
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


@pytest.fixture
def fake_hub(monkeypatch, tmp_path):
    """An in-process fake Hub (tests/fake_hub.py) behind huggingface_hub's HTTP client, with a valid HF_TOKEN.

    ``fake_hub.commits`` records every commit, ``fake_hub.files(repo_id, repo_type)`` serves a repo's files,
    ``fake_hub.fail = lambda request: ...`` injects failures; retries do not sleep; ``Dataset.push_to_hub`` works.
    """
    import huggingface_hub.constants
    from fake_hub import FakeHub
    from huggingface_hub import HfApi
    from huggingface_hub.utils import _http

    hub = FakeHub().install()
    monkeypatch.setattr(HfApi, "preupload_lfs_files", FakeHub.buffered_preupload(HfApi.preupload_lfs_files))
    monkeypatch.setenv("HF_TOKEN", "hf_fake_write_token")
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-stored-token"))
    monkeypatch.setattr(_http.time, "sleep", lambda seconds: None)
    yield hub
    FakeHub.uninstall()


@pytest.fixture
def check_png():
    """``check_png(path, height=None, width=None, min_width=0, colours=())``: the file decodes as a PNG of that size,
    is not one flat colour, and shows every RGB colour in ``colours`` (e.g. a bar's fill) somewhere."""
    from PIL import Image, ImageColor

    def check(path, height=None, width=None, min_width=0, colours=()):
        with Image.open(path) as image:
            assert image.format == "PNG", f"{path} is {image.format}, not PNG"
            rgb = image.convert("RGB")
        if height is not None:
            assert rgb.height == height, (path, rgb.size)
        if width is not None:
            assert rgb.width == width, (path, rgb.size)
        assert rgb.width >= min_width, (path, rgb.size)
        present = {colour for _, colour in rgb.getcolors(maxcolors=rgb.width * rgb.height)}
        assert len(present) > 16, f"{path} is (almost) one flat colour: {len(present)} colours"
        missing = [c for c in colours if ImageColor.getrgb(c) not in present]
        assert not missing, f"{path} does not show {missing}"
        return rgb

    return check
