"""Every gradio_client example in README.md runs, unchanged but for the URL, against a live app."""

import re
from pathlib import Path

import pytest
from live_app import live_app

ROOT = Path(__file__).resolve().parents[1]
README_URL = 'Client("http://localhost:7860/")'
SNIPPETS = [b for b in re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
            if README_URL in b]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def client(everything_profile):
    # The README's examples use 25 steps; the test profile's cap is lower to keep other tests quick.
    with live_app(everything_profile, env={"CONDLAB_MAX_STEPS": "30"}) as c:
        yield c


def test_readme_documents_every_endpoint(client):
    documented = {m for s in SNIPPETS for m in re.findall(r'api_name="(/[a-z_]+)"', s)}
    served = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert served == documented, f"undocumented: {served - documented}; not served: {documented - served}"


def test_readme_api_table_is_generated_from_the_specs():
    from scripts.api_table import BUDGETS_END, BUDGETS_START, END, START, budgets_block, readme_block

    text = (ROOT / "README.md").read_text()
    for start, end, expected in ((START, END, readme_block()), (BUDGETS_START, BUDGETS_END, budgets_block())):
        current = text[text.index(start):text.index(end) + len(end)]
        assert current == expected, "run: python -m scripts.api_table --write"


@pytest.mark.parametrize("index", range(len(SNIPPETS)))
def test_readme_snippet_runs(client, index, monkeypatch):
    monkeypatch.chdir(ROOT)  # the snippets upload files by repo-relative path
    code = SNIPPETS[index].replace(README_URL, f'Client("{client.app_url}")')
    namespace: dict = {}
    exec(compile(code, f"README.md snippet {index}", "exec"), namespace)  # noqa: S102 - the README's own example
    files = [v for v in namespace.values() if isinstance(v, str) and v.endswith(".png")]
    galleries = [v for v in namespace.values() if isinstance(v, list) and v and isinstance(v[0], dict)]
    files += [item["image"] for g in galleries for item in g if isinstance(item.get("image"), str)]
    assert files, "the example returned no image"
    for f in files:
        assert Path(f).read_bytes()[:8] == PNG, f
