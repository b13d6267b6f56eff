"""Run the real app in a subprocess and talk to it with gradio_client (shared by every tab's app tests).

Usage in a test module::

    from live_app import live_app

    @pytest.fixture(scope="module")
    def client(tmp_path_factory):
        with live_app(profile_path) as c:
            yield c

The subprocess is offline (``HF_HUB_OFFLINE=1``), binds a free localhost port and is always
terminated; if it dies or never serves, the error carries the tail of its log.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serving(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _launched(url: str, log_path: Path) -> bool:
    """Serving, and past launch()'s own check that it can reach the page (after which it prints the share hint): a
    page served before that check can still be followed by the process exiting."""
    return _serving(url) and "To create a public link" in _tail(log_path, 200)


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


@contextmanager
def live_app(
    profile: str | os.PathLike | None,
    *,
    env: dict[str, str] | None = None,
    startup_timeout: float = 240.0,
    args: list[str] | None = None,
) -> Iterator:
    """Start ``app.py --profile PROFILE --port FREE`` (no ``--profile`` when None), yield a connected
    ``gradio_client.Client``, then stop it.

    ``client.app_url`` / ``client.app_log`` / ``client.app_pid`` (attributes added here) give the URL, the log
    file and the app process id (to measure its memory).
    """
    from gradio_client import Client

    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                "PYTHONUNBUFFERED": "1",
                # Tiny models on a 2-core machine run far faster single-threaded (measured ~10x).
                "OMP_NUM_THREADS": "1", **(env or {})}
    chosen = ["--profile", str(profile)] if profile is not None else []  # None: the app picks, as on a Space
    workdir = Path(tempfile.mkdtemp(prefix="condlab-live-"))
    log_path = workdir / "app.log"
    for attempt in range(2):
        port = free_port()
        url = f"http://127.0.0.1:{port}/"
        command = [sys.executable, str(ROOT / "app.py"), *chosen, "--port", str(port), "--host", "127.0.0.1",
                   *(args or [])]
        with open(log_path, "w") as log:
            proc = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + startup_timeout
        while not _launched(url, log_path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        # gradio's launch() gives up when its own first request to the page takes over 3 s, which a loaded 2-core
        # machine can cause; that is the machine, not the app, so it gets one more start.
        if proc.poll() is not None and attempt == 0 and "localhost is not accessible" in _tail(log_path):
            continue
        break
    try:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with code {proc.returncode} before serving:\n{_tail(log_path)}")
        if not _serving(url):
            raise TimeoutError(f"app did not serve {url} within {startup_timeout:.0f}s:\n{_tail(log_path)}")
        downloads = workdir / "downloads"
        downloads.mkdir()
        # httpx's 5 s default read timeout is too short for /info on a loaded 2-core machine; the app's heartbeats
        # keep a long generation's stream well inside 120 s.
        client = Client(url, verbose=False, download_files=str(downloads), httpx_kwargs={"timeout": 120.0})
        client.app_url, client.app_log, client.app_pid = url, log_path, proc.pid
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
