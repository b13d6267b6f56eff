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

    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    workdir = Path(tempfile.mkdtemp(prefix="condlab-live-"))
    log_path = workdir / "app.log"
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                "PYTHONUNBUFFERED": "1",
                # Tiny models on a 2-core machine run far faster single-threaded (measured ~10x).
                "OMP_NUM_THREADS": "1", **(env or {})}
    chosen = ["--profile", str(profile)] if profile is not None else []  # None: the app picks, as on a Space
    command = [sys.executable, str(ROOT / "app.py"), *chosen, "--port", str(port), "--host", "127.0.0.1",
               *(args or [])]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + startup_timeout
        while not _serving(url):
            if proc.poll() is not None:
                raise RuntimeError(f"app exited with code {proc.returncode} before serving:\n{_tail(log_path)}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"app did not serve {url} within {startup_timeout:.0f}s:\n{_tail(log_path)}")
            time.sleep(0.5)
        downloads = workdir / "downloads"
        downloads.mkdir()
        client = Client(url, verbose=False, download_files=str(downloads))
        client.app_url, client.app_log, client.app_pid = url, log_path, proc.pid
        yield client
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
