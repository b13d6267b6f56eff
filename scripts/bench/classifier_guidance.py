"""Classifier-guided vs unguided step time on the tiny golden ADM pair, against the cost model.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m scripts.bench.classifier_guidance    # ~1 min on 2 shared CPU cores

A guided step adds one classifier forward and backward to the UNet forward, so the expected ratio is
1 + cost(classifier fwd+bwd) / cost(UNet fwd). Both sides are measured here, each as the median of
several repeats, with the networks run exactly as the sampler loop runs them. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import torch

from guidance.sampler import ClassifierContext, classifier_gradient
from models.adapters.adm_sampling import ADMClassifierLogProb, adm_sampling_setup
from models.architectures.adm import create_classifier, create_model, load_adm_state_dict
from scripts.shared.bench import Row, interleaved_medians, markdown_table, run_header

GOLDEN = Path(__file__).resolve().parents[3] / "shared/golden/adm"
TINY_CLASSIFIER_OVERRIDES = dict(classifier_channel_mult="1,1,2", classifier_num_head_channels=32)


def _tiny(name: str) -> torch.nn.Module:
    flags = json.loads((GOLDEN / f"tiny_{name}.json").read_text())["flags"]
    net = create_classifier(**flags, **TINY_CLASSIFIER_OVERRIDES) if name == "classifier" else create_model(**flags)
    return load_adm_state_dict(net, GOLDEN / f"tiny_{name}.pt").eval().requires_grad_(False)


def measure_batch(
    unet: torch.nn.Module, classifier: torch.nn.Module, batch: int, steps: int, repeats: int, warmup: int = 1
) -> dict:
    """Per-step seconds: unguided and guided loop, UNet forward, classifier forward+backward."""
    y = torch.full((batch,), 7, dtype=torch.long)
    noise = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    respacing = f"ddim{steps}"

    def loop(guided: bool) -> Callable[[], object]:
        setup = adm_sampling_setup(unet, classifier if guided else None, y=y, classifier_scale=1.0,
                                   timestep_respacing=respacing, use_ddim=True)
        # diagnostics off: only the work a step must do is timed
        return lambda: setup.run(noise, generator=torch.Generator().manual_seed(1), diagnostics=False)

    x = noise.clone()
    t = torch.full((batch,), 500)
    log_prob = ADMClassifierLogProb(classifier, y, timestep_map=list(range(1000)))
    ctx = ClassifierContext(torch.tensor(0.5), torch.zeros_like(x), 0, 1)

    def unet_fwd() -> None:
        with torch.no_grad():
            for _ in range(steps):
                unet(x, t, y)

    def clf_fwd_bwd() -> None:
        for _ in range(steps):
            classifier_gradient(log_prob, x, torch.tensor(500), ctx)

    # Interleaved repeats: on a shared machine, load drifts; each quantity sees the same drift.
    jobs = {"unguided": loop(False), "guided": loop(True), "unet": unet_fwd, "clf": clf_fwd_bwd}
    medians = interleaved_medians(jobs, warmup, repeats, desc=f"classifier guidance, batch {batch}")
    return dict(batch=batch, **{k: v / steps for k, v in medians.items()})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4", help="comma-separated batch sizes")
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps per timed run")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the runner is shared)")
    return parser


def measure(args: argparse.Namespace) -> list[Row]:
    """One row per batch size: guided / unguided step time against 1 + cost(clf fwd+bwd) / cost(UNet fwd)."""
    torch.set_num_threads(args.threads)
    unet, classifier = _tiny("cond_diffusion"), _tiny("classifier")
    size = (f"UNet {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M, "
            f"classifier {sum(p.numel() for p in classifier.parameters()) / 1e6:.2f} M params")
    rows = []
    for b in args.batches.split(","):
        r = measure_batch(unet, classifier, int(b), args.steps, args.repeats, args.warmup)
        rows.append(Row(
            f"classifier-guided step / unguided step (tiny golden ADM pair, {size}, 32² px, batch {r['batch']}, "
            f"DDIM {args.steps})", f"{r['guided'] * 1e3:.1f} ms", f"{r['unguided'] * 1e3:.1f} ms",
            r["guided"] / r["unguided"],
            f"predicted 1 + clf/UNet = {1 + r['clf'] / r['unet']:.2f} (UNet fwd {r['unet'] * 1e3:.1f} ms, "
            f"classifier fwd+bwd {r['clf'] * 1e3:.1f} ms)"))
    return rows


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    rows = measure(args)
    print(f"{run_header(torch.get_num_threads())}\n\nCPU float32, median of {args.repeats} interleaved runs\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
