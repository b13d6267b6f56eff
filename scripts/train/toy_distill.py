"""Guidance distillation of the toy text-to-image UNet: a student that takes the guidance scale w as a condition and
reproduces the teacher's CFG prediction in one model call per step.

    nice -n 10 .venv/bin/python -m scripts.train.toy_distill --bf16 --threads 1 --steps 4000
    .venv/bin/python -m scripts.train.toy_distill --export-only        # export the EMA of the last checkpoint

Meng et al. 2023, "On Distillation of Guided Diffusion Models", stage one: the teacher (``assets/toy/sd``, frozen)
gives v̂_w = v̂(x_t, ∅) + w (v̂(x_t, c) − v̂(x_t, ∅)) — CFG on v is CFG on ε, an affine map of it — and the student
v̂_s(x_t, c, w) learns it with w drawn per sample from [W_MIN, W_MAX]. The student is the teacher's
``UNet2DConditionModel`` with a ``class_embedding`` of diffusers' "timestep" kind: w·EMBEDDING_SCALE goes through the
same sinusoidal projection as the timestep and a small MLP, and is **added to the timestep embedding**, so it reaches
every ResNet block's scale and shift (FLUX.1-dev's "guidance embedding" is the same idea). The student starts as the
teacher (its weights, the new embedding's output layer at zero: at the start it predicts v̂(x_t, c) for every w), so
the distillation only has to learn what w changes. The loss is weighted by 1/(1 + w)², so large-w targets, which
grow with w, do not drown the small ones.

Writes ``assets/toy/distilled/`` in the SD layout of the teacher (``unet/`` fp16, ``scheduler/``, the teacher's
``text_encoder/`` and ``tokenizer/``, ``model_index.json``) plus ``guidance.json`` (the w range it was trained on and
the embedding scale, which the app reads) and ``train.json``. Checkpoints go to ``.toy_runs/distill`` every 250 steps;
a rerun resumes from them.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time

import numpy as np
import torch
from diffusers import DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

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
)
from scripts.train.toy_unet import SCHEDULER_CONFIG, encode_text

TEACHER = ASSETS / "sd"
STUDENT = ASSETS / "distilled"
CKPT = RUNS / "distill"
W_MIN, W_MAX = 1.0, 12.0
EMBEDDING_SCALE = 80.0  # w ∈ [1, 12] → 80…960, the range of timesteps the sinusoidal projection was built for


def build_student(teacher: UNet2DConditionModel) -> UNet2DConditionModel:
    """The teacher's architecture plus a timestep-kind class embedding for w, initialised to add nothing."""
    config = {**teacher.config, "class_embed_type": "timestep"}
    student = UNet2DConditionModel(**{k: v for k, v in config.items() if not k.startswith("_")})
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("class_embedding.") for k in missing), (missing, unexpected)
    torch.nn.init.zeros_(student.class_embedding.linear_2.weight)
    torch.nn.init.zeros_(student.class_embedding.linear_2.bias)
    return student


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (2× faster on CPUs with native bf16)")
    ap.add_argument("--export-only", action="store_true", help="export the EMA of the last checkpoint and stop")
    args = ap.parse_args()
    setup(args.seed, args.threads)

    teacher = UNet2DConditionModel.from_pretrained(TEACHER, subfolder="unet", torch_dtype=torch.float32).eval()
    teacher.requires_grad_(False)
    student = build_student(teacher)
    n_params = sum(p.numel() for p in student.parameters())
    opt = torch.optim.AdamW(student.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMA(student, args.ema)
    gen = torch.Generator().manual_seed(args.seed)
    step, seconds = 0, 0.0
    if (ck := load_checkpoint(CKPT)) is not None:
        groups, meta = ck
        student.load_state_dict(groups["model"])
        ema.shadow = {k: v.float() for k, v in groups["ema"].items()}
        load_optimizer_state(opt, groups["opt"])
        gen.set_state(groups["rng"]["gen"])
        step, seconds = meta["step"], meta["seconds"]
        print(f"resumed at step {step} ({seconds / 60:.1f} min trained)")
    if args.export_only:
        export(student, ema, step, seconds, n_params, args)
        return
    print(f"student parameters: {n_params:,} (the teacher's plus the w embedding)")

    # The teacher's own training pool and text states: the student learns the teacher on the teacher's world.
    pool = data_pool(60000, seed=2000 + args.seed, p_two=0.3, p_plain=0.5)
    captions = [str(c) for c in pool["captions"]]
    uniq = sorted(set(captions))
    cap_ids = torch.tensor([{c: i for i, c in enumerate(uniq)}[c] for c in captions])
    cache = RUNS / f"distill_cond_{args.seed}.safetensors"
    if cache.exists():
        enc = load_file(str(cache))
    else:
        tok = CLIPTokenizer.from_pretrained(TEACHER / "tokenizer")
        text = CLIPTextModel.from_pretrained(TEACHER / "text_encoder").eval()
        enc = {"text_states": encode_text(uniq, tok, text), "null_text": encode_text([""], tok, text)[0]}
        save_file({k: v.contiguous() for k, v in enc.items()}, str(cache))
    pixels = images_to_tensor(pool["images"])
    alphas = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items()
                              if k not in ("set_alpha_to_one", "steps_offset")}).alphas_cumprod

    def lr_at(s: int) -> float:
        warm = min(1.0, (s + 1) / 100)
        return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * min(1.0, s / args.steps))))

    def save() -> None:
        save_checkpoint(CKPT, {"model": student.state_dict(), "ema": ema.shadow, "opt": optimizer_state_tensors(opt),
                               "rng": {"gen": gen.get_state()}},
                        {"step": step, "seconds": seconds, "params": n_params, "batch": args.batch})

    bar = tqdm(total=args.steps, initial=step, desc="distill")
    student.train()
    last = time.time()
    while step < args.steps:
        idx = torch.randint(len(captions), (args.batch,), generator=gen)
        x0 = pixels[idx]
        states = enc["text_states"][cap_ids[idx]]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        w = W_MIN + (W_MAX - W_MIN) * torch.rand(args.batch, generator=gen)
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            both = teacher(torch.cat([x_t, x_t]), torch.cat([t, t]),
                           encoder_hidden_states=torch.cat([enc["null_text"].expand_as(states), states])).sample
        v_uncond, v_cond = both.float().chunk(2)
        target = v_uncond + w.view(-1, 1, 1, 1) * (v_cond - v_uncond)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred = student(x_t, t, encoder_hidden_states=states, class_labels=w * EMBEDDING_SCALE).sample
        weight = 1.0 / (1.0 + w.view(-1, 1, 1, 1)) ** 2
        loss = (weight * (pred.float() - target) ** 2).mean() / weight.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
        opt.step()
        ema.update(student, step)
        step += 1
        now = time.time()
        seconds += now - last
        last = now
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", min=f"{seconds / 60:.1f}")
        if step % 250 == 0:
            save()
            last = time.time()
    bar.close()
    save()
    export(student, ema, step, seconds, n_params, args)


