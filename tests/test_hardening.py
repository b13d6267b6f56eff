"""Hardening against a live app on the every-tab tiny profile: a bad-input corpus, security checks, a 16-job burst.

Run with ``-s`` to see the corpus summary and the memory numbers. JSON cannot carry NaN/±inf, so the
corpus sends them as the strings "nan", "inf", "-inf" (what a hand-written API call would send); one
extra case sends a real float NaN to show what gradio_client does with it.
"""

from __future__ import annotations

import ast
import re
import struct
import threading
import time
import urllib.error
import urllib.request
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from combinations import busiest_request
from gradio_client import handle_file
from live_app import live_app
from PIL import Image

pytestmark = pytest.mark.live

ROOT = Path(__file__).resolve().parents[1]
PHOTO = ROOT / "assets" / "photos" / "astronaut.png"
SIZE = 32
UPLOAD = object()  # placeholder for "a good photo" in the base requests
BOMB_SIDE = 12_000


def endpoints(profile_path) -> dict:
    """Every served endpoint's spec, bound to the test profile (the corpus is generated from these)."""
    from models.profiles import load_profile
    from tasks import all_tasks

    profile = load_profile(str(profile_path))
    return {task.spec.api_name: task.spec.bind(profile) for task in all_tasks()}


def base_requests(bound: dict) -> dict[str, dict]:
    """The cheapest valid request per endpoint (the specs' quick values; uploads a good photo)."""
    base = {}
    for api, endpoint in bound.items():
        request = endpoint.quick_request()
        for f in endpoint.fields:
            if f.kind == "image" and request[f.name] is not None:
                request[f.name] = UPLOAD
        base[api] = request
    return base


# What a clean message must not contain: a traceback, an internal path, Gradio's anonymous failure.
LEAKS = re.compile(r"Traceback|File \"|/work/|/tmp/|/home/|/root/|site-packages|upstream (Gradio )?app")

# ---------------------------------------------------------------------------------------------------------------
# Bad files, written directly (the 12 000² PNG is a constant image compressed row by row, ~150 kB on disk)


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_bomb(path: Path, side: int = BOMB_SIDE) -> Path:
    """A valid grey PNG of side×side zeros, without ever holding the pixels in memory."""
    deflate = zlib.compressobj(9)
    row = b"\x00" * (side + 1)  # filter byte + one byte per pixel
    body = b"".join(deflate.compress(row) for _ in range(side)) + deflate.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", body)
                     + _png_chunk(b"IEND", b""))
    return path


def bad_files(root: Path) -> dict[str, tuple[Path | None, str]]:
    """name → (file, expected outcome: "ok" = converted and served, "error" = refused with a message)."""
    rng = np.random.default_rng(0)
    rgb = (rng.random((40, 48, 3)) * 255).astype(np.uint8)
    files: dict[str, tuple[Path | None, str]] = {}

    def save(name, image, expect, **kw):
        path = root / f"{name}.png"
        image.save(path, **kw)
        files[name] = (path, expect)

    save("1x1", Image.new("RGB", (1, 1), (9, 9, 9)), "error")
    save("rgba", Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)])), "ok")
    save("16-bit", Image.fromarray((rng.random((40, 48)) * 65535).astype(np.uint16)), "ok")
    save("palette", Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE), "ok")
    save("grey", Image.fromarray(rgb).convert("L"), "ok")
    good = root / "good.png"
    Image.fromarray(rgb).save(good)
    (root / "truncated.png").write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    files["truncated"] = (root / "truncated.png", "error")
    (root / "text.png").write_text("this is not an image\n" * 20)
    files["text renamed .png"] = (root / "text.png", "error")
    (root / "empty.png").write_bytes(b"")
    files["zero bytes"] = (root / "empty.png", "error")
    files["10000x10000"] = (write_bomb(root / "ten_k.png", 10_000), "error")
    files["12000x12000"] = (write_bomb(root / "bomb.png"), "error")
    files["none"] = (None, "error")
    return files


