"""Every control explains itself: each field of each endpoint, bound to the toy and the full profile, carries one
sentence of help (its own ``info``, the registry's ``RuleParam.info`` or the shared ``tasks.field_help`` table), shown
under the control and in the MCP tool's parameter descriptions."""

from __future__ import annotations

import re

import pytest

from guidance.rules import RULE_PARAMS
from models.profiles import load_profile
from tasks import all_tasks
from tasks.field_help import FIELD_HELP

MAX_CHARS = 300
# A sentence ends at . ! or ? followed by a space and a capital letter; these abbreviations do not end one.
ABBREVIATIONS = ("et al.", "e.g.", "i.e.", "vs.", "cf.")
SENTENCE_END = re.compile(r"[.!?]\s+[A-Z]")


def problems(text: object) -> list[str]:
    """What keeps ``text`` from being one sentence of help (empty list: it is)."""
    if not isinstance(text, str) or not text.strip():
        return ["empty"]
    found = []
    if "\n" in text:
        found.append("has a newline")
    if len(text) > MAX_CHARS:
        found.append(f"{len(text)} characters (at most {MAX_CHARS})")
    body = text
    for abbreviation in ABBREVIATIONS:
        body = body.replace(abbreviation, abbreviation.replace(".", ""))
    if SENTENCE_END.search(body.rstrip(".")):
        found.append("more than one sentence")
    return found


@pytest.mark.parametrize("profile_name", ["toy", "full"])
def test_every_field_of_every_endpoint_has_one_sentence_of_help(profile_name):
    profile = load_profile(profile_name)
    bad = {}
    count = 0
    for task in all_tasks():
        for field in task.spec.bind(profile).fields:
            count += 1
            found = problems(field.info)
            if found:
                bad[f"{task.spec.api_name} {field.name}"] = (found, str(field.info)[:80])
    assert not bad, bad
    assert count > 100  # every endpoint's fields were looked at


def test_the_shared_table_and_the_registry_are_one_sentence_each():
    for name, text in FIELD_HELP.items():
        assert not problems(text), (name, problems(text))
    for name, param in RULE_PARAMS.items():
        if name == "scale":  # its help depends on the endpoint's model: the shared table's
            assert not param.info and "scale" in FIELD_HELP
            continue
        assert not problems(param.info), (name, problems(param.info))


@pytest.mark.parametrize(("name", "must_say"), [
    ("pag_scale", ("s = 3", "Ahn et al.")),
    ("threshold", ("p = 0.995", "Imagen")),
    ("rescale", ("φ = 0.7", "Lin et al.")),
    ("eta", ("η = 0", "Sadat et al.")),
    ("apg_norm_threshold", ("r = 15",)),
    ("apg_momentum", ("0 (off)",)),
    ("zero_init_steps", ("Fan et al.", "1")),
    ("interval_start", ("Kynkäänniemi et al.",)),
])
def test_guidance_parameters_say_the_papers_default(name, must_say):
    info = RULE_PARAMS[name].info
    for phrase in must_say:
        assert phrase in info, (name, phrase, info)


def test_the_help_is_what_the_mcp_tool_describes():
    from ui.endpoint import tool_description

    profile = load_profile("toy")
    for task in all_tasks():
        endpoint = task.spec.bind(profile)
        description = tool_description(endpoint)
        for field in endpoint.fields:
            assert f"    {field.name}: {' '.join(field.info.split())}" in description, (task.spec.api_name, field.name)


def test_the_check_refuses_what_is_not_one_sentence():
    """The comparison can fail: empty help, two sentences, a newline and an overlong text are each caught, while a
    sentence with "et al." and a decimal point passes."""
    assert problems("") == ["empty"]
    assert problems(None) == ["empty"]
    assert problems("Guidance scale. Larger is stronger.") == ["more than one sentence"]
    assert problems("Guidance scale,\nlarger is stronger.") == ["has a newline"]
    assert problems("x" * 301) == ["301 characters (at most 300)"]
    assert problems("PAG strength, s = 3 from Ahn et al. 2024 (0.5 is gentle).") == []
