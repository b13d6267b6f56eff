"""The endpoint specs are the single source of every parameter: checked here without a server or a model."""

from __future__ import annotations

import ast
import inspect

import pytest

from guidance.rules import METHODS, RULE_NAMES, RULE_PARAMS
from models.profiles import load_profile
from tasks import all_tasks
from tasks.spec import EndpointSpec, Task

TASKS = {task.spec.api_name: task for task in all_tasks()}


@pytest.fixture(scope="module", params=["toy", "full"])
def profile(request):
    return load_profile(request.param)


@pytest.mark.parametrize("api", TASKS)
def test_quick_request_and_defaults_are_valid(api, profile):
    endpoint = TASKS[api].spec.bind(profile)
    defaults = {f.name: f.default for f in endpoint.fields}
    for request in (endpoint.quick_request(), defaults):
        if any(f.kind == "image" for f in endpoint.fields) or api == "/classifier_guidance" and profile.name == "full":
            continue  # decoding uploads and resolving ImageNet models need files: covered by the live tests
        endpoint.parse(request)


@pytest.mark.parametrize("api", TASKS)
def test_every_bad_value_is_refused_with_the_field_named(api):
    """Each field's own corpus at the library level: "error" cases raise ValueError naming the field."""
    endpoint = TASKS[api].spec.bind(load_profile("toy"))
    base = endpoint.quick_request()
    checked = 0
    for field in endpoint.fields:
        for name, value, expect in field.cases():
            if expect != "error":
                continue
            with pytest.raises(ValueError) as err:
                field.parse(value)
            assert field.name in str(err.value), (api, field.name, name, str(err.value))
            checked += 1
        if field.kind not in ("image", "custom"):
            assert field.parse(base[field.name]) is not None or field.optional
    assert checked >= len([f for f in endpoint.fields if f.kind not in ("image", "text")])


@pytest.mark.parametrize("api", TASKS)
def test_the_signature_gradio_client_sees_is_the_spec(api, profile):
    from ui.endpoint import endpoint_function

    task = TASKS[api]
    endpoint = task.spec.bind(profile)
    parameters = list(inspect.signature(endpoint_function(task, endpoint)).parameters.values())
    assert [p.name for p in parameters] == [*endpoint.names, "progress", "request"]  # the last two Gradio fills in
    assert [p.default for p in parameters[:-2]] == [f.default for f in endpoint.fields]


def test_the_guidance_registry_drives_every_endpoint_that_guides():
    """A method or parameter added to the registry appears in every endpoint that offers guidance rules."""
    guided = [t.spec for t in all_tasks() if "guidance" in t.spec.names]
    assert {s.api_name for s in guided} >= {"/text_to_image", "/controlnet", "/controlnet_multi",
                                            "/image_conditioning", "/playground"}
    toy = load_profile("toy")
    for spec in guided:
        guidance = spec.bind(toy).field("guidance")
        # A class-conditional DiT has no weaker DiT to autoguide with and no UNet layers for PAG to name; a method
        # that samples a model of its own (the distilled text-to-image student) is offered by the text-to-image
        # endpoint where the profile has that role (the playground has its own 2D student), by no other.
        dit = spec.api_name == "/class_cfg"
        own_model = {n for n in RULE_NAMES if METHODS[n].model_role}
        rules = {n for n in RULE_NAMES if not (dit and METHODS[n].uncond_branch == "weak") and n not in own_model}
        if spec.api_name == "/text_to_image":
            rules |= {n for n in own_model if toy.has(METHODS[n].model_role)}
        assert rules <= set(guidance.choices), spec.api_name
        if spec.api_name not in ("/text_to_image", "/playground"):
            assert not own_model & set(guidance.choices), spec.api_name
        # The exact 2D world has no attention layers or pixels: PAG and thresholding are left out there only.
        expected = {n for n, p in RULE_PARAMS.items() if not (p.needs and spec.api_name == "/playground")
                    and not (dit and n.startswith("pag_"))}
        assert expected <= set(spec.names), (spec.api_name, expected - set(spec.names))
        for name in expected:
            param = RULE_PARAMS[name]
            f = next(f for f in spec.fields if f.name == name)
            assert (f.low, f.high, tuple(f.choices), f.off) == (param.low, param.high, tuple(param.choices),
                                                                param.off), (spec.api_name, name)
    sweep = TASKS["/guidance_sweep"].spec
    assert set(RULE_PARAMS) - {"scale"} <= set(sweep.names)