def corpus(bound: dict, files: dict) -> list[tuple[str, str, dict, str, bool]]:
    """(endpoint, case name, overrides, expected, live) for every field of every endpoint, from the fields' own cases.

    expected: "ok" (must succeed), "error" (must be refused with a clean message) or "any" (either, but clean).
    live: sent to the running server. A field bound exactly as on an earlier endpoint (seed, steps, the guidance
    fields …) builds the same component, so gradio treats its values the same way: its refusals are checked through
    this endpoint's own validation in process (the message the server would send), its served cases still live.
    """
    cases, seen = [], []  # Field holds dicts: compared by equality, not hashed
    for api, endpoint in bound.items():
        for field in endpoint.fields:
            if field.kind == "image":
                for name, (_path, expect) in files.items():
                    if field.optional and name == "none":
                        expect = "any"  # an optional upload left empty is a valid request or a clear refusal
                    cases.append((api, f"{field.name}={name}", {field.name: ("FILE", name)}, expect, True))
                continue
            repeated = field in seen
            seen.append(field)
            for name, value, expect in field.cases():
                cases.append((api, f"{field.name}={name}", {field.name: value}, expect,
                              not (repeated and expect == "error")))
    cases += [(api, name, overrides, "error", True) for api, name, overrides in CROSS_FIELD]
    # One request per endpoint with the most controls switched at once (from the combination suite's plan): served,
    # or refused with a clear message where this profile lacks a model the combination needs (compare_clean's
    # ResNet-50 offline).
    for api, endpoint in bound.items():
        overrides, labels = busiest_request(endpoint)
        if labels:
            cases.append((api, "combination " + ", ".join(labels), overrides, "any", True))
    # A real float NaN: gradio_client cannot encode it (strict JSON), so it fails in the client; recorded as such.
    cases.append(("/text_to_image", "scale=float('nan')", {"scale": float("nan")}, "any", True))
    return cases


# Requests whose fields are each valid but not together (or not for this profile: the everything profile has a
# latent SD and no autoguide role); every one must be refused before model work with a message.
CROSS_FIELD = [
    ("/text_to_image", "interval start after end", {"interval_start": 0.8, "interval_end": 0.2}),
    ("/text_to_image", "interval start = end", {"interval_start": 0.5, "interval_end": 0.5}),
    ("/text_to_image", "cfg++ with λ > 1", {"guidance": "cfg++", "scale": 2.0}),
    ("/text_to_image", "cfg++ with euler", {"guidance": "cfg++", "scale": 0.6, "scheduler": "euler"}),
    ("/text_to_image", "autoguidance without an autoguide role", {"guidance": "autoguidance"}),
    ("/text_to_image", "thresholding a latent model", {"threshold": 0.995}),
    ("/guidance_sweep", "a method needing a missing role", {"methods": "cfg, autoguidance"}),
    ("/guidance_sweep", "cfg++ at scales above 1", {"methods": "cfg++", "scales": "0.5, 3"}),
    ("/guidance_sweep", "cfg++ with dpm++2m", {"methods": "cfg, cfg++", "scales": "0.5", "scheduler": "dpm++2m"}),
    ("/controlnet", "cfg++ with unipc", {"guidance": "cfg++", "scale": 0.5, "scheduler": "unipc"}),
    ("/controlnet", "autoguidance without an autoguide role", {"guidance": "autoguidance"}),
    ("/controlnet_multi", "interval start after end", {"interval_start": 0.9, "interval_end": 0.1}),
    ("/controlnet", "guidance start after end", {"guidance_start": 0.8, "guidance_end": 0.2}),
    ("/controlnet", "canny low threshold above high", {"low_threshold": 250, "high_threshold": 10}),
    ("/text_to_image", "ddim_eta with euler", {"ddim_eta": 0.5, "scheduler": "euler"}),
    ("/text_to_image", "cfg++ with stochastic DDIM", {"guidance": "cfg++", "scale": 0.6, "ddim_eta": 1.0}),
    ("/image_conditioning", "autoguidance without an autoguide role", {"guidance": "autoguidance"}),
    ("/image_conditioning", "thresholding a latent model", {"threshold": 0.9}),
    ("/playground", "interval start after end", {"interval_start": 0.6, "interval_end": 0.4}),
    ("/playground", "cfg++ with λ > 1", {"guidance": "cfg++", "scale": 4.0}),
]


# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def app(student_profile, tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening")
    profile = student_profile  # every tab, /distill_compare included
    env = {"CONDLAB_DEVICE": "cpu", "TORCH_HOME": str(root / "torch"), "CONDLAB_ADM_CACHE": str(root / "adm")}
    bound = endpoints(profile)
    with live_app(profile, env=env) as client:
        client.bound, client.base = bound, base_requests(bound)
        yield client, root


