"""Every example in README.md and docs/api.md runs, unchanged but for the URL, against a live app: the gradio_client
snippets and the MCP client snippets; and docs/api.md's reference (and docs/deploy.md's ZeroGPU budgets) are what
``scripts/tools/api_table.py`` generates from the specs now."""

import re
from pathlib import Path

import pytest
from live_app import live_app

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE_FILES = ("README.md", "docs/api.md")
CLIENT_URL = 'Client("http://localhost:7860/")'
MCP_URL = '"http://localhost:7860/gradio_api/mcp/"'


def python_blocks(name: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / name).read_text(), flags=re.S)


SNIPPETS = [(name, i, block) for name in EXAMPLE_FILES for i, block in enumerate(python_blocks(name))
            if CLIENT_URL in block]
MCP_SNIPPETS = [(name, i, block) for name in EXAMPLE_FILES for i, block in enumerate(python_blocks(name))
                if MCP_URL in block]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client(student_profile):
    # The examples use 25 steps and /attention_cost 128² (valid for toy and full); the test profile's caps are lower to
    # keep other tests quick.
    with live_app(student_profile, env={"CONDLAB_MAX_STEPS": "30", "CONDLAB_MAX_PIXELS": "16384"}) as c:
        yield c


def test_the_examples_document_every_endpoint(client):
    documented = {m for _, _, s in SNIPPETS for m in re.findall(r'api_name="(/[a-z_0-9]+)"', s)}
    served = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert served == documented, f"undocumented: {served - documented}; not served: {documented - served}"
    assert any(name == "README.md" for name, _, _ in SNIPPETS) and any(name == "README.md" for name, _, _ in
                                                                      MCP_SNIPPETS)


def _generated(path: Path, start: str, end: str) -> str:
    text = path.read_text()
    return text[text.index(start):text.index(end) + len(end)]


def test_the_api_reference_is_generated_from_the_specs():
    from scripts.tools import api_table as T

    assert _generated(T.API_DOC, T.START, T.END) == T.api_block(), "run: python -m scripts.tools.api_table --write"
    assert _generated(T.DEPLOY_DOC, T.BUDGETS_START, T.BUDGETS_END) == T.budgets_block(), \
        "run: python -m scripts.tools.api_table --write"


def test_the_reference_check_can_fail(monkeypatch):
    """The comparison above notices a changed spec: another sentence of help for `seed` changes the reference."""
    from scripts.tools.api_table import API_DOC, END, START, api_block
    from tasks.field_help import FIELD_HELP

    monkeypatch.setitem(FIELD_HELP, "seed", "A different sentence of help for the seed.")
    assert _generated(API_DOC, START, END) != api_block()


def _plot_tables(namespace: dict) -> list[dict]:
    return [v for v in namespace.values() if isinstance(v, dict) and v.get("columns") and v.get("data")]


@pytest.mark.parametrize("name,index", [(name, i) for name, i, _ in SNIPPETS], ids=lambda v: str(v))
def test_snippet_runs(client, name, index, monkeypatch):
    monkeypatch.chdir(ROOT)  # the snippets upload files by repo-relative path
    block = next(b for n, i, b in SNIPPETS if (n, i) == (name, index))
    code = block.replace(CLIENT_URL, f'Client("{client.app_url}")')
    namespace: dict = {}
    exec(compile(code, f"{name} snippet {index}", "exec"), namespace)  # noqa: S102 - the docs' own example
    files = [v for v in namespace.values() if isinstance(v, str) and v.endswith(".png")]
    galleries = [v for v in namespace.values() if isinstance(v, list) and v and all(isinstance(x, dict) for x in v)]
    files += [item["image"] for g in galleries for item in g if isinstance(item.get("image"), str)]
    assert files or _plot_tables(namespace), "the example returned no image and no plot data"
    for f in files:
        assert Path(f).read_bytes()[:8] == PNG, f