def test_a_field_defined_twice_is_refused():
    from tasks import fields as F

    with pytest.raises(ValueError, match="twice"):
        EndpointSpec("/x", "", (F.seed(), F.seed()), ())


def test_snippets_parse_and_carry_no_local_path(profile):
    for api, task in TASKS.items():
        endpoint = task.spec.bind(profile)
        request = {f.name: f.quick if f.quick is not None else f.default for f in endpoint.fields}
        params = {f.name: (f.parse(request[f.name]) if f.kind not in ("image",) else None) for f in endpoint.fields}
        from tasks.spec import Params

        code = endpoint.snippet(Params(params))
        ast.parse(code)
        assert f"api_name={api!r}" in code and "/work/" not in code and "/tmp/" not in code


def test_example_rows_are_valid_requests():
    """Every tab's examples name real fields and pass validation (uploads aside)."""
    from ui import classifier_guidance, controlnet, image_conditioning, text_to_image

    toy = load_profile("toy")
    sets: list[tuple[Task, tuple]] = [
        (TASKS["/text_to_image"], text_to_image.TOY_EXAMPLES),
        (TASKS["/classifier_guidance"], classifier_guidance.TOY_EXAMPLES),
        (TASKS["/controlnet"], controlnet.toy_examples()),
        (TASKS["/image_conditioning"], image_conditioning.toy_examples()),
    ]
    full = load_profile("full")
    sets_full: list[tuple[Task, tuple]] = [
        (TASKS["/text_to_image"], text_to_image.FULL_EXAMPLES),
        (TASKS["/classifier_guidance"], classifier_guidance.IMAGENET_EXAMPLES),
        (TASKS["/controlnet"], controlnet.photo_examples()),
        (TASKS["/image_conditioning"], image_conditioning.photo_examples()),
    ]
    for profile, examples in ((toy, sets), (full, sets_full)):
        for task, rows in examples:
            endpoint = task.spec.bind(profile)
            for row in rows:
                endpoint.parse(dict(zip(endpoint.names, endpoint.row(**row), strict=True)))


def test_adding_a_parameter_is_one_line(monkeypatch):
    """One more Field in the spec: the API signature, the component, validation and the corpus all follow."""
    import dataclasses

    import gradio as gr

    import ui.text_to_image as tab
    from tasks import fields as F
    from tasks.text_to_image import TEXT_TO_IMAGE

    sharpness_field = F.number("sharpness", 0.5, 0.0, 2.0, "sharpness")  # the one line
    spec = dataclasses.replace(TEXT_TO_IMAGE.spec, fields=(*TEXT_TO_IMAGE.spec.fields, sharpness_field))
    monkeypatch.setattr(tab, "TEXT_TO_IMAGE", Task(spec, TEXT_TO_IMAGE.run))
    with gr.Blocks() as demo:
        tab.build(load_profile("toy"))
    parameters = demo.get_api_info()["named_endpoints"]["/text_to_image"]["parameters"]
    sharpness = [p for p in parameters if p["parameter_name"] == "sharpness"]
    assert sharpness and sharpness[0]["parameter_default"] == 0.5 and parameters[-1] is sharpness[0]
    field = spec.bind(load_profile("toy")).field("sharpness")
    with pytest.raises(ValueError, match="sharpness must be between 0 and 2"):
        field.parse(3)
    assert {name for name, _, expect in field.cases() if expect == "error"} >= {"above high", "below low", '"nan"'}
