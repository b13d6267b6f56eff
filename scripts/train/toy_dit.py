"""Train the toy profile's class-conditional DiT (AdaLN-zero) on the shapes world's 24 (colour, shape) classes.

    nice -n 5 .venv/bin/python -m scripts.train.toy_dit --bf16 --minutes 110 --steps 16000
    .venv/bin/python -m scripts.train.toy_dit --export-only      # export the EMA of the last checkpoint
    # warm start: continue from a shipped DiT with a fresh optimiser, exporting elsewhere until it is evaluated
    .venv/bin/python -m scripts.train.toy_dit --bf16 --init-from assets/toy/dit --lr 2e-4 --minutes 90 \
        --run-dir .toy_runs/dit_ft --out .toy_runs/dit_ft_export

Writes ``assets/toy/dit/{transformer,scheduler}`` and ``model_index.json`` in diffusers' ``DiTPipeline`` layout
(no VAE: pixel space, ``id2label`` in the index as in ``facebook/DiT-XL-2-256``). Checkpoints go to
``.toy_runs/dit`` every 250 steps and a rerun resumes from them (same data, generator state, optimiser).

The model is diffusers' ``DiTTransformer2DModel`` (``norm_type="ada_norm_zero"``), 32×32×3 pixels in patches of 4
(64 tokens), 6 blocks of 5 heads × 32. Two things differ from what diffusers does by default, both as in the DiT
paper (Peebles & Xie 2023, §3.2 and the released training code):

* **AdaLN-zero init.** Every block's modulation (``norm1.linear``) and the final layer (``proj_out_1``,
  ``proj_out_2``) start at zero, so each block begins as the identity and the network outputs 0; diffusers
  initialises them like any other linear layer.
* **Label dropout once per sample.** In training mode diffusers' ``LabelEmbedding`` drops labels by itself,
  independently in every block's AdaLN embedding (each block has its own), so one sample would see its class in
  some blocks and the null class in others. Here that dropout is switched off and a sample's label is replaced by
  the null class (index 24) with probability ``P_UNCOND`` before the forward pass: all blocks agree.

It predicts v (as the toy UNet does: the world's dark backgrounds make an ε-model's x̂0 tinted noise at high t).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, DiTTransformer2DModel
from diffusers.models.embeddings import LabelEmbedding
from tqdm import tqdm

from condition.shapes_world import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from scripts.shared.training import (
    ASSETS,
    EMA,
    RUNS,
    data_pool,
    images_to_tensor,
    load_checkpoint,
    load_optimizer_state,
    optimizer_state_tensors,
    save_checkpoint,
    setup,
    training_target,
)

DIT = ASSETS / "dit"
CKPT = RUNS / "dit"
# The same share as the toy UNet's caption dropout: on a short CPU budget the null branch CFG subtracts needs its
# share of updates (issue 17's p_uncond experiment measures what other shares do, in the 2D world).
P_UNCOND = 0.2
NULL_CLASS = NUM_CLASSES  # diffusers' LabelEmbedding keeps the null class as the last row of its table

# DDPM's linear schedule; clip_sample=False: DDIM built with clip_sample=True clips x̂0 but keeps the unclipped
# noise estimate, which at w = 4 turns v-prediction samples into complementary-colour noise (issue 17's trap).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    prediction_type="v_prediction",
    clip_sample=False,
    set_alpha_to_one=True,
    steps_offset=0,
    timestep_spacing="trailing",
)

DIT_CONFIG = dict(
    num_attention_heads=5,
    attention_head_dim=32,
    in_channels=3,
    out_channels=3,
    num_layers=6,
    sample_size=IMAGE_SIZE,
    patch_size=4,
    num_embeds_ada_norm=NUM_CLASSES,
    norm_type="ada_norm_zero",
    dropout=0.0,
)


def build_dit() -> DiTTransformer2DModel:
    """A fresh toy DiT with the paper's initialisation and diffusers' per-block label dropout switched off."""
    model = DiTTransformer2DModel(**DIT_CONFIG)
    adaln_zero_init(model)
    for module in model.modules():
        if isinstance(module, LabelEmbedding):
            # Keeps the null row in the table (built with dropout_prob > 0) but never drops by itself.
            module.dropout_prob = 0.0
    return model


def adaln_zero_init(model: DiTTransformer2DModel) -> None:
    """Xavier-uniform linear layers, N(0, 0.02) embeddings, then zero modulation and output layers (DiT §3.2)."""
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                torch.nn.init.zeros_(module.bias)
        elif isinstance(module, torch.nn.Embedding):
            torch.nn.init.normal_(module.weight, std=0.02)
    for block in model.transformer_blocks:
        torch.nn.init.zeros_(block.norm1.linear.weight)
        torch.nn.init.zeros_(block.norm1.linear.bias)
    for layer in (model.proj_out_1, model.proj_out_2):
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)


def write_pipeline_files(folder: Path = DIT) -> None:
    """Scheduler and a ``DiTPipeline`` model index with ``id2label``; no VAE (pixel space)."""
    import diffusers

    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    index = {
        "_class_name": "DiTPipeline",
        "_diffusers_version": diffusers.__version__,
        "transformer": ["diffusers", "DiTTransformer2DModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "vae": [None, None],
        "id2label": {str(i): name for i, name in enumerate(CLASS_NAMES)},
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16000, help="schedule length (lr decay)")
    ap.add_argument("--minutes", type=float, default=110.0, help="stop and export after this much training time")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (2× faster on CPUs with native bf16)")
    ap.add_argument("--export-only", action="store_true", help="export the EMA of the last checkpoint and stop")
    ap.add_argument("--init-from", type=Path, help="warm start from an exported DiT folder (fresh optimiser)")
    ap.add_argument("--run-dir", type=Path, default=CKPT, help="checkpoint folder (resumed when present)")
    ap.add_argument("--out", type=Path, default=DIT, help="export folder")
    args = ap.parse_args()
    setup(args.seed, args.threads)

    model = build_dit()
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMA(model, args.ema)
    gen = torch.Generator().manual_seed(args.seed)
    step, trained_seconds = 0, 0.0
    before = {"steps": 0, "seconds": 0.0}
    if args.init_from is not None:
        warm = DiTTransformer2DModel.from_pretrained(args.init_from, subfolder="transformer",
                                                     torch_dtype=torch.float32)
        model.load_state_dict(warm.state_dict())
        ema = EMA(model, args.ema)
        info = json.loads((args.init_from / "train.json").read_text())
        before = {"steps": info["steps"] + info.get("warm_start", {}).get("steps", 0),
                  "seconds": info["seconds"] + info.get("warm_start", {}).get("seconds", 0.0)}
        print(f"warm start from {args.init_from.name}/ ({before['steps']} steps trained before)")
    if (ck := load_checkpoint(args.run_dir)) is not None:
        groups, meta = ck
        model.load_state_dict(groups["model"])
        ema.shadow = {k: v.float() for k, v in groups["ema"].items()}
        load_optimizer_state(opt, groups["opt"])
        gen.set_state(groups["rng"]["gen"])
        step, trained_seconds = meta["step"], meta["seconds"]
        print(f"resumed at step {step} ({trained_seconds / 60:.1f} min trained)")
    if args.export_only:
        export(model, ema, step, trained_seconds, n_params, args, before)
        return
    print(f"DiT parameters: {n_params:,}")

    pool = data_pool(60000, seed=7000 + args.seed, p_two=0.0, p_plain=1.0)
    pixels = images_to_tensor(pool["images"])
    labels = torch.from_numpy(pool["labels"]).long()
    noise_sched = DDPMScheduler(
        **{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")}
    )
    alphas = noise_sched.alphas_cumprod

    def lr_at(s: int) -> float:
        progress = min(1.0, max(s / args.steps, trained_seconds / (args.minutes * 60)))
        warm = min(1.0, (s + 1) / 300)
        return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))

    def save() -> None:
        save_checkpoint(
            args.run_dir,
            {"model": model.state_dict(), "ema": ema.shadow, "opt": optimizer_state_tensors(opt),
             "rng": {"gen": gen.get_state()}},
            {"step": step, "seconds": trained_seconds, "params": n_params, "batch": args.batch,
             "p_uncond": P_UNCOND, "warm_start": before},
        )

    bar = tqdm(total=args.steps, initial=step, desc="dit")
    model.train()
    t_last = time.time()
    while step < args.steps and trained_seconds < args.minutes * 60:
        idx = torch.randint(len(labels), (args.batch,), generator=gen)
        x0, y = pixels[idx], labels[idx].clone()
        y[torch.rand(args.batch, generator=gen) < P_UNCOND] = NULL_CLASS
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred = model(x_t, timestep=t, class_labels=y).sample
        loss = F.mse_loss(pred.float(), training_target(noise_sched, x0, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema.update(model, step)
        step += 1
        now = time.time()
        trained_seconds += now - t_last
        t_last = now
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", min=f"{trained_seconds / 60:.1f}")
        if step % 250 == 0:
            save()
            t_last = time.time()
    bar.close()
    save()
    export(model, ema, step, trained_seconds, n_params, args, before)


def export(model: DiTTransformer2DModel, ema: EMA, step: int, seconds: float, n_params: int,
           args: argparse.Namespace, before: dict) -> None:
    ema.copy_to(model)
    # float16 on disk (6.6 MB, under the Space's 8 MiB per-file budget without LFS); loaders upcast.
    model.to(torch.float16).save_pretrained(args.out / "transformer")
    model.to(torch.float32)
    write_pipeline_files(args.out)
    info = {"steps": step, "seconds": round(seconds, 1), "params": n_params, "batch": args.batch, "ema": args.ema,
            "lr": args.lr, "p_uncond": P_UNCOND, "prediction_type": SCHEDULER_CONFIG["prediction_type"],
            "bf16_autocast": args.bf16, "adaln_zero_init": True, "label_dropout": "once per sample"}
    if before["steps"]:
        info["warm_start"] = before  # steps and seconds of the run(s) this one continued
    (args.out / "train.json").write_text(json.dumps(info, indent=1))
    print(f"exported EMA DiT after {step} steps, {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
