"""The ``/classifier_guidance`` endpoint through gradio_client, against a live app on the tiny golden ADM pair.

The app runs in a subprocess (``python app.py --profile <tiny profile>``), as a user would start it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from golden import golden_adm_mark
from live_app import live_app
from test_classifier_guidance import write_tiny_profile

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [golden_adm_mark(), pytest.mark.live]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cg_app")
    profile = write_tiny_profile(folder, max_steps=5, max_guided_steps=50)  # other tabs 5, guidance 50
    env = {"CONDLAB_DEVICE": "cpu", "TORCH_HOME": str(folder / "torch"),  # no ResNet-50 weights: offline path
           "CONDLAB_ADM_CACHE": str(folder / "adm")}
    with live_app(profile, env=env) as c:
        yield c


GOOD = dict(class_name="golden retriever", class_id=None, model="64x64", classifier_scale=10.0, steps="ddim5",
            sampler="ddim", seed=3, num_images=1, compare_clean=False)


def _call(client, **overrides):
    return client.predict(**{**GOOD, **overrides}, api_name="/classifier_guidance")


def test_classifier_guidance_endpoint(client) -> None:
    from reporting.metadata import read_png_metadata

    gallery, plot, meta, seed, top5 = _call(client)
    assert seed == 3 and len(gallery) == 1
    png = Path(gallery[0]["image"])
    assert png.suffix == ".png"
    embedded = read_png_metadata(png)
    assert embedded["parameters"]["class_id"] == 207 and embedded["parameters"]["steps"] == "ddim5"
    if isinstance(meta, str):
        meta = json.loads(Path(meta).read_text()) if Path(meta).exists() else json.loads(meta)
    run = meta["runs"]["noise-aware"]
    assert len(run["final_log_p_target"]) == 1 and meta["num_steps"] == 5
    # native plots arrive as data: one row per step of the guided run's mean, top-5 rows for the first image
    target = {row[2] for row in plot["data"]} if isinstance(plot, dict) else set()
    assert any("noise-aware" in series for series in target), plot
    assert top5["data"] and all(len(row) == 3 for row in top5["data"])
    # classifier guidance has its own step cap (max_guided_steps), above the other tabs' max_steps
    _, _, meta, _, _ = _call(client, steps="ddim40")
    assert meta["num_steps"] == 40


@pytest.mark.parametrize(
    "overrides,message",
    [
        (dict(class_name="golden retreiver"), "Did you mean"),
        (dict(class_id=1000), "and 999"),
        (dict(classifier_scale=-1), "classifier_scale|minimum"),
        (dict(classifier_scale=25), "classifier_scale|maximum"),
        (dict(steps="ddim0"), "steps"),
        (dict(steps="1000"), "at most 50"),
        (dict(model="512x512"), "model must be one of|not in the list of choices"),
        (dict(compare_clean=True), "resnet50-"),
    ],
)
def test_bad_input_gets_a_clear_message(client, overrides, message) -> None:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match=message) as err:
        _call(client, **overrides)
    assert "Traceback" not in str(err.value)
