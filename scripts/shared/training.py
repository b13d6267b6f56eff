"""Shared pieces of the toy-profile training scripts: paths, seeding, data pools, EMA, checkpoints.

The scripts are run from the repository root as ``python -m scripts.<name>`` (see scripts/README.md).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from condition.shapes_world import make_batch

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets" / "toy"
RUNS = ROOT / ".toy_runs"
# Canny thresholds used for every control map the toy ControlNet was trained on.
CANNY_LOW, CANNY_HIGH = 100, 200


def setup(seed: int, threads: int = 2) -> None:
    """Seed every generator and cap torch at the two cores this machine has."""
    torch.set_num_threads(threads)
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def data_pool(n: int, seed: int, *, p_two: float = 0.3, p_plain: float = 0.5, canny: bool = False) -> dict:
    """A fixed pool of world samples, cached under .toy_runs so resumed runs see the same data."""
    RUNS.mkdir(parents=True, exist_ok=True)
    path = RUNS / f"pool_{n}_{seed}_{p_two}_{p_plain}{'_canny' if canny else ''}.npz"
    if path.exists():
        d = np.load(path, allow_pickle=False)
        return {k: d[k] for k in d.files}
    b = make_batch(n, seed, p_two=p_two, p_plain=p_plain)
    out = {"images": b.images, "captions": np.array(b.captions), "labels": b.labels}
    if canny:
        from condition.control import canny_map

        out["canny"] = np.stack([np.asarray(canny_map(im, CANNY_LOW, CANNY_HIGH))[..., 0] for im in b.images])
    np.savez(path, **out)
    return out


def features(out: object) -> torch.Tensor:
    """Projected features from CLIPModel.get_*_features (a tensor in transformers 4, an output object in 5)."""
    return out if torch.is_tensor(out) else out.pooler_output


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 [N,H,W,3] → float [N,3,H,W] in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def training_target(scheduler, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """What the UNet learns to predict under the scheduler's ``prediction_type``: ε, or v = √ᾱ ε − √(1−ᾱ) x0."""
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "v_prediction":
        return scheduler.get_velocity(x0, noise, t)
    raise ValueError(f"unsupported prediction_type {kind!r}")


class EMA:
    """Exponential moving average of a module's float parameters (kept in float32)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in module.state_dict().items()}

    @torch.no_grad()
    def update(self, module: torch.nn.Module, step: int) -> None:
        # Warm-up as in diffusers' EMAModel so early checkpoints are not dominated by init weights.
        d = min(self.decay, (1 + step) / (10 + step))
        for k, v in module.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].mul_(d).add_(v.detach().float(), alpha=1 - d)
            else:
                self.shadow[k].copy_(v)

    def copy_to(self, module: torch.nn.Module) -> None:
        module.load_state_dict({k: v.to(module.state_dict()[k].dtype) for k, v in self.shadow.items()})


def save_checkpoint(path: Path, tensors: dict[str, dict[str, torch.Tensor]], meta: dict) -> None:
    """Tensors as one safetensors file (prefixed by group), optimizer-free metadata as JSON."""
    path.mkdir(parents=True, exist_ok=True)
    flat = {f"{g}/{k}": v.detach().contiguous().cpu() for g, d in tensors.items() for k, v in d.items()}
    save_file(flat, str(path / "state.safetensors.tmp"))
    os.replace(path / "state.safetensors.tmp", path / "state.safetensors")
    (path / "meta.json").write_text(json.dumps(meta))


def load_checkpoint(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]], dict] | None:
    if not (path / "state.safetensors").exists():
        return None
    flat = load_file(str(path / "state.safetensors"))
    groups: dict[str, dict[str, torch.Tensor]] = {}
    for k, v in flat.items():
        g, name = k.split("/", 1)
        groups.setdefault(g, {})[name] = v
    return groups, json.loads((path / "meta.json").read_text())


def optimizer_state_tensors(opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """Adam moments flattened to named tensors so checkpoints stay safetensors-only."""
    out: dict[str, torch.Tensor] = {}
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        st = opt.state.get(p, {})
        for k, v in st.items():
            out[f"{i}.{k}"] = v if torch.is_tensor(v) else torch.tensor(v)
    return out


def load_optimizer_state(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    for key, v in tensors.items():
        i, k = key.split(".", 1)
        opt.state[params[int(i)]][k] = v.clone()
