"""Train the toy profile's two ADM classifiers over the 24 (colour, shape) classes.

    nice -n 10 .venv/bin/python -m scripts.train.toy_classifiers --kind clean
    nice -n 10 .venv/bin/python -m scripts.train.toy_classifiers --kind noise_aware \
        --init assets/toy/classifier_clean --lr 5e-4 --steps 4000 --batch 64

Both are ``models.architectures.adm.create_classifier(**FLAGS)``. The noise-aware one sees x_t of the toy
DDPM schedule (linear β, 1000 steps) at uniformly drawn t and gets that original-scale t; the
clean one sees clean images with t = 0, which is how it must be called. Writes
``assets/toy/classifier_{kind}/{model.safetensors,flags.json,classes.json}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from condition.shapes_world import CLASS_NAMES, make_batch
from models.architectures.adm import create_classifier
from scripts.shared.training import (
    ASSETS,
    RUNS,
    data_pool,
    images_to_tensor,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state_tensors,
    save_checkpoint,
    setup,
)
from scripts.train.toy_unet import SCHEDULER_CONFIG

FLAGS = dict(
    image_size=32,
    num_classes=len(CLASS_NAMES),
    classifier_width=32,
    classifier_depth=1,
    classifier_channel_mult="1,2,2",
    classifier_attention_resolutions="8",
    classifier_num_head_channels=32,
    classifier_use_scale_shift_norm=True,
    classifier_resblock_updown=False,  # strided-conv downsampling: a third cheaper on CPU
    classifier_pool="attention",
    classifier_use_fp16=False,
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", choices=("noise_aware", "clean"), required=True)
    ap.add_argument("--steps", type=int, default=None, help="default 1500 noise-aware, 400 clean")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--init", type=str, default=None, help="start from a trained classifier folder, e.g. the clean one")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    steps = args.steps or (1500 if args.kind == "noise_aware" else 400)
    setup(args.seed, args.threads)
    pool = data_pool(30000, seed=5000 + args.seed, p_two=0.0, p_plain=1.0)
    x_all = images_to_tensor(pool["images"])
    y_all = torch.from_numpy(pool["labels"])
    alphas = DDPMScheduler(
        **{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")}
    ).alphas_cumprod

    model = create_classifier(**FLAGS)
    if args.init:
        # Trained from scratch on x_t at uniform t, the noise-aware classifier learns colour long before
        # shape; starting from the clean classifier's features gets it to shape within the step budget.
        model.load_state_dict(load_file(str(Path(args.init) / "model.safetensors")))
    n_params = sum(p.numel() for p in model.parameters())
    print(f"{args.kind} classifier parameters: {n_params:,}")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps, pct_start=0.05)
    gen = torch.Generator().manual_seed(args.seed)
    ckpt_dir = RUNS / f"classifier_{args.kind}"
    start = 0
    if (ck := load_checkpoint(ckpt_dir)) is not None and ck[1]["steps"] == steps:
        model.load_state_dict(ck[0]["model"])
        load_optimizer_state(opt, ck[0]["opt"])
        gen.set_state(ck[0]["rng"]["gen"])
        start = ck[1]["step"]
        for _ in range(start):
            sched.step()
        print(f"resumed at step {start}")
    model.train()
    t0 = time.time()
    bar = tqdm(range(start, steps), desc=args.kind)
    for step in bar:
        idx = torch.randint(len(x_all), (args.batch,), generator=gen)
        x, y = x_all[idx], y_all[idx]
        if args.kind == "noise_aware":
            t = torch.randint(0, 1000, (args.batch,), generator=gen)
            a = alphas[t].view(-1, 1, 1, 1)
            x = a.sqrt() * x + (1 - a).sqrt() * torch.randn(x.shape, generator=gen)
        else:
            t = torch.zeros(args.batch, dtype=torch.long)
        loss = F.cross_entropy(model(x, t), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % 250 == 0:
            save_checkpoint(
                ckpt_dir,
                {"model": model.state_dict(), "opt": optimizer_state_tensors(opt), "rng": {"gen": gen.get_state()}},
                {"step": step + 1, "steps": steps},
            )
    elapsed = time.time() - t0
    model.eval()
    report = evaluate(model, alphas, args.kind)
    out = ASSETS / f"classifier_{args.kind}"
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    (out / "flags.json").write_text(json.dumps(FLAGS, indent=2))
    (out / "classes.json").write_text(json.dumps(list(CLASS_NAMES), indent=2))
    info = {"steps": steps, "seconds": elapsed, "params": n_params, "batch": args.batch, "init": args.init, **report}
    (RUNS / f"classifier_{args.kind}_train.json").write_text(json.dumps(info))
    print(json.dumps(info))


@torch.no_grad()
def evaluate(model: torch.nn.Module, alphas: torch.Tensor, kind: str) -> dict[str, float]:
    """Held-out accuracy on clean images and on x_t at a few noise levels."""
    b = make_batch(480, seed=88, p_two=0.0)
    x0, y = images_to_tensor(b.images), torch.from_numpy(b.labels)
    gen = torch.Generator().manual_seed(0)
    out = {}
    for t_val in (0, 250, 500, 750, 900):
        a = alphas[t_val]
        x = a.sqrt() * x0 + (1 - a).sqrt() * torch.randn(x0.shape, generator=gen) if t_val else x0
        t_in = torch.full((len(y),), t_val if kind == "noise_aware" else 0)
        out[f"acc_t{t_val}"] = float((model(x, t_in).argmax(1) == y).float().mean())
    return out


if __name__ == "__main__":
    main()
