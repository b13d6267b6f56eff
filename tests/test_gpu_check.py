"""The one-shot GPU check's CPU-safe parts: its request plan runs through the tasks and the report is written."""

from __future__ import annotations

import json

from models.profiles import load_profile
from scripts.tools.gpu_check import PLAN, main, run_plan, write_report
from tasks import all_tasks


def test_the_plan_covers_every_endpoint_with_valid_requests():
    assert {api for api, _, _ in PLAN} == {t.spec.api_name for t in all_tasks()}
    full = load_profile("full")
    for api, _label, request in PLAN:
        endpoint = next(t for t in all_tasks() if t.spec.api_name == api).spec.bind(full)
        assert set(request) <= set(endpoint.names), (api, set(request) - set(endpoint.names))
        for name, value in request.items():  # each value is one the field takes (uploads aside)
            if endpoint.field(name).kind != "image":
                endpoint.field(name).parse(value)


def test_quick_run_on_the_cpu_writes_the_report(everything_profile, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ResNet-50 here: compare_clean must say so
    monkeypatch.setenv("CONDLAB_ADM_CACHE", str(tmp_path / "adm"))
    profile = load_profile(str(everything_profile))
    rows = run_plan(profile, quick=True)
    by_label = {r.label: r for r in rows}
    for label in ("CFG, 25 steps", "canny", "variations", "IP-Adapter", "cross-modal", "2D mixture",
                  "zero convolutions", "DiT-XL/2 CFG, 25 steps", "fresh DiT block, AdaLN-zero vs default init"):
        assert by_label[label].ok, (label, by_label[label].message)
    assert not by_label["depth (MiDaS)"].ok and "dpt_hybrid" in by_label["depth (MiDaS)"].message
    assert all("Traceback" not in r.message for r in rows)
    summary = write_report(rows, profile, tmp_path)
    assert summary.startswith(f"gpu check: {sum(r.ok for r in rows)}/{len(PLAN)} requests ok on CPU (cpu float32)")
    assert summary.endswith("over their ZeroGPU budget")
    gpu_work = {t.spec.api_name for t in all_tasks() if t.spec.cost is not None}  # the 2D tabs are CPU work: no budget
    assert {"/playground", "/p_uncond"}.isdisjoint(gpu_work)
    assert all(r.budget_s >= 10 if r.endpoint in gpu_work else r.budget_s == 0 for r in rows if r.ok)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert len(report["rows"]) == len(PLAN) and report["model_dtypes"]
    assert "/work/" not in (tmp_path / "gpu_check.md").read_text()


def test_the_transformer_roles_rows_run_quick_on_tiny_models_in_their_real_layouts(tiny_sd_folder, tmp_path,
                                                                                     monkeypatch):
    """The plan's PixArt-Σ and SD3.5 Medium rows (text to image, and joint attention counted and measured), at their
    cheapest, on tiny random models written in the real repos' layouts (testing/tiny_pixart.py, testing/tiny_sd3.py):
    they run, and each asks ZeroGPU for at least its start-up share."""
    import scripts.tools.gpu_check as check
    from testing.tiny_pixart import build_tiny_pixart
    from testing.tiny_sd3 import build_tiny_sd3

    transformer, base = build_tiny_pixart(tmp_path / "pixart")
    profile_path = tmp_path / "transformers.toml"
    profile_path.write_text(
        f'sd = "{tiny_sd_folder}"\npixart = {{ source = "{transformer}", base = "{base}" }}\n'
        f'flow = "{build_tiny_sd3(tmp_path / "sd35")}"\n[limits]\nmax_pixels = 16384\nmax_steps = 10\n')
    rows = [row for row in PLAN if row[2].get("model") in ("pixart", "flow")]
    assert {row[2]["model"] for row in rows} == {"pixart", "flow"} and len(rows) == 4
    assert {row[2].get("guidance", "cfg") for row in rows if row[0] == "/text_to_image"} == {"cfg", "cfg-zero-star"}
    monkeypatch.setattr(check, "PLAN", rows)
    results = run_plan(load_profile(str(profile_path)), quick=True)
    assert all(r.ok for r in results), [(r.label, r.message) for r in results if not r.ok]
    assert all(r.budget_s >= 10 for r in results)


def test_exit_code_says_whether_everything_ran(tmp_path, monkeypatch):
    import scripts.tools.gpu_check as check

    monkeypatch.setattr(check, "PLAN", [("/playground", "2D mixture", dict(steps=5, num_samples=10, seed=0))])
    assert main(["--profile", "toy", "--out", str(tmp_path)]) == 0
    monkeypatch.setattr(check, "PLAN", [("/playground", "bad", dict(steps=0))])
    assert main(["--profile", "toy", "--out", str(tmp_path)]) == 1
