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