def _resolve(value, files):
    if value is UPLOAD:
        return handle_file(str(PHOTO))
    if isinstance(value, tuple) and value and value[0] == "FILE":
        path = files[value[1]][0]
        return None if path is None else handle_file(str(path))
    return value


def call(client, api: str, overrides: dict, files: dict):
    kwargs = {k: _resolve(v, files) for k, v in {**client.base[api], **overrides}.items()}
    return client.predict(**kwargs, api_name=api)


def outcome(client, api, overrides, files) -> tuple[str, str]:
    """("ok" | "error", message)."""
    try:
        call(client, api, overrides, files)
    except Exception as e:  # noqa: BLE001 - every failure is inspected, whatever its type
        return "error", f"{type(e).__name__}: {e}"
    return "ok", ""


def parsed_outcome(client, api: str, overrides: dict) -> tuple[str, str]:
    """The endpoint's own validation in process: ("ok" | "error", the message the server would send)."""
    request = {k: str(PHOTO) if v is UPLOAD else v for k, v in {**client.base[api], **overrides}.items()}
    try:
        client.bound[api].parse(request)
    except ValueError as e:
        return "error", f"ValueError: {e}"
    return "ok", ""


def has_golden_adm() -> bool:
    from golden import GOLDEN_ADM

    return GOLDEN_ADM.is_dir()


def test_bad_input_corpus_gets_clear_messages_and_the_server_keeps_serving(app):
    client, root = app
    files = bad_files(root)
    cases = corpus(client.bound, files)
    assert {c[0] for c in cases} == set(client.bound), "every endpoint has cases"
    if not has_golden_adm():
        cases = [c for c in cases if c[0] != "/classifier_guidance"]
    started = time.perf_counter()
    rows, problems = [], []
    # The valid request runs after each endpoint's cases: a case that broke the server or poisoned a cached model
    # fails it, and the endpoint is named (each case's own answer names the parameter). One valid request per
    # parameter (204 of them for 1 280 cases) took as long as the cases themselves.
    groups: dict[str, list] = {}
    for case in cases:
        groups.setdefault(case[0], []).append(case)
    # An endpoint's cases are sent together (the server still runs them one at a time through its queue), so the
    # client's round trips overlap; the valid request follows once all of them have answered.
    pool = ThreadPoolExecutor(max_workers=8)
    for api, group in groups.items():
        answers = pool.map(lambda case: outcome(client, case[0], case[2], files) if case[4]
                           else parsed_outcome(client, case[0], case[2]), group)
        results = []
        for (_api, name, _overrides, expect, live), (got, message) in zip(group, answers, strict=True):
            # A real float NaN fails inside gradio_client (strict JSON encoding), not on the server.
            clean = not LEAKS.search(message) or "float('nan')" in name
            results.append((name, expect, got, clean, message, live))
        after, after_message = outcome(client, api, {}, files)
        for name, expect, got, clean, message, live in results:
            rows.append((api, name, expect, got, clean, after, message, live))
            if not clean or (expect != "any" and got != expect):
                problems.append(f"{api} {name}: expected {expect}, got {got} {message[:200]!r}")
        if after != "ok":
            problems.append(f"{api} after its bad-input cases, a valid request failed: {after_message[:200]!r}")
    pool.shutdown()
    seconds = time.perf_counter() - started

    live = sum(r[7] for r in rows)
    print(f"\n=== bad-input corpus: {len(rows)} cases over {len({r[0] for r in rows})} endpoints in {seconds:.0f} s: "
          f"{live} sent to the server, {len(rows) - live} refusals of repeated fields checked in process ===")
    table = Counter((r[0], r[3]) for r in rows)
    print(f"{'endpoint':22} {'cases':>6} {'refused':>8} {'served':>7}")
    for api in dict.fromkeys(r[0] for r in rows):
        print(f"{api:22} {table[api, 'error'] + table[api, 'ok']:>6} {table[api, 'error']:>8} {table[api, 'ok']:>7}")
    totals = Counter(r[3] for r in rows)
    print(f"{'total':22} {len(rows):>6} {totals['error']:>8} {totals['ok']:>7}")
    print(f"clean messages: {sum(r[4] for r in rows)}/{len(rows)}; valid request served after each case: "
          f"{sum(r[5] == 'ok' for r in rows)}/{len(rows)}")
    examples = {}
    for _api, name, _e, got, _c, _a, message, _live in rows:
        if got == "error":
            examples.setdefault(name.split("=")[1] if name.startswith(("image=", "image_b=")) else name, message)
    for key in ("10000x10000", "12000x12000", "text renamed .png", "truncated", "zero bytes", "1x1"):
        if key in examples:
            print(f"  upload {key!r}: {examples[key][:150]}")
    assert not problems, f"{len(problems)} problem(s):\n" + "\n".join(problems)


