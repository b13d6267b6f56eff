"""One-shot check of the full profile on a CUDA GPU: every tab once, in fp16, with time, memory and dtypes.

    HF_HUB_OFFLINE=1 HF_HOME=/path/to/hub-replica .venv/bin/python -m scripts.tools.gpu_check  # the replica
    .venv/bin/python -m scripts.tools.gpu_check                                                # the real weights
    .venv/bin/python -m scripts.tools.gpu_check --profile PATH --quick                         # tiny requests

Writes ``artifacts/gpu_check.json`` and ``artifacts/gpu_check.md`` (per request: seconds, peak
``torch.cuda.max_memory_allocated``, the dtype of every loaded model, warnings and notes) and prints one summary
line. Runs on the CPU too (memory then reads "n/a"), which is how its tests exercise it.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from models.cache import cached_items
from models.profiles import ROOT, Profile, load_profile, portable
from models.runtime import pick_runtime
from tasks import all_tasks
from tasks.spec import Task

PHOTO = str(ROOT / "assets" / "photos" / "astronaut.png")
CAT = str(ROOT / "assets" / "photos" / "chelsea.png")

# (endpoint, label, request): what a first visitor clicks, at each model's native size.
PLAN: list[tuple[str, str, dict]] = [
    ("/text_to_image", "CFG, 25 steps", dict(prompt="a photo of a red cat", steps=25, seed=0)),
    ("/text_to_image", "Perp-CFG + attention map", dict(prompt="a photo of a red cat", guidance="perp-cfg", steps=25,
                                                        seed=0, attention_token="red")),
    ("/text_to_image", "APG + PAG (3 model rows per image)", dict(prompt="a photo of a red cat", guidance="apg",
                                                                  pag_scale=3.0, steps=25, seed=0)),
    # The transformer roles at their native sizes and their model cards' settings: PixArt-Σ 512-MS with its repo's
    # DPM-Solver++ at w 4.5; SD3.5 Medium at 1024² with true CFG (two branches) at w 4.5, 28 steps (the pipeline's
    # default), and CFG-Zero*, whose paper evaluates on SD3/3.5.
    ("/text_to_image", "PixArt-Σ 512², CFG 4.5, DPM-Solver++ 20 steps",
     dict(prompt="a photo of a red cat", model="pixart", scale=4.5, scheduler="dpm++2m", steps=20, width=512,
          height=512, seed=0)),
    ("/text_to_image", "SD3.5 Medium 1024², CFG 4.5, 28 steps",
     dict(prompt="a photo of a red cat", model="flow", scale=4.5, steps=28, width=1024, height=1024, seed=0)),
    ("/text_to_image", "SD3.5 Medium 1024², CFG-Zero* 4.5, 28 steps",
     dict(prompt="a photo of a red cat", model="flow", guidance="cfg-zero-star", scale=4.5, steps=28, width=1024,
          height=1024, seed=0)),
    ("/guidance_sweep", "3 scales × 2 rules, 15 steps", dict(prompt="a photo of a red cat", scales="1, 5, 9",
                                                             steps=15, seed=0)),
    ("/controlnet", "canny", dict(image=PHOTO, control="canny", prompt="an astronaut", steps=20, seed=0)),
    ("/controlnet", "depth (MiDaS)", dict(image=PHOTO, control="depth", prompt="an astronaut", steps=20, seed=0)),
    ("/controlnet", "pose (OpenPose)", dict(image=PHOTO, control="pose", prompt="an astronaut", steps=20, seed=0)),
    ("/controlnet_multi", "canny + depth", dict(image=PHOTO, control_a="canny", control_b="depth",
                                                prompt="an astronaut", steps=20, seed=0)),
    ("/zero_conv", "zero convolutions", dict(seed=0)),
    ("/image_conditioning", "variations", dict(image=CAT, mode="variations", steps=25, seed=0)),
    ("/image_conditioning", "IP-Adapter", dict(image=CAT, mode="ip-adapter", prompt="a cat in space", steps=25,
                                               seed=0)),
    ("/image_conditioning", "cross-modal", dict(image=CAT, mode="cross-modal", prompt="a dog", mix=0.5, steps=25,
                                                seed=0)),
    ("/classifier_guidance", "64×64, ddim25, compare_clean", dict(model="64x64", steps="ddim25", seed=0,
                                                                  compare_clean=True)),
    ("/classifier_guidance", "256×256 uncond, ddim10", dict(model="256x256-uncond", steps="ddim10", seed=0)),
    ("/class_cfg", "DiT-XL/2 CFG, 25 steps", dict(class_name="golden retriever", scale=4.0, steps=25, seed=0)),
    ("/cg_vs_cfg", "ADM 256 classifier guidance vs DiT CFG", dict(class_name="golden retriever", steps=25, seed=0,
                                                                   num_images=1)),
    ("/playground", "2D mixture", dict(steps=200, seed=0)),
    ("/p_uncond", "learned vs exact CFG, p=0.1, w=3", dict(p_uncond=0.1, scale=3.0, steps=200, seed=0)),
    ("/attention_cost", "256/512/1024, measured", dict(resolutions="256, 512, 1024")),
    ("/attention_cost", "SD3.5 Medium joint attention 512/1024, measured", dict(model="flow",
                                                                                 resolutions="512, 1024")),
    ("/attention_binding", "two objects, 4 images, 25 steps", dict(prompt="a red cube and a blue sphere", num_images=4,
                                                                   steps=25, seed=0)),
    ("/adaln_zero", "fresh DiT block, AdaLN-zero vs default init", dict(seed=0)),
    # Refused with its reason while the profile names no distilled student (the full profile has none yet).
    ("/distill_compare", "CFG teacher vs distilled student, w 2/7, 25 steps", dict(prompt="a photo of a red cat",
                                                                                  scales="2, 7", steps=25, seed=0)),
]


@dataclass
class Row:
    endpoint: str
    label: str
    ok: bool
    seconds: float
    peak_memory_mib: float | None
    budget_s: int = 0  # the ZeroGPU duration this request would ask for (tasks' cost estimate)
    message: str = ""
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@contextmanager
def peak_memory() -> Iterator[dict]:
    out: dict = {"mib": None}
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    yield out
    if cuda:
        torch.cuda.synchronize()
        out["mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)


def loaded_dtypes() -> dict[str, list[str]]:
    """Every loaded model's parameter dtypes, by cache key."""
    found: dict[str, list[str]] = {}
    for key, obj in cached_items():
        modules = [v for v in vars(obj).values() if isinstance(v, torch.nn.Module)] if hasattr(obj, "__dict__") else []
        if isinstance(obj, torch.nn.Module):
            modules = [obj]
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for m in modules for p in m.parameters()})
        if dtypes:
            found[" / ".join(portable(str(k)) for k in key[:2])] = dtypes
    return found


