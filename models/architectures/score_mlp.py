"""A small class-conditional ε-network for the 2D mixture, with a null class (label dropout), and its loader.

``ScoreMLP(x_t, t, label)`` predicts the noise of the playground's forward process. ``label`` is a class index or
``null_label`` (= ``num_classes``): one network, two branches, as classifier-free guidance trains them. The networks
trained with label dropout p ∈ {0, …, 1} (``scripts/train/puncond_2d.py``) are shipped in ``assets/toy/puncond/``
(one ``p{p}_seed{seed}.safetensors`` each and ``train.json``); they are profile-independent, like the playground.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import Tensor, nn

from guidance.sampler import ModelCall
from models.cache import cached
from models.loading.sd import ModelUnavailable
from models.profiles import ROOT

PUNCOND_DIR = ROOT / "assets" / "toy" / "puncond"
TRAIN_RECORD = "train.json"
MAKE_THEM = "python -m scripts.train.puncond_2d"


@dataclass(frozen=True)
class ScoreMLPConfig:
    num_classes: int = 3
    hidden: int = 64
    depth: int = 3  # hidden layers
    time_frequencies: int = 16  # sinusoidal features of t: 2 × this many inputs
    class_dim: int = 16
    num_train_timesteps: int = 1000

    @property
    def null_label(self) -> int:
        return self.num_classes


class ScoreMLP(nn.Module):
    """ε(x_t, t, c): [x, sinusoidal(t), embedding(c)] through ``depth`` SiLU layers.

    The class embedding has ``num_classes + 1`` rows; the last is the null class. A row that no training batch
    ever used keeps its random initial value: that is how p = 0 leaves the unconditional branch untrained and
    p = 1 the conditional one (Adam without weight decay moves only rows that received gradients).
    """

    def __init__(self, config: ScoreMLPConfig):
        super().__init__()
        self.config = config
        freqs = torch.exp(torch.linspace(0.0, math.log(1000.0), config.time_frequencies))
        self.register_buffer("frequencies", freqs, persistent=False)  # a function of the config, not a weight
        self.class_embedding = nn.Embedding(config.num_classes + 1, config.class_dim)
        width = 2 + 2 * config.time_frequencies + config.class_dim
        layers: list[nn.Module] = []
        for _ in range(config.depth):
            layers += [nn.Linear(width, config.hidden), nn.SiLU()]
            width = config.hidden
        layers.append(nn.Linear(width, 2))
        self.mlp = nn.Sequential(*layers)

    def time_features(self, t: Tensor) -> Tensor:
        phase = (t.float() / self.config.num_train_timesteps)[:, None] * self.frequencies[None]
        return torch.cat([phase.sin(), phase.cos()], dim=1)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor) -> Tensor:
        t = t.expand(x.shape[0]) if t.ndim == 0 or t.numel() == 1 else t
        h = torch.cat([x.float(), self.time_features(t.reshape(-1)), self.class_embedding(labels)], dim=1)
        return self.mlp(h)


class LearnedScoreDenoiser:
    """A :class:`ScoreMLP` for the one sampler loop, with the interface of ``models.architectures.gmm2d.GMMDenoiser``:
    ``"uncond"`` rows get the null class, ``"cond"`` rows ``label``; the output has the input's dtype."""

    def __init__(self, net: ScoreMLP, label: int):
        if not 0 <= label < net.config.num_classes:
            raise ValueError(f"label must be a class index below {net.config.num_classes}; got {label!r}")
        self.net, self.label = net, label

    def branch_labels(self, call: ModelCall, rows_per_branch: int) -> Tensor:
        per_branch = []
        for branch in call.branches:
            if branch not in ("uncond", "cond"):
                raise ValueError(f"the learned 2D network has no {branch!r} evaluation (CFG only)")
            value = self.net.config.null_label if branch == "uncond" else self.label
            per_branch.append(torch.full((rows_per_branch,), value, dtype=torch.long))
        return torch.cat(per_branch)

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        labels = self.branch_labels(call, x.shape[0] // len(call.branches))
        return self.net(x, torch.as_tensor(t), labels).to(x.dtype)


def weights_name(p_uncond: float, seed: int) -> str:
    return f"p{p_uncond:g}_seed{seed}.safetensors"


@dataclass(frozen=True)
class PuncondRecord:
    """What ``train.json`` says: the architecture, the trained dropout values and seeds, and how they were trained."""

    config: ScoreMLPConfig
    p_values: tuple[float, ...]
    seeds: tuple[int, ...]
    training: dict

    @classmethod
    def read(cls, folder: Path = PUNCOND_DIR) -> PuncondRecord:
        path = Path(folder) / TRAIN_RECORD
        if not path.is_file():
            raise ModelUnavailable(f"the p_uncond networks are missing ({portable_name(path)}); "
                                   f"make them with `{MAKE_THEM}` (about a minute on a CPU)")
        record = json.loads(path.read_text())
        return cls(ScoreMLPConfig(**record["config"]), tuple(float(p) for p in record["p_values"]),
                   tuple(int(s) for s in record["seeds"]), record.get("training", {}))

    def as_json(self) -> dict:
        return {"config": asdict(self.config), "p_values": list(self.p_values), "seeds": list(self.seeds),
                "training": self.training}


def portable_name(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return Path(path).name


def load_puncond_net(p_uncond: float, seed: int = 0, folder: Path = PUNCOND_DIR) -> ScoreMLP:
    """The shipped network trained with label dropout ``p_uncond`` and training seed ``seed``; strict keys and shapes,
    cached per process."""
    record = PuncondRecord.read(folder)
    if float(p_uncond) not in record.p_values or int(seed) not in record.seeds:
        raise ModelUnavailable(f"no network for p_uncond={p_uncond:g}, seed={seed}: trained are p_uncond ∈ "
                               f"{{{', '.join(f'{p:g}' for p in record.p_values)}}}, seeds {list(record.seeds)}")
    path = Path(folder) / weights_name(float(p_uncond), int(seed))

    def build() -> ScoreMLP:
        if not path.is_file():
            raise ModelUnavailable(f"{portable_name(path)} is missing; make it with `{MAKE_THEM}`")
        net = ScoreMLP(record.config)
        try:
            net.load_state_dict(load_file(str(path)), strict=True)
        except RuntimeError as e:
            raise ModelUnavailable(f"{portable_name(path)} does not match train.json's architecture: "
                                   f"{str(e)[:300]}") from None
        return net.eval().requires_grad_(False)

    return cached(("puncond_mlp", str(path.resolve()), path.stat().st_mtime if path.is_file() else 0.0), build)