# ---------------------------------------------------------------------------------------------------------------
# Security


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(4096)
    except urllib.error.HTTPError as e:
        return e.code, e.read(4096)


def test_gradio_serves_no_file_outside_its_cache_and_assets(app):
    client, _ = app
    base = client.app_url.rstrip("/")
    app_py, passwd = str(ROOT / "app.py"), "/etc/passwd"
    probes = [
        f"/gradio_api/file={passwd}", "/gradio_api/file=../../app.py", "/gradio_api/file=app.py",
        f"/gradio_api/file={app_py}", "/gradio_api/file=%2Fetc%2Fpasswd", "/gradio_api/file=..%2F..%2Fapp.py",
        "/gradio_api/file=%2e%2e/%2e%2e/app.py", f"/gradio_api/file={ROOT / 'models' / 'profiles.py'}",
        f"/file={passwd}", "/file=app.py", "/gradio_api/file=/proc/self/environ",
        "/static/../app.py", "/assets/../../app.py", "/gradio_api/file=assets/photos/../../app.py",
    ]
    served = []
    for path in probes:
        status, body = _get(base + path)
        leaked = b"root:" in body or b"import gradio" in body or b"HF_HUB_OFFLINE" in body
        if not 400 <= status < 500 or leaked:
            served.append((path, status, body[:80]))
    print(f"\npath traversal: {len(probes)} probes, {len(probes) - len(served)} refused with 4xx")
    assert not served, served


def test_launch_allows_no_extra_paths():
    tree = ast.parse((ROOT / "app.py").read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
    launch = [c for c in calls if c.func.attr == "launch"]
    assert launch, "app.py never calls launch()"
    assert all(k.arg not in ("allowed_paths", "share") for c in launch for k in c.keywords)
    assert not [c for c in calls if c.func.attr == "set_static_paths"]


def _repo_files(suffixes: tuple[str, ...]) -> list[Path]:
    skip = {".venv", ".git", "artifacts", "__pycache__", ".ruff_cache", ".pytest_cache"}
    return [p for p in ROOT.rglob("*") if p.is_file() and p.suffix in suffixes
            and not skip.intersection(p.relative_to(ROOT).parts)]


def test_no_remote_code_and_torch_load_is_weights_only():
    needle = "trust_remote_" + "code"  # spelt in two parts so this file does not match itself
    # Code and configuration only: the README may say that we never use it.
    hits = [str(p.relative_to(ROOT)) for p in _repo_files((".py", ".toml", ".cfg", ".json"))
            if needle in p.read_text(errors="replace")]
    assert not hits, hits
    unsafe = []
    for path in _repo_files((".py",)):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "load"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "torch"):
                ok = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                         for k in node.keywords)
                if not ok:
                    unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not unsafe, f"torch.load without weights_only=True: {unsafe}"


class PeakRSS:
    """Samples a process's RSS every 20 ms in a thread; ``peak`` in MB."""

    def __init__(self, pid: int):
        self.proc, self.peak, self._stop = psutil.Process(pid), 0.0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb(self.proc))
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb(self.proc))


def rss_mb(proc: psutil.Process) -> float:
    return proc.memory_info().rss / 2**20