def export(student: UNet2DConditionModel, ema: EMA, step: int, seconds: float, n_params: int,
           args: argparse.Namespace) -> None:
    ema.copy_to(student)
    student.to(torch.float16).save_pretrained(STUDENT / "unet")
    student.to(torch.float32)
    for part in ("scheduler", "text_encoder", "tokenizer"):
        shutil.copytree(TEACHER / part, STUDENT / part, dirs_exist_ok=True)
    index = json.loads((TEACHER / "model_index.json").read_text())
    index.update(image_encoder=[None, None], feature_extractor=[None, None])
    (STUDENT / "model_index.json").write_text(json.dumps(index, indent=2))
    (STUDENT / "guidance.json").write_text(json.dumps(
        {"w_min": W_MIN, "w_max": W_MAX, "embedding_scale": EMBEDDING_SCALE, "teacher": "sd"}, indent=1))
    info = {"steps": step, "seconds": round(seconds, 1), "params": n_params, "batch": args.batch, "lr": args.lr,
            "ema": args.ema, "w_range": [W_MIN, W_MAX], "loss_weight": "1/(1+w)^2", "init": "the teacher",
            "bf16_autocast": args.bf16}
    (STUDENT / "train.json").write_text(json.dumps(info, indent=1))
    print(f"exported the EMA student after {step} steps, {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
