"""A guidance-distilled ε-network for the 2D mixture: ε̂(x_t, t, c, w) ≈ ε(x_t, t) + w (ε(x_t, t | c) − ε(x_t, t)).

Meng et al. 2023, "On Distillation of Guided Diffusion Models" (stage one): a student takes the guidance scale w as
one more condition and is trained to reproduce the teacher's classifier-free-guided prediction, so a guided step
costs ONE model evaluation instead of CFG's two (unconditional and conditional). In the paper w is embedded like
the timestep (a Fourier embedding) and added to the timestep embedding; here the same: sinusoidal features of t and
of w each go through a small MLP, the two embeddings and the class embedding are summed (as ADM adds its class
embedding to the timestep's) and the sum is projected into every hidden layer, so w conditions the whole network.

In the 2D playground the teacher is exact (``models.architectures.gmm2d``), so the student's target is the true
CFG ε of the mixture. ``scripts/train/distill_2d.py`` trains it over w ∈ [0, 12] together with a plain
class-conditional "teacher network" (a :class:`~models.architectures.score_mlp.ScoreMLP` trained with label dropout,
whose two-call CFG is the fair learned baseline); both are shipped in ``assets/toy/distill_2d/`` with ``train.json``.
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
from models.architectures.score_mlp import ScoreMLP, ScoreMLPConfig, portable_name
from models.cache import cached
from models.loading.sd import ModelUnavailable
from models.profiles import ROOT

DISTILL_DIR = ROOT / "assets" / "toy" / "distill_2d"
TRAIN_RECORD = "train.json"
STUDENT_WEIGHTS = "student.safetensors"
TEACHER_WEIGHTS = "teacher_net.safetensors"
MAKE_THEM = "python -m scripts.train.distill_2d"
W_MIN, W_MAX = 0.0, 12.0  # the guidance scales the student was trained on: outside them it was never taught


def check_guidance_scale(scale: float) -> float:
    """``scale`` as a float if the student was trained on it (w ∈ [0, 12]); a ValueError naming the range if not.

    A distilled student has only seen the scales it was trained over; beyond them its output is an extrapolation
    nobody measured, so it is refused rather than silently returned."""
    value = float(scale)
    if not W_MIN <= value <= W_MAX:  # also refuses NaN
        raise ValueError(f"guidance scale w must lie in [{W_MIN:g}, {W_MAX:g}] (the range the student was "
                         f"distilled on); got {scale!r}")
    return value


@dataclass(frozen=True)
class GuidedStudentConfig:
    num_classes: int = 3
    hidden: int = 128
    depth: int = 4  # hidden layers, each conditioned on the summed embedding
    time_frequencies: int = 16  # sinusoidal features of t: 2 × this many inputs
    scale_frequencies: int = 8  # sinusoidal features of w / w_max: 2 × this many inputs
    num_train_timesteps: int = 1000
    w_max: float = W_MAX


def sinusoidal(values: Tensor, frequencies: Tensor) -> Tensor:
    """[sin(v f_k), cos(v f_k)] for every row value v and frequency f_k: the transformer/DDPM timestep features."""
    phase = values.float()[:, None] * frequencies[None]
    return torch.cat([phase.sin(), phase.cos()], dim=1)


class GuidedStudent2D(nn.Module):
    """ε̂(x_t, t, c, w): a residual SiLU MLP on x_t whose every layer adds a projection of emb(t) + emb(w) + emb(c).

    ``emb(t)`` and ``emb(w)`` are two-layer MLPs of sinusoidal features (t / 1000 and w / w_max, frequencies 1 …
    1000 and 1 … 30: the low ones make the features nearly linear over the range, the high ones resolve it finely);
    ``emb(c)`` is a learned row per class. There is no null class: the student never needs the unconditional branch
    on its own, only the guided combination, which is the point of the distillation.
    """

    def __init__(self, config: GuidedStudentConfig):
        super().__init__()
        self.config = config
        width = config.hidden
        self.register_buffer("time_freqs", torch.exp(torch.linspace(0.0, math.log(1000.0), config.time_frequencies)),
                             persistent=False)  # functions of the config, not weights
        self.register_buffer("scale_freqs", torch.exp(torch.linspace(0.0, math.log(30.0), config.scale_frequencies)),
                             persistent=False)
        self.time_embedding = nn.Sequential(nn.Linear(2 * config.time_frequencies, width), nn.SiLU(),
                                            nn.Linear(width, width))
        self.scale_embedding = nn.Sequential(nn.Linear(2 * config.scale_frequencies, width), nn.SiLU(),
                                             nn.Linear(width, width))
        self.class_embedding = nn.Embedding(config.num_classes, width)
        self.input = nn.Linear(2, width)
        self.layers = nn.ModuleList(nn.Linear(width, width) for _ in range(config.depth))
        self.conditioning = nn.ModuleList(nn.Linear(width, width) for _ in range(config.depth))
        self.output = nn.Linear(width, 2)

    def embedding(self, t: Tensor, labels: Tensor, scale: Tensor) -> Tensor:
        """emb(t) + emb(w) + emb(c): w enters exactly as the timestep does, and is added to it (Meng et al. §4)."""
        time = self.time_embedding(sinusoidal(t / self.config.num_train_timesteps, self.time_freqs))
        guidance = self.scale_embedding(sinusoidal(scale / self.config.w_max, self.scale_freqs))
        return time + guidance + self.class_embedding(labels)

    def forward(self, x: Tensor, t: Tensor, labels: Tensor, scale: Tensor) -> Tensor:
        rows = x.shape[0]
        t, scale = (torch.as_tensor(v).reshape(-1).expand(rows) if torch.as_tensor(v).numel() == 1 else v
                    for v in (t, scale))
        emb = nn.functional.silu(self.embedding(t, labels, scale))
        h = self.input(x.float())
        for layer, project in zip(self.layers, self.conditioning, strict=True):
            # Residual: the deep stack starts near the identity, so conditioning on every layer trains stably.
            h = h + layer(nn.functional.silu(h + project(emb)))
        return self.output(nn.functional.silu(h))


class GuidedStudentDenoiser:
    """The student for the one sampler loop at a fixed class and guidance scale: ONE ``"cond"`` branch per step.

    Sample with the rule ``"none"`` (the conditional prediction alone): the student's single output already is the
    guided ε, so the loop must not combine branches again. Any other branch is refused, since asking the student for
    an unconditional prediction has no meaning (it was never trained to give one)."""

    def __init__(self, net: GuidedStudent2D, label: int, scale: float):
        if not 0 <= label < net.config.num_classes:
            raise ValueError(f"label must be a class index below {net.config.num_classes}; got {label!r}")
        self.net, self.label, self.scale = net, label, check_guidance_scale(scale)

    @torch.no_grad()
    def __call__(self, x: Tensor, t: Tensor, call: ModelCall) -> Tensor:
        if tuple(call.branches) != ("cond",):
            raise ValueError(f"the distilled student gives the guided ε in one call: sample it with rule 'none' "
                             f"(branches ('cond',)), not {tuple(call.branches)}")
        rows = x.shape[0]
        labels = torch.full((rows,), self.label, dtype=torch.long)
        scale = torch.full((rows,), self.scale, dtype=torch.float32)
        return self.net(x, torch.as_tensor(t), labels, scale).to(x.dtype)


@dataclass(frozen=True)
class DistillRecord:
    """What ``train.json`` says: both architectures, the label dropout of the teacher network, and the training."""

    student: GuidedStudentConfig
    teacher: ScoreMLPConfig
    p_uncond: float
    training: dict

    @classmethod
    def read(cls, folder: Path = DISTILL_DIR) -> DistillRecord:
        path = Path(folder) / TRAIN_RECORD
        if not path.is_file():
            raise ModelUnavailable(f"the distilled 2D networks are missing ({portable_name(path)}); "
                                   f"make them with `{MAKE_THEM}` (a few minutes on a CPU)")
        record = json.loads(path.read_text())
        return cls(GuidedStudentConfig(**record["student"]), ScoreMLPConfig(**record["teacher"]),
                   float(record["p_uncond"]), record.get("training", {}))

    def as_json(self) -> dict:
        return {"student": asdict(self.student), "teacher": asdict(self.teacher), "p_uncond": self.p_uncond,
                "training": self.training}


def _load(path: Path, module: nn.Module) -> nn.Module:
    """Strict keys and shapes: a file that does not match train.json's architecture is refused, not half-loaded."""
    if not path.is_file():
        raise ModelUnavailable(f"{portable_name(path)} is missing; make it with `{MAKE_THEM}`")
    try:
        module.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as e:
        raise ModelUnavailable(f"{portable_name(path)} does not match train.json's architecture: "
                               f"{str(e)[:300]}") from None
    return module.eval().requires_grad_(False)


def load_student(folder: Path = DISTILL_DIR) -> GuidedStudent2D:
    """The shipped distilled student, cached per process (keyed by the file's path and modification time)."""
    record = DistillRecord.read(folder)
    path = Path(folder) / STUDENT_WEIGHTS
    key = ("guided_student_2d", str(path.resolve()), path.stat().st_mtime if path.is_file() else 0.0)
    return cached(key, lambda: _load(path, GuidedStudent2D(record.student)))


def load_teacher_net(folder: Path = DISTILL_DIR) -> ScoreMLP:
    """The shipped class-conditional teacher network (label dropout ``record.p_uncond``), cached per process."""
    record = DistillRecord.read(folder)
    path = Path(folder) / TEACHER_WEIGHTS
    key = ("distill_teacher_2d", str(path.resolve()), path.stat().st_mtime if path.is_file() else 0.0)
    return cached(key, lambda: _load(path, ScoreMLP(record.teacher)))