@pytest.mark.parametrize("name,index", [(name, i) for name, i, _ in MCP_SNIPPETS], ids=lambda v: str(v))
def test_mcp_snippet_runs(client, name, index, capsys):
    block = next(b for n, i, b in MCP_SNIPPETS if (n, i) == (name, index))
    code = block.replace(MCP_URL, repr(client.app_url + "gradio_api/mcp/"))
    exec(compile(code, f"{name} MCP snippet {index}", "exec"), {"__name__": "snippet"})  # noqa: S102
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith("False"), printed  # the tool call's isError
    assert "'image'" in printed or "'text'" in printed, printed


def _json_outputs(result) -> list[dict]:
    return [v for v in (result if isinstance(result, tuple) else (result,)) if isinstance(v, dict)]


def _image_arrays(result) -> list:
    import numpy as np
    from PIL import Image

    found = []

    def walk(value):
        if isinstance(value, str) and value.endswith(".png") and Path(value).is_file():
            found.append(np.asarray(Image.open(value).convert("RGB")))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(result)
    return found


def test_every_endpoint_s_reproduce_snippet_repeats_the_request(client, student_profile, monkeypatch):
    """Each endpoint's JSON carries a gradio_client snippet; run as printed (uploads filled in), it gives the same
    images, and it names no local path."""
    import numpy as np
    from gradio_client import handle_file

    from models.profiles import load_profile
    from tasks import all_tasks

    monkeypatch.chdir(ROOT)
    profile = load_profile(str(student_profile))
    photo = str(ROOT / "assets" / "photos" / "astronaut.png")
    for task in all_tasks():
        endpoint = task.spec.bind(profile)
        request = endpoint.quick_request()
        if task.spec.api_name == "/controlnet_multi":
            request["control_b"] = "canny"
        request = {k: (handle_file(photo) if endpoint.field(k).kind == "image" and v is not None else v)
                   for k, v in request.items()}
        first = client.predict(**request, api_name=task.spec.api_name)
        snippets = [d.get("reproduce") for d in _json_outputs(first) if d.get("reproduce")]
        assert snippets, f"{task.spec.api_name} returned no reproduce snippet"
        code = snippets[0]
        assert "/tmp/" not in code and "/work/" not in code and "/root/" not in code
        # The snippet connects to the server that answered (this test's port), not the default 7860.
        assert f"Client({client.app_url.rstrip('/') + '/'!r})" in code, code.splitlines()[:3]
        code = code.replace('"your_image.png"', repr(photo)).replace('"your_image_b.png"', repr(photo))
        namespace: dict = {}
        exec(compile(code, f"{task.spec.api_name} snippet", "exec"), namespace)  # noqa: S102 - the app's own snippet
        again = namespace["result"]
        a, b = _image_arrays(first), _image_arrays(again)
        if task.spec.api_name == "/zero_conv":  # a measurement: it repeats exactly
            assert again[0]["bit_identical"] and again[0]["zero_convs"] == first[0]["zero_convs"]
            continue
        if task.spec.api_name == "/attention_cost":  # timings and free memory vary; the layer count repeats
            assert again[2]["layers"] == first[2]["layers"] and again[2]["totals"] == first[2]["totals"]
            continue
        if task.spec.api_name == "/cg_vs_cfg":  # its plot shows measured times; samples and log p repeat
            a, b = _image_arrays(first[0]), _image_arrays(again[0])
            assert again[3]["final_log_p"] == first[3]["final_log_p"]
        if task.spec.api_name == "/distill_compare":  # its metadata holds measured times; the grid repeats
            a, b = _image_arrays(first[0]), _image_arrays(again[0])
        assert a and len(a) == len(b), task.spec.api_name
        for x, y in zip(a, b, strict=True):
            assert x.shape == y.shape and np.abs(x.astype(int) - y.astype(int)).max() <= 1, task.spec.api_name
        if task.spec.api_name == "/text_to_image":  # the comparison can fail: another seed, other pixels
            exec(compile(code.replace("seed=1,", "seed=2,"), "changed snippet", "exec"), namespace)  # noqa: S102
            assert np.abs(_image_arrays(namespace["result"])[0].astype(int) - a[0].astype(int)).max() > 1
