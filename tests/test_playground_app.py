"""The playground served by the real app, driven by the README's own gradio_client snippet."""

import re
from pathlib import Path

import pytest
from live_app import live_app

ROOT = Path(__file__).resolve().parents[1]


def readme_snippet(api_name: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    matching = [b for b in blocks if f'api_name="{api_name}"' in b]
    assert matching, f"README has no gradio_client example for {api_name}"
    return matching[0]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # A profile with no model roles: the playground needs none, and the app must still start.
    profile = tmp_path_factory.mktemp("profile") / "empty.toml"
    profile.write_text('[meta]\ndescription = "no models"\n')
    with live_app(profile) as c:
        yield c


def test_readme_snippet_runs_against_the_app(client, capsys):
    code = readme_snippet("/playground").replace("http://localhost:7860/", client.app_url)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    stats = namespace["stats"]
    assert stats["n"] == 1000 and 0.9 <= stats["class_fraction"] <= 1.0
    assert Path(namespace["plot_png"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_input_gets_a_message_and_the_server_keeps_serving(client):
    for bad in (dict(scale=float("nan")), dict(steps=0), dict(num_samples=10**7), dict(target_class="purple"),
                dict(seed=-2)):
        with pytest.raises(Exception) as err:
            client.predict(**bad, steps=bad.get("steps", 5), api_name="/playground")
        message = str(err.value)
        assert "Traceback" not in message and "/work/" not in message, message
    _, stats = client.predict(steps=5, num_samples=100, api_name="/playground")
    assert stats["n"] == 100


def test_same_seed_same_result(client):
    a = client.predict(guidance="classifier", scale=2.0, steps=20, num_samples=200, seed=7, api_name="/playground")[1]
    b = client.predict(guidance="classifier", scale=2.0, steps=20, num_samples=200, seed=7, api_name="/playground")[1]
    assert a == b
