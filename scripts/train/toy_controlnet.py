"""Train the toy Canny ControlNet against the frozen toy UNet.

    nice -n 10 .venv/bin/python -m scripts.train.toy_controlnet --bf16 --minutes 30   # after train_toy_unet

``ControlNetModel.from_unet`` copies the UNet's encoder and mid block and adds zero convs; its
conditioning embedding has a single entry (``CONDITIONING_CHANNELS``) so it does not downsample,
because in pixel space the control map already has the sample's 32×32 resolution. Control maps
are ``condition.control.canny_map`` with thresholds ``CANNY_LOW``/``CANNY_HIGH`` (scripts/shared/training.py),
fed as RGB in [0, 1] as diffusers' ControlNet pipelines prepare them. The loss target follows the shipped
UNet's scheduler config (``prediction_type``). Writes ``assets/toy/controlnet_canny/``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from diffusers import ControlNetModel, DDPMScheduler, UNet2DConditionModel
from tqdm import tqdm
from transformers import CLIPTextModel, CLIPTokenizer

from scripts.shared.training import (
    ASSETS,
    CANNY_HIGH,
    CANNY_LOW,
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
from scripts.train.toy_unet import SD, encode_text

CONDITIONING_CHANNELS = (16,)
# As in the ControlNet paper: half the captions are emptied so the edges alone must carry the layout.
P_EMPTY_PROMPT = 0.5


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--minutes", type=float, default=12.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.995)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (CPUs with native bf16 only)")
    args = ap.parse_args()
    setup(args.seed, args.threads)

    tok = CLIPTokenizer.from_pretrained(SD / "tokenizer")
    text = CLIPTextModel.from_pretrained(SD / "text_encoder").eval()
    unet = UNet2DConditionModel.from_pretrained(SD / "unet").eval().requires_grad_(False)
    pool = data_pool(30000, seed=4000 + args.seed, p_two=0.3, p_plain=0.5, canny=True)
    captions = [str(c) for c in pool["captions"]]
    uniq = sorted(set(captions))
    index = {c: i for i, c in enumerate(uniq)}
    cap_ids = torch.tensor([index[c] for c in captions])
    text_states = encode_text(uniq, tok, text)
    null_text = encode_text([""], tok, text)[0]
    pixels = images_to_tensor(pool["images"])
    control = torch.from_numpy(pool["canny"]).float().div(255).unsqueeze(1).expand(-1, 3, -1, -1)

    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=CONDITIONING_CHANNELS)
    n_params = sum(p.numel() for p in controlnet.parameters())
    print(f"ControlNet parameters: {n_params:,}")
    # The frozen UNet's own training schedule and parameterisation, read from what ships beside it.
    noise_sched = DDPMScheduler.from_config(DDPMScheduler.load_config(SD / "scheduler"))
    alphas = noise_sched.alphas_cumprod
    opt = torch.optim.AdamW(controlnet.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMA(controlnet, args.ema)
    gen = torch.Generator().manual_seed(args.seed)
    step, seconds = 0, 0.0
    ckpt_dir = RUNS / "controlnet"
    if (ck := load_checkpoint(ckpt_dir)) is not None:
        groups, meta = ck
        controlnet.load_state_dict(groups["model"])
        ema.shadow = {k: v.float() for k, v in groups["ema"].items()}
        load_optimizer_state(opt, groups["opt"])
        gen.set_state(groups["rng"]["gen"])
        step, seconds = meta["step"], meta["seconds"]
        print(f"resumed at step {step}")

    def save() -> None:
        save_checkpoint(
            ckpt_dir,
            {
                "model": controlnet.state_dict(),
                "ema": ema.shadow,
                "opt": optimizer_state_tensors(opt),
                "rng": {"gen": gen.get_state()},
            },
            {"step": step, "seconds": seconds},
        )

    controlnet.train()
    bar = tqdm(total=args.steps, initial=step, desc="controlnet")
    t_last = time.time()
    while step < args.steps and seconds < args.minutes * 60:
        idx = torch.randint(len(captions), (args.batch,), generator=gen)
        x0, cond = pixels[idx], control[idx]
        states = text_states[cap_ids[idx]].clone()
        states[torch.rand(args.batch, generator=gen) < P_EMPTY_PROMPT] = null_text
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        warm = min(1.0, (step + 1) / 100)
        for g in opt.param_groups:
            g["lr"] = args.lr * warm
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            down, mid = controlnet(x_t, t, encoder_hidden_states=states, controlnet_cond=cond, return_dict=False)
            pred = unet(
                x_t,
                t,
                encoder_hidden_states=states,
                down_block_additional_residuals=down,
                mid_block_additional_residual=mid,
            ).sample
        loss = F.mse_loss(pred.float(), training_target(noise_sched, x0, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(controlnet.parameters(), 1.0)
        opt.step()
        ema.update(controlnet, step)
        step += 1
        now = time.time()
        seconds += now - t_last
        t_last = now
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}", min=f"{seconds / 60:.1f}")
        if step % 200 == 0:
            save()
            t_last = time.time()
    bar.close()
    save()
    ema.copy_to(controlnet)
    controlnet.save_pretrained(ASSETS / "controlnet_canny")
    info = {
        "steps": step,
        "seconds": seconds,
        "params": n_params,
        "batch": args.batch,
        "canny_low": CANNY_LOW,
        "canny_high": CANNY_HIGH,
        "p_empty_prompt": P_EMPTY_PROMPT,
        "conditioning_channels": list(CONDITIONING_CHANNELS),
    }
    (RUNS / "controlnet_train.json").write_text(json.dumps(info))
    (ASSETS / "controlnet_canny" / "canny.json").write_text(
        json.dumps({"low_threshold": CANNY_LOW, "high_threshold": CANNY_HIGH})
    )
    print(f"saved ControlNet after {step} steps, {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
