"""The one endpoint pattern, in process: validation before the GPU slot, an out-of-memory error as a message that
frees the cache, notes as warnings, the spec's signature."""

from __future__ import annotations

import inspect

import gradio as gr
import pytest
import torch

import tasks.text_to_image as t2i_task
import ui.endpoint as endpoint_module
from models.profiles import load_profile
from tasks.text_to_image import TEXT_TO_IMAGE

QUICK = dict(prompt="a red cat", steps=1, width=32, height=32, seed=1)


def final(fn, **request):
    """Call a (streaming) endpoint function as Gradio does and return its last output."""
    out = fn(**request)
    return list(out)[-1] if inspect.isgenerator(out) else out


@pytest.fixture
def profile(tmp_path, tiny_sd_folder):
    path = tmp_path / "p.toml"
    path.write_text(f'sd = "{tiny_sd_folder}"\n[limits]\nmax_pixels = 4096\nmax_steps = 10\nmax_images = 2\n')
    return load_profile(str(path))


@pytest.fixture
def gpu_calls(monkeypatch):
    """Every entry into the (would-be) spaces.GPU function, recorded."""
    calls = []
    real = endpoint_module.on_gpu

    def recording(fn, duration):
        def wrapped(params, progress=None, url=None):
            calls.append((dict(params), duration(params, progress)))
            return fn(params, progress, url)

        return real(wrapped, duration)

    monkeypatch.setattr(endpoint_module, "on_gpu", recording)
    return calls


def test_bad_input_never_reaches_the_gpu_slot(profile, gpu_calls):
    fn = endpoint_module.endpoint_function(TEXT_TO_IMAGE, TEXT_TO_IMAGE.spec.bind(profile))
    for bad in (dict(steps=0), dict(scale=99), dict(width=33), dict(guidance="magic")):
        with pytest.raises(gr.Error):
            final(fn, **{**QUICK, **bad})
    assert gpu_calls == []
    images, *_ = final(fn, **QUICK)
    assert len(images) == 1 and len(gpu_calls) == 1
    params, seconds = gpu_calls[0]
    assert params["steps"] == 1 and 10 <= seconds <= 600  # the duration comes from the validated request


def test_out_of_memory_is_a_message_frees_the_cache_and_the_next_request_runs(profile, gpu_calls, monkeypatch):
    fn = endpoint_module.endpoint_function(TEXT_TO_IMAGE, TEXT_TO_IMAGE.spec.bind(profile))
    real = t2i_task.sample_text_model
    state = {"raised": 0, "emptied": 0}

    def once_out_of_memory(*args, **kwargs):
        if not state["raised"]:
            state["raised"] += 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(t2i_task, "sample_text_model", once_out_of_memory)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: state.__setitem__("emptied", state["emptied"] + 1))
    with pytest.raises(gr.Error, match="ran out of memory") as err:
        final(fn, **QUICK)
    assert "Traceback" not in str(err.value) and state["emptied"] == 1
    images, *_ = final(fn, **QUICK)
    assert len(images) == 1


def test_notes_become_warnings(profile, monkeypatch):
    fn = endpoint_module.endpoint_function(TEXT_TO_IMAGE, TEXT_TO_IMAGE.spec.bind(profile))
    shown = []
    monkeypatch.setattr(gr, "Warning", lambda message, *a, **k: shown.append(message))
    final(fn, **{**QUICK, "prompt": "red cat " * 60})
    assert shown and "truncated" in shown[0]


def test_streaming_yields_previews_then_the_same_final_images(profile, monkeypatch):
    """The generator yields x̂0 previews (other outputs untouched), then a result identical to a run without them."""
    fn = endpoint_module.endpoint_function(TEXT_TO_IMAGE, TEXT_TO_IMAGE.spec.bind(profile))
    items = list(fn(**{**QUICK, "steps": 8, "num_images": 2}))
    previews, result = items[:-1], items[-1]
    assert len(previews) >= 2
    for preview in previews:
        gallery, *others = preview
        assert len(gallery) == 2 and gallery[0][1].startswith("x̂0 at step")
        assert all(isinstance(o, dict) and o.get("__type__") == "update" for o in others)  # gr.skip()
    assert [p[0][0][1] for p in previews] != [previews[0][0][0][1]] * len(previews)  # distinct steps
    plain = TEXT_TO_IMAGE(profile, **{**QUICK, "steps": 8, "num_images": 2})
    for (streamed, _), direct in zip(result[0], plain.outputs["images"], strict=True):
        assert list(streamed.getdata()) == list(direct[0].getdata())


class _Request:
    """What Gradio hands an endpoint as ``gr.Request``: headers and the URL it was called at."""

    def __init__(self, headers: dict, url: str = "") -> None:
        self.headers, self.url = headers, url


def test_the_snippet_targets_the_server_that_answered(monkeypatch):
    from ui.endpoint import served_at

    monkeypatch.delenv("SPACE_ID", raising=False)
    assert served_at(_Request({"host": "127.0.0.1:7920"}, "http://127.0.0.1:7920/gradio_api/queue/join")) == \
        "http://127.0.0.1:7920/"
    assert served_at(_Request({"host": "10.0.0.2:7860", "x-forwarded-host": "lab.example.org",
                               "x-forwarded-proto": "https"})) == "https://lab.example.org/"
    assert served_at(_Request({"host": "evil/path"})) is None and served_at(None) is None
    endpoint = TEXT_TO_IMAGE.spec.bind(load_profile("toy"))
    params = endpoint.parse({"prompt": "a red circle"})
    assert "Client('http://127.0.0.1:7920/')" in endpoint.snippet(params, "http://127.0.0.1:7920/")
    assert "Client('http://127.0.0.1:7860/')" in endpoint.snippet(params)  # a direct call: the default address
    monkeypatch.setenv("SPACE_ID", "owner/conditioning-lab")
    assert "Client('owner/conditioning-lab')" in endpoint.snippet(params, "https://owner-conditioning-lab.hf.space/")