def run_plan(profile: Profile, quick: bool = False) -> list[Row]:
    tasks: dict[str, Task] = {t.spec.api_name: t for t in all_tasks()}
    rows = []
    for api, label, request in tqdm(PLAN, desc="gpu check", unit="request"):
        endpoint = tasks[api].spec.bind(profile)
        if quick:  # the plan's request with every cost-setting field (steps, sizes, counts) at its cheapest
            request = {**request, **{f.name: f.quick for f in endpoint.fields
                                     if f.quick is not None and f.kind not in ("seed", "choice")}}
        with warnings.catch_warnings(record=True) as caught, peak_memory() as memory:
            warnings.simplefilter("always")
            start = time.perf_counter()
            try:
                result = tasks[api](profile, **request)
            except Exception as e:  # noqa: BLE001 - the report lists every failure; the check goes on
                rows.append(Row(api, label, False, time.perf_counter() - start, None,
                                message=f"{type(e).__name__}: {e}"))
                continue
            seconds = time.perf_counter() - start
        rows.append(Row(api, label, True, round(seconds, 2), memory["mib"], endpoint.gpu_seconds(result.params),
                        notes=result.notes,
                        warnings=sorted({str(w.message)[:200] for w in caught})))
    return rows


def write_report(rows: list[Row], profile: Profile, out: Path) -> str:
    runtime = pick_runtime()
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    ok = sum(r.ok for r in rows)
    peak = max((r.peak_memory_mib or 0.0) for r in rows)
    total = sum(r.seconds for r in rows)
    memory = f"peak {peak:.0f} MiB" if peak else "peak memory n/a"
    over = [r for r in rows if r.ok and r.seconds > r.budget_s]  # the ZeroGPU estimate would have cut these short
    summary = (f"gpu check: {ok}/{len(rows)} requests ok on {device} ({runtime.name}), profile {profile.name}, "
               f"{total:.0f} s, {memory}, {len(over)} over their ZeroGPU budget")
    out.mkdir(parents=True, exist_ok=True)
    report = {"summary": summary, "device": device, "runtime": runtime.name, "profile": profile.name,
              "torch": torch.__version__, "rows": [asdict(r) for r in rows], "model_dtypes": loaded_dtypes()}
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    lines = [f"# {summary}", "", "| endpoint | request | ok | s | ZeroGPU budget s | peak MiB | notes / error |",
             "|---|---|---|---:|---:|---:|---|"]
    for r in rows:
        detail = r.message or "; ".join(r.notes + r.warnings)
        lines.append(f"| `{r.endpoint}` | {r.label} | {'✓' if r.ok else '✗'} | {r.seconds:.1f} | {r.budget_s} | "
                     f"{r.peak_memory_mib if r.peak_memory_mib is not None else 'n/a'} | {detail[:300]} |")
    lines += ["", "| model | dtypes |", "|---|---|"]
    lines += [f"| {k} | {', '.join(v)} |" for k, v in report["model_dtypes"].items()]
    (out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="full")
    parser.add_argument("--quick", action="store_true", help="the cheapest valid request per plan entry")
    parser.add_argument("--out", default=str(ROOT / "artifacts"))
    args = parser.parse_args(argv)
    profile = load_profile(args.profile)
    rows = run_plan(profile, quick=args.quick)
    print(write_report(rows, profile, Path(args.out)))
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
