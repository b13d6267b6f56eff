"""Every toy tab in half precision on the CPU: the dtype mismatches a CUDA float16 run would hit surface here."""

from __future__ import annotations

import pytest

from models.profiles import load_profile
from tasks import all_tasks


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_toy_task_runs_in_half_precision(dtype, monkeypatch):
    monkeypatch.setenv("CONDLAB_DTYPE", dtype)
    profile = load_profile("toy")
    ran = []
    for task in all_tasks():
        endpoint = task.spec.bind(profile)
        request = endpoint.quick_request()
        if task.spec.api_name == "/classifier_guidance":
            request["compare_clean"] = True  # both classifiers, on the half-precision UNet's samples
        result = task(profile, **request)
        meta = result.outputs.get("metadata")
        if meta is not None:
            assert meta["runtime"] == f"cpu {dtype}", (task.spec.api_name, meta["runtime"])
        ran.append(task.spec.api_name)
    assert len(ran) == len(all_tasks())


def test_no_output_metadata_or_png_carries_a_local_path():
    """Model ids appear as hub ids or repo-relative folders; the shipped toy weights live under /…/assets/toy."""
    import json

    from models.profiles import ROOT

    profile = load_profile("toy")
    for task in all_tasks():
        result = task(profile, **task.spec.bind(profile).quick_request())
        texts = [json.dumps(v, default=str) for v in result.outputs.values() if isinstance(v, dict | str)]
        images = [item[0] if isinstance(item, tuple) else item for value in result.outputs.values()
                  for item in (value if isinstance(value, list) else [value]) if hasattr(item, "info")]
        texts += [str(image.info) for image in images]
        assert images or task.spec.api_name == "/zero_conv"
        leaked = [t for t in texts if str(ROOT) in t or "/tmp/" in t]
        assert not leaked, (task.spec.api_name, leaked[0][:300])
