"""Off a ZeroGPU Space the spaces.GPU wrapper must change nothing; its duration grows with the work."""

import pytest
import spaces

from tasks.spec import gpu_seconds
from ui.endpoint import on_gpu


def test_on_gpu_is_a_no_op_off_spaces():
    def work(params, progress=None):
        return params * 2

    assert not spaces.config.Config.zero_gpu
    wrapped = on_gpu(work, lambda params, progress=None: 60)
    assert wrapped is work
    assert wrapped(21) == 42


def test_gpu_seconds_grows_with_work_and_is_capped():
    small = gpu_seconds(10 * 0.26)  # 10 steps of one 512² image
    big = gpu_seconds(100 * 1.05 * 4 * 2)  # 100 CFG steps of four 1024² images
    assert 10 <= small < big <= 600
    assert gpu_seconds(10**9) == 600


# ------------------------------------------------------------------------------------------------------------------
# The app under the `spaces` package's ZeroGPU emulation, started as a Space starts it (no --profile).

import http.server  # noqa: E402
import re  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

from live_app import free_port, live_app  # noqa: E402


class DeviceAPI(http.server.ThreadingHTTPServer):
    """ZeroGPU's device API, as little of it as the emulation needs: startup is acknowledged, no GPU is ever free."""

    def __init__(self):
        self.calls: list[str] = []
        api = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                path = self.path.split("?")[0]
                api.calls.append(path)
                self.send_response(200 if path == "/startup-report" else 503)
                self.send_header("content-type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", free_port()), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def zerogpu_app(hub_replica):
    """The app as a ZeroGPU Space starts it, the full profile's weights in the (replica) hub cache."""
    api = DeviceAPI()
    env = {"SPACES_ZERO_GPU": "true", "SPACES_ZERO_DEVICE_API_URL": f"http://127.0.0.1:{api.server_address[1]}",
           "SPACE_ID": "condlab/test-space", "CONDLAB_PROFILE": "", "HF_HOME": str(hub_replica["hf_home"]),
           "CONDLAB_ADM_CACHE": str(hub_replica["adm_cache"])}
    try:
        with live_app(None, env=env) as client:
            yield client, api
    finally:
        api.shutdown()


@pytest.mark.live
def test_the_app_starts_under_zerogpu_and_loads_weights_in_the_main_process(zerogpu_app):
    client, api = zerogpu_app
    log = client.app_log.read_text()
    assert "CUDA has been initialized" not in log
    assert api.calls.count("/startup-report") >= 1  # the emulation reported for duty
    for role in ("sd", "controlnet_canny", "annotators", "image_variations", "ip_adapter", "clip", "adm_diffusion"):
        assert re.search(rf"{role}: loaded in", log), (role, log[-3000:])  # at startup, not inside a GPU slot
    page = urllib.request.urlopen(client.app_url, timeout=10).read().decode()
    # torch.cuda.is_available() is the emulation's answer: the full profile, on CUDA, in half precision.
    assert "Profile: `full`" in page and "running on **cuda float16**" in page and "Loaded at startup" in page
    assert "Not available" not in page


@pytest.mark.live
def test_a_request_ends_in_seconds_with_zerogpu_s_message_and_the_server_keeps_serving(zerogpu_app):
    client, api = zerogpu_app
    before = api.calls.count("/schedule")
    with pytest.raises(Exception) as err:
        client.predict(prompt="x", steps=0, api_name="/text_to_image")
    assert "steps" in str(err.value) and api.calls.count("/schedule") == before  # bad input asks for no GPU
    start = time.perf_counter()
    with pytest.raises(Exception) as err:
        client.predict(prompt="a red cat", steps=2, width=32, height=32, api_name="/text_to_image")
    assert "No GPU was available" in str(err.value) and time.perf_counter() - start < 20
    assert api.calls.count("/schedule") == before + 1
    _, stats = client.predict(steps=5, num_samples=100, api_name="/playground")  # CPU work: no GPU needed
    assert stats["n"] == 100