def test_decompression_bomb_is_refused_from_the_header(app):
    client, root = app
    bomb = write_bomb(root / "bomb_rss.png")
    files = {"bomb": (bomb, "error")}
    proc = psutil.Process(client.app_pid)
    call(client, "/controlnet", {}, files)  # models loaded: what follows measures the upload alone
    before = rss_mb(proc)
    messages = []
    with PeakRSS(client.app_pid) as peak:
        for api in ("/controlnet", "/controlnet_multi", "/image_conditioning"):
            got, message = outcome(client, api, {"image": ("FILE", "bomb")}, files)
            messages.append((api, got, message))
    print(f"\n{BOMB_SIDE}² upload ({bomb.stat().st_size / 1e3:.0f} kB on disk, {BOMB_SIDE**2 / 1e6:.0f} Mpixel): "
          f"RSS {before:.0f} MB before, peak {peak.peak:.0f} MB while refusing it")
    for api, got, message in messages:
        assert got == "error" and "pixels" in message and not LEAKS.search(message), (api, message)
    # Decoding would take ≥ 144 MB (grey) and 432 MB as RGB.
    assert peak.peak - before < 100, (before, peak.peak)


# ---------------------------------------------------------------------------------------------------------------
# Concurrency

MODEL_ENDPOINTS = ("text_to_image", "guidance_sweep", "controlnet", "controlnet_multi", "zero_conv",
                   "classifier_guidance", "class_cfg", "cg_vs_cfg", "image_conditioning")


def test_model_endpoints_share_one_serialized_queue(everything_profile):
    import app as app_module
    from ui.endpoint import GPU_QUEUE

    demo = app_module.build_app(app_module.load_profile(str(everything_profile)))
    fns = {fn.api_name: fn for fn in demo.fns.values() if isinstance(fn.api_name, str)}
    assert set(MODEL_ENDPOINTS) <= set(fns), sorted(fns)
    for name in MODEL_ENDPOINTS:
        assert (fns[name].concurrency_limit, fns[name].concurrency_id) == (1, GPU_QUEUE["concurrency_id"]), name
    assert GPU_QUEUE["concurrency_limit"] == 1


def _burst_requests(with_cg: bool) -> list[tuple[str, dict]]:
    kinds = [("/text_to_image", {"steps": 2}), ("/controlnet", {"steps": 2}), ("/image_conditioning", {"steps": 2}),
             ("/playground", {"num_samples": 200})]
    if with_cg:
        kinds.append(("/classifier_guidance", {}))
    return [(api, {**kw, "seed": 100 + i}) for i, (api, kw) in
            enumerate(kinds[i % len(kinds)] for i in range(16))]


def _images(result) -> list[np.ndarray]:
    """Every image file in an endpoint's outputs (galleries, maps, plots), as arrays, in output order."""
    out = []

    def walk(value):
        if isinstance(value, str) and value.endswith((".png", ".webp", ".jpg")) and Path(value).is_file():
            out.append(np.asarray(Image.open(value).convert("RGB")).astype(int))
        elif isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, list | tuple):
            for v in value:
                walk(v)

    walk(result)
    return out


def test_burst_of_16_mixed_jobs_matches_each_job_alone(app):
    client, root = app
    files: dict = {}
    requests = _burst_requests(has_golden_adm())
    proc = psutil.Process(client.app_pid)
    for api in dict.fromkeys(api for api, _ in requests):  # warm-up: every model loaded once
        call(client, api, {}, files)
    baseline = rss_mb(proc)
    started = time.perf_counter()
    with PeakRSS(client.app_pid) as peak:
        jobs = [client.submit(**{k: _resolve(v, files) for k, v in {**client.base[api], **kw}.items()}, api_name=api)
                for api, kw in requests]
        burst = [job.result(timeout=600) for job in jobs]
    burst_s = time.perf_counter() - started
    time.sleep(2)
    after = rss_mb(proc)
    alone = [call(client, api, kw, files) for api, kw in requests]
    mismatched = []
    for (api, kw), a, b in zip(requests, burst, alone, strict=True):
        ia, ib = _images(a), _images(b)
        same = len(ia) == len(ib) > 0 and all(x.shape == y.shape and np.abs(x - y).max() <= 1
                                              for x, y in zip(ia, ib, strict=True))
        if not same:
            mismatched.append((api, kw["seed"]))
        if api == "/playground" and a[1] != b[1]:  # its statistics must agree too, not only its plot
            mismatched.append((api, kw["seed"], "stats"))
    print(f"\nburst: {len(requests)} jobs ({dict(Counter(api for api, _ in requests))}) in {burst_s:.1f} s; RSS "
          f"baseline {baseline:.0f} MB (after warm-up), peak {peak.peak:.0f} MB, after {after:.0f} MB")
    assert len(burst) == 16
    assert not mismatched, mismatched
    assert after - baseline <= 300, (baseline, after)
