"""The playground served by an app whose profile names no models at all."""

import pytest
from live_app import live_app


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # A profile with no model roles: the playground needs none, and the app must still start.
    profile = tmp_path_factory.mktemp("profile") / "empty.toml"
    profile.write_text('[meta]\ndescription = "no models"\n')
    with live_app(profile) as c:
        yield c


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
