"""The playground served by an app whose profile names no models at all."""

import pytest
from live_app import live_app

pytestmark = pytest.mark.live


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    # A profile with no model roles: the playground needs none, and the app must still start.
    profile = tmp_path_factory.mktemp("profile") / "empty.toml"
    profile.write_text('[meta]\ndescription = "no models"\n')
    with live_app(profile) as c:
        yield c


def test_same_seed_same_result(client):
    a = client.predict(guidance="classifier", scale=2.0, steps=20, num_samples=200, seed=7, api_name="/playground")[1]
    b = client.predict(guidance="classifier", scale=2.0, steps=20, num_samples=200, seed=7, api_name="/playground")[1]
    assert a == b
