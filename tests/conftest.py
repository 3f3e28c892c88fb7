import pytest

from hf_negationclip import synthetic


@pytest.fixture(scope="session")
def world(tmp_path_factory):
    """A small scene world written once for the whole session (200 images)."""
    out = tmp_path_factory.mktemp("world")
    synthetic.write_world(out, 200, seed=3, show_progress=False)
    return out
