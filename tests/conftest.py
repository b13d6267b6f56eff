import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

from testing.tiny import build_tiny_sd  # noqa: E402

# Tiny test models are dominated by threading overhead: one thread measured ~10x faster here.
torch.set_num_threads(1)

# Test tiers (registered in pyproject.toml): a test is "unit" unless it is marked live (it starts the app and talks
# to it over HTTP), browser (Chromium drives the page) or distributed (torchrun ranks); "slow" marks what takes more
# than ~10 s here. The fast development loop is ``pytest -m "unit and not slow"``; CI runs everything.
OTHER_TIERS = {"live", "browser", "distributed"}


def pytest_collection_modifyitems(config, items):
    for item in items:
        if not OTHER_TIERS & {mark.name for mark in item.iter_markers()}:
            item.add_marker(pytest.mark.unit)


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
def student_profile(tmp_path_factory, everything_profile, tiny_sd_folder):
    """The every-tab profile plus a distilled student of its tiny SD, so /distill_compare has a model to draw."""
    from tiny_profile import write_profile_with_student

    return write_profile_with_student(everything_profile, tiny_sd_folder, tmp_path_factory.mktemp("student"))


@pytest.fixture(scope="session")
def hub_replica(tmp_path_factory):
    """The full profile's hub repos and ADM release files, tiny, under their real names (testing/hub_replica.py)."""
    from testing.hub_replica import build_hub_replica

    return build_hub_replica(tmp_path_factory.mktemp("hub_replica"))
