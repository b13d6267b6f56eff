import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

from models.tiny import build_tiny_sd  # noqa: E402

# Tiny test models are dominated by threading overhead: one thread measured ~10x faster here.
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_sd_folder(tmp_path_factory):
    """A tiny SD-1.x folder saved with save_pretrained, loaded like a hub id would be."""
    return build_tiny_sd(tmp_path_factory.mktemp("tiny_sd") / "sd")


@pytest.fixture(scope="session")
def everything_profile(tmp_path_factory, tiny_sd_folder):
    """A profile where every tab has a tiny model (see tests/tiny_profile.py)."""
    from tiny_profile import write_everything_profile

    return write_everything_profile(tmp_path_factory.mktemp("everything"), tiny_sd_folder)


@pytest.fixture(scope="session")
def hub_replica(tmp_path_factory):
    """The full profile's hub repos and ADM release files, tiny, under their real names (models/hub_replica.py)."""
    from models.hub_replica import build_hub_replica

    return build_hub_replica(tmp_path_factory.mktemp("hub_replica"))
