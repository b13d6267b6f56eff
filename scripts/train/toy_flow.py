"""Train the toy profile's rectified-flow text-to-image model: a tiny MM-DiT (diffusers' ``SD3Transformer2DModel``).

    nice -n 5 .venv/bin/python -m scripts.train.toy_flow --bf16 --threads 1 --minutes 240 --steps 16000
    .venv/bin/python -m scripts.train.toy_flow --export-only      # export the EMA of the last checkpoint

Needs the toy CLIP (``assets/toy/clip``) and the order-aware toy T5 (``assets/toy/t5``, scripts/train/toy_t5.py).
Writes ``assets/toy/flow/`` in Stable Diffusion 3's folder layout without a VAE (pixel space): ``transformer/``,
``scheduler/`` (``FlowMatchEulerDiscreteScheduler``), ``text_encoder/`` + ``tokenizer/`` (the toy CLIP as
``CLIPTextModelWithProjection``), ``text_encoder_3/`` + ``tokenizer_3/`` (the toy T5) and ``model_index.json``.
Checkpoints go to ``.toy_runs/flow`` every 250 steps; a rerun resumes (same data, generator state, optimiser).

Conditioned as SD3 is (Esser et al. 2024, "Scaling Rectified Flow Transformers"), with its CLIP-G tower absent:
* per-token text states into **joint attention** with the image tokens: the CLIP tower's last hidden states
  (zero-padded to T5's width) followed by T5's, 24 + 24 tokens, what SD3's ``encode_prompt`` builds from CLIP-L and
  T5 (the toy T5 is the order-aware encoder, so word order reaches the model);
* the CLIP tower's pooled, projected embedding with the timestep through **AdaLN** (``pooled_projections``);
* caption dropout: with probability ``P_UNCOND`` both are replaced by the empty prompt's, the branch CFG subtracts.

Rectified flow: x_t = (1 − t) x0 + t ε with t from a logit-normal (SD3's default m = 0, s = 1), the network predicts
the velocity v = ε − x0 at timestep 1000·t, loss ‖v̂ − v‖². Sampling is the flow-matching Euler schedule
x_{t'} = x_t + (t' − t) v̂, with shift 1 (SD3's shift of 3 is for 1024² latents; at 32² pixels the schedule is not
shifted).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import CLIPModel, CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5Tokenizer

from condition.shapes_world import IMAGE_SIZE
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

FLOW = ASSETS / "flow"
CKPT = RUNS / "flow"
P_UNCOND = 0.2  # as the toy UNet and DiT: the empty-prompt branch needs its share of updates on a short budget
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)
TRANSFORMER_CONFIG = dict(
    sample_size=IMAGE_SIZE,
    patch_size=2,  # 16 × 16 image tokens: at patches of 4 the toy DiT's shapes stayed ragged
    in_channels=3,
    out_channels=3,
    num_layers=4,
    attention_head_dim=32,
    num_attention_heads=4,
    joint_attention_dim=64,  # the toy encoders' width
    caption_projection_dim=128,
    pooled_projection_dim=64,
    pos_embed_max_size=IMAGE_SIZE // 2,
    qk_norm="rms_norm",  # as SD3.5
)


def clip_text_tower(folder: Path) -> CLIPTextModelWithProjection:
    """The toy CLIP's text tower and projection, as SD3's ``text_encoder`` class."""
    clip = CLIPModel.from_pretrained(folder)
    tower = CLIPTextModelWithProjection(clip.config.text_config)
    tower.text_model.load_state_dict(clip.text_model.state_dict())
    tower.text_projection.load_state_dict(clip.text_projection.state_dict())
    return tower.eval()


@torch.no_grad()
def encode(captions: list[str], clip_tok: CLIPTokenizer, clip: CLIPTextModelWithProjection, t5_tok: T5Tokenizer,
           t5: T5EncoderModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [N, 48, 64], pooled [N, 64]) as the app's ``condition.text.flow_prompt_embeds`` builds them."""
    tokens, pooled = [], []
    for i in range(0, len(captions), 512):
        chunk = captions[i:i + 512]
        ids = clip_tok(chunk, padding="max_length", max_length=clip_tok.model_max_length, truncation=True,
                       return_tensors="pt").input_ids
        out = clip(input_ids=ids, output_hidden_states=True)
        t5_ids = t5_tok(chunk, padding="max_length", max_length=t5_tok.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        t5_states = t5(input_ids=t5_ids).last_hidden_state  # SD3 runs T5 without an attention mask
        # SD3 takes CLIP's penultimate hidden state (clip_skip None → hidden_states[-2]) and pads it to T5's width.
        clip_states = F.pad(out.hidden_states[-2], (0, t5_states.shape[-1] - out.hidden_states[-2].shape[-1]))
        tokens.append(torch.cat([clip_states, t5_states], dim=1))
        pooled.append(out.text_embeds)
    return torch.cat(tokens), torch.cat(pooled)


def write_pipeline_files(folder: Path) -> None:
    """Scheduler, encoders, tokenizers and a model index in SD3's layout (no VAE, no CLIP-G tower)."""
    import diffusers

    FlowMatchEulerDiscreteScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    clip_text_tower(ASSETS / "clip").save_pretrained(folder / "text_encoder")
    CLIPTokenizer.from_pretrained(ASSETS / "clip").save_pretrained(folder / "tokenizer")
    T5EncoderModel.from_pretrained(ASSETS / "t5").save_pretrained(folder / "text_encoder_3")
    T5Tokenizer.from_pretrained(ASSETS / "t5").save_pretrained(folder / "tokenizer_3")
    index = {
        "_class_name": "StableDiffusion3Pipeline",
        "_diffusers_version": diffusers.__version__,
        "transformer": ["diffusers", "SD3Transformer2DModel"],
        "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
        "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "text_encoder_2": [None, None],
        "tokenizer_2": [None, None],
        "text_encoder_3": ["transformers", "T5EncoderModel"],
        "tokenizer_3": ["transformers", "T5Tokenizer"],
        "vae": [None, None],
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


def logit_normal(n: int, gen: torch.Generator) -> torch.Tensor:
    """SD3's training timesteps: t = sigmoid(N(0, 1)), more weight on the middle of the path."""
    return torch.sigmoid(torch.randn(n, generator=gen))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=16000, help="schedule length (lr decay)")
    ap.add_argument("--minutes", type=float, default=240.0, help="stop and export after this much training time")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="bf16 autocast (2× faster on CPUs with native bf16)")
    ap.add_argument("--export-only", action="store_true", help="export the EMA of the last checkpoint and stop")
    ap.add_argument("--out", type=Path, default=FLOW, help="export folder")
    args = ap.parse_args()
    setup(args.seed, args.threads)

    model = SD3Transformer2DModel(**TRANSFORMER_CONFIG)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMA(model, args.ema)
    gen = torch.Generator().manual_seed(args.seed)
    step, trained_seconds = 0, 0.0
    if (ck := load_checkpoint(CKPT)) is not None:
        groups, meta = ck
        model.load_state_dict(groups["model"])
        ema.shadow = {k: v.float() for k, v in groups["ema"].items()}
        load_optimizer_state(opt, groups["opt"])
        gen.set_state(groups["rng"]["gen"])
        step, trained_seconds = meta["step"], meta["seconds"]
        print(f"resumed at step {step} ({trained_seconds / 60:.1f} min trained)")
    if args.export_only:
        export(model, ema, step, trained_seconds, n_params, args)
        return
    print(f"MM-DiT parameters: {n_params:,}")

    # The toy UNet's pool (same captions, same mix of one- and two-object scenes), so the models are comparable.
    pool = data_pool(60000, seed=2000 + args.seed, p_two=0.3, p_plain=0.5)
    captions = [str(c) for c in pool["captions"]]
    uniq = sorted(set(captions))
    cap_ids = torch.tensor([{c: i for i, c in enumerate(uniq)}[c] for c in captions])
    cache = RUNS / f"flow_cond_{args.seed}.safetensors"
    if cache.exists():
        enc = load_file(str(cache))
    else:
        print(f"encoding {len(uniq)} captions with the frozen toy CLIP and T5")
        clip_tok, t5_tok = CLIPTokenizer.from_pretrained(ASSETS / "clip"), T5Tokenizer.from_pretrained(ASSETS / "t5")
        clip, t5 = clip_text_tower(ASSETS / "clip"), T5EncoderModel.from_pretrained(ASSETS / "t5").eval()
        tokens, pooled = encode(uniq, clip_tok, clip, t5_tok, t5)
        null_tokens, null_pooled = encode([""], clip_tok, clip, t5_tok, t5)
        enc = {"tokens": tokens, "pooled": pooled, "null_tokens": null_tokens[0], "null_pooled": null_pooled[0]}
        save_file({k: v.contiguous() for k, v in enc.items()}, str(cache))
    pixels = images_to_tensor(pool["images"])

    def lr_at(s: int) -> float:
        progress = min(1.0, max(s / args.steps, trained_seconds / (args.minutes * 60)))
        warm = min(1.0, (s + 1) / 300)
        return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))

    def save() -> None:
        save_checkpoint(
            CKPT,
            {"model": model.state_dict(), "ema": ema.shadow, "opt": optimizer_state_tensors(opt),
             "rng": {"gen": gen.get_state()}},
            {"step": step, "seconds": trained_seconds, "params": n_params, "batch": args.batch, "p_uncond": P_UNCOND},
        )

    bar = tqdm(total=args.steps, initial=step, desc="flow")
    model.train()
    t_last = time.time()
    while step < args.steps and trained_seconds < args.minutes * 60:
        idx = torch.randint(len(captions), (args.batch,), generator=gen)
        x0 = pixels[idx]
        tokens, pooled = enc["tokens"][cap_ids[idx]].clone(), enc["pooled"][cap_ids[idx]].clone()
        drop = torch.rand(args.batch, generator=gen) < P_UNCOND
        tokens[drop], pooled[drop] = enc["null_tokens"], enc["null_pooled"]
        noise = torch.randn(x0.shape, generator=gen)
        t = logit_normal(args.batch, gen)
        x_t = (1 - t.view(-1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1) * noise
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred = model(x_t, encoder_hidden_states=tokens, pooled_projections=pooled, timestep=t * 1000).sample
        loss = F.mse_loss(pred.float(), noise - x0)
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
    export(model, ema, step, trained_seconds, n_params, args)


def export(model: SD3Transformer2DModel, ema: EMA, step: int, seconds: float, n_params: int,
           args: argparse.Namespace) -> None:
    ema.copy_to(model)
    model.to(torch.float16).save_pretrained(args.out / "transformer")  # fp16 on disk; loaders upcast
    model.to(torch.float32)
    write_pipeline_files(args.out)
    info = {"steps": step, "seconds": round(seconds, 1), "params": n_params, "batch": args.batch, "ema": args.ema,
            "lr": args.lr, "p_uncond": P_UNCOND, "objective": "rectified flow, v = noise − x0, logit-normal t",
            "text": "toy CLIP (penultimate states + pooled) and toy T5 (order-aware), SD3's arrangement",
            "bf16_autocast": args.bf16}
    (args.out / "train.json").write_text(json.dumps(info, indent=1))
    print(f"exported EMA MM-DiT after {step} steps, {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
