"""Train the toy profile's pixel-space text- and image-conditioned UNet on the shapes world.

    nice -n 10 .venv/bin/python -m scripts.train.toy_unet --bf16 --minutes 110 --steps 14000   # after train_toy_clip

Needs ``assets/toy/sd/{text_encoder,tokenizer,image_encoder}`` (from scripts/train/toy_clip.py).
Writes ``assets/toy/sd/{unet,scheduler}`` and ``model_index.json``; checkpoints go to
``.toy_runs/unet`` and a rerun resumes from them.

``--text-encoder t5`` trains the same UNet, on the same data, steps and schedule, conditioned on the order-aware toy
T5 encoder (``scripts/train/toy_t5.py``) instead of the tiny CLIP; written to ``assets/toy/sd_t5/{unet,scheduler}``
(checkpoints in ``.toy_runs/unet_t5``), so the two models differ only in their text encoder::

    nice -n 10 .venv/bin/python -m scripts.train.toy_unet --text-encoder t5 --bf16 --steps 12103 --minutes 600

``--autoguide`` trains the deliberately weaker UNet autoguidance guides with (Karras et al. 2024: the same
model family, conditioning and parameterisation, less capacity and less training): half the channels, a short
schedule, written to ``assets/toy/autoguide/unet`` (checkpoints in ``.toy_runs/unet_autoguide``)::

    nice -n 10 .venv/bin/python -m scripts.train.toy_unet --autoguide --bf16 --steps 1500 --minutes 20

Conditioning (all through cross-attention, as SD and sd-image-variations do):
* text rows: the frozen CLIP text model's ``last_hidden_state`` of the caption, replaced by
  that of the empty prompt ``""`` with probability ``P_UNCOND``;
* image rows (``P_IMAGE`` of a batch): ``image_embeds.unsqueeze(1)`` of the CLIP vision tower,
  replaced by zeros with probability ``P_UNCOND``; padded to the text length and masked out
  with ``encoder_attention_mask`` so the result equals a 1-token context.

The UNet predicts v = √ᾱ·ε − √(1−ᾱ)·x0 (SD 2's parameterisation), not ε. The world's backgrounds are
dark (mean ≈ −0.85 in [−1, 1]), and an ε-model's x̂0 = (x_t − √(1−ᾱ)ε̂)/√ᾱ is clipped noise at high t
(an ε error of 0.01 becomes an x̂0 error of 1.6 at t = 999), whose per-channel mean is grey with a random
tint; deterministic DDIM then commits to those grey, tinted backgrounds. With v, x̂0 = √ᾱ·x_t − √(1−ᾱ)·v̂
has no 1/√ᾱ factor, so it is the model's honest guess of the image at every t.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from tqdm import tqdm
from transformers import (
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    T5EncoderModel,
    T5Tokenizer,
)

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
    training_target,
)
from scripts.train.toy_clip import normalise

SD = ASSETS / "sd"
SD_T5 = ASSETS / "sd_t5"
# The unconditional model doubles as the classifier-guidance base model and the CFG
# reference, and it must cover the whole world; 0.2 (twice SD's 0.1) gives it enough
# data at this tiny step budget while leaving 80 % of rows conditional.
P_UNCOND = 0.2
P_IMAGE = 0.25  # share of rows conditioned on a CLIP image embedding instead of a caption

# The DDPM training schedule (Ho et al. 2020); pixel space needs clip_sample, and the
# trailing spacing starts DDIM at t=999 where ᾱ is ~4e-5 (pure noise).
SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    prediction_type="v_prediction",
    clip_sample=True,
    clip_sample_range=1.0,
    set_alpha_to_one=True,
    steps_offset=0,
    timestep_spacing="trailing",
)


AUTOGUIDE = ASSETS / "autoguide"
AUTOGUIDE_CHANNELS = (16, 32, 48)  # half of the main UNet's: the "weaker version of itself"


def unet_config(cross_dim: int, channels: tuple[int, ...] = (32, 64, 96)) -> dict:
    """Cross-attention only at 8×8 and in the mid block (self-attention at 16×16 costs 4× on CPU). 32 channels at
    32×32: the 16 of the first toy UNet left grain on flat backgrounds; 96 at 8×8, where text picks the shape."""
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        block_out_channels=channels,
        layers_per_block=1,
        cross_attention_dim=cross_dim,
        attention_head_dim=4,
        norm_num_groups=8,
    )


def save_scheduler(folder: Path = SD) -> DDIMScheduler:
    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    sched.save_pretrained(folder / "scheduler")
    return sched


def write_model_index(folder: Path = SD) -> None:
    """SD-1.x layout without a vae (pixel space) plus the image-variations parts (the T5 model: text parts only)."""
    import diffusers

    if folder == SD_T5:
        index = {
            "_class_name": "StableDiffusionPipeline",
            "_diffusers_version": diffusers.__version__,
            "unet": ["diffusers", "UNet2DConditionModel"],
            "scheduler": ["diffusers", "DDIMScheduler"],
            "text_encoder": ["transformers", "T5EncoderModel"],
            "tokenizer": ["transformers", "T5Tokenizer"],
            "vae": [None, None],
            "safety_checker": [None, None],
            "feature_extractor": [None, None],
            "requires_safety_checker": False,
        }
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        return
    index = {
        "_class_name": "StableDiffusionPipeline",
        "_diffusers_version": diffusers.__version__,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "feature_extractor": ["transformers", "CLIPImageProcessor"],
        "vae": [None, None],
        "safety_checker": [None, None],
        "requires_safety_checker": False,
    }
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))


@torch.no_grad()
def encode_text(captions: list[str], tok: PreTrainedTokenizerBase, text: PreTrainedModel) -> torch.Tensor:
    """Per-token states padded to the tokenizer's window, as the app's ``condition.text.encode_prompts`` gives them:
    CLIP without an attention mask (SD's convention), T5 with one (its padding is masked inside the encoder)."""
    ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
    masked = isinstance(text, T5EncoderModel)
    out = [text(input_ids=ids.input_ids[i : i + 512],
                attention_mask=ids.attention_mask[i : i + 512] if masked else None).last_hidden_state
           for i in range(0, len(captions), 512)]
    return torch.cat(out)


@torch.no_grad()
def encode_images(images: np.ndarray, vision: CLIPVisionModelWithProjection) -> torch.Tensor:
    out = [vision(pixel_values=normalise(images[i : i + 512])).image_embeds for i in range(0, len(images), 512)]
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6000, help="schedule length (lr decay)")
    ap.add_argument("--minutes", type=float, default=72.0, help="stop and export after this much training time")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    # bf16 autocast pays off only on CPUs with native bf16 (AVX512-BF16/AMX: 0.48 vs 0.64 s/step here);
    # emulated it is ~20× slower. Weights, optimizer and EMA stay float32.
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--autoguide", action="store_true", help="train the weaker UNet autoguidance uses")
    ap.add_argument("--export-only", action="store_true", help="export the EMA of the last checkpoint and stop")
    ap.add_argument("--text-encoder", choices=("clip", "t5"), default="clip",
                    help="t5: condition on the order-aware toy T5 (assets/toy/sd_t5), everything else unchanged")
    args = ap.parse_args()
    setup(args.seed, args.threads)
    t5 = args.text_encoder == "t5"
    if t5 and args.autoguide:
        ap.error("--autoguide trains the CLIP model's weaker twin; it does not combine with --text-encoder t5")

    if t5:
        tok = T5Tokenizer.from_pretrained(SD_T5 / "tokenizer")
        text = T5EncoderModel.from_pretrained(SD_T5 / "text_encoder").eval()
    else:
        tok = CLIPTokenizer.from_pretrained(SD / "tokenizer")
        text = CLIPTextModel.from_pretrained(SD / "text_encoder").eval()
    vision = CLIPVisionModelWithProjection.from_pretrained(SD / "image_encoder").eval()
    pool = data_pool(60000, seed=2000 + args.seed, p_two=0.3, p_plain=0.5)
    captions = [str(c) for c in pool["captions"]]
    uniq = sorted(set(captions))
    index = {c: i for i, c in enumerate(uniq)}
    cap_ids = torch.tensor([index[c] for c in captions])
    cache = RUNS / f"unet_cond{'_t5' if t5 else ''}_{args.seed}.safetensors"
    if cache.exists():
        enc = load_file(str(cache))
    else:
        # The frozen CLIP's outputs are fixed, so they are computed once and cached for resumed runs.
        print(f"encoding {len(uniq)} captions with the frozen {args.text_encoder} and {len(captions)} images with the "
              "frozen tiny CLIP")
        enc = {
            "text_states": encode_text(uniq, tok, text),  # [U, L, D]
            "null_text": encode_text([""], tok, text)[0],
            "image_embeds": encode_images(pool["images"], vision),  # [N, D]
        }
        save_file(enc, str(cache))
    text_states, null_text, image_embeds = enc["text_states"], enc["null_text"], enc["image_embeds"]
    pixels = images_to_tensor(pool["images"])
    seq_len, dim = text_states.shape[1:]

    unet = UNet2DConditionModel(**unet_config(dim, AUTOGUIDE_CHANNELS if args.autoguide else (32, 64, 96)))
    n_params = sum(p.numel() for p in unet.parameters())
    print(f"UNet parameters: {n_params:,}")
    noise_sched = DDPMScheduler(
        **{k: v for k, v in SCHEDULER_CONFIG.items() if k not in ("set_alpha_to_one", "steps_offset")}
    )
    opt = torch.optim.AdamW(unet.parameters(), lr=args.lr, weight_decay=0.0)
    ema = EMA(unet, args.ema)
    gen = torch.Generator().manual_seed(args.seed)
    step, trained_seconds = 0, 0.0
    ckpt_dir = RUNS / ckpt_name(args)
    if (ck := load_checkpoint(ckpt_dir)) is not None:
        groups, meta = ck
        unet.load_state_dict(groups["model"])
        ema.shadow = {k: v.float() for k, v in groups["ema"].items()}
        load_optimizer_state(opt, groups["opt"])
        gen.set_state(groups["rng"]["gen"])
        step, trained_seconds = meta["step"], meta["seconds"]
        print(f"resumed at step {step} ({trained_seconds / 60:.1f} min trained)")
    if args.export_only:
        export(unet, ema, step, trained_seconds, n_params, args)
        return

    def lr_at(s: int) -> float:
        # Cosine decay over whichever budget (steps or minutes) runs out first, so a time-capped run still anneals.
        progress = min(1.0, max(s / args.steps, trained_seconds / (args.minutes * 60)))
        warm = min(1.0, (s + 1) / 200)
        return args.lr * warm * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * progress)))

    def save() -> None:
        save_checkpoint(
            ckpt_dir,
            {
                "model": unet.state_dict(),
                "ema": ema.shadow,
                "opt": optimizer_state_tensors(opt),
                "rng": {"gen": gen.get_state()},
            },
            {"step": step, "seconds": trained_seconds, "params": n_params, "batch": args.batch, "p_uncond": P_UNCOND},
        )

    alphas = noise_sched.alphas_cumprod
    bar = tqdm(total=args.steps, initial=step, desc="unet")
    unet.train()
    t_last = time.time()
    while step < args.steps and trained_seconds < args.minutes * 60:
        idx = torch.randint(len(captions), (args.batch,), generator=gen)
        x0 = pixels[idx]
        is_image = torch.rand(args.batch, generator=gen) < P_IMAGE
        drop = torch.rand(args.batch, generator=gen) < P_UNCOND
        states = text_states[cap_ids[idx]].clone()
        states[drop & ~is_image] = null_text
        img = image_embeds[idx] * (~drop).float()[:, None]
        states[is_image] = 0.0
        states[is_image, 0] = img[is_image]
        mask = torch.ones(args.batch, seq_len)
        mask[is_image, 1:] = 0.0
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, 1000, (args.batch,), generator=gen)
        a = alphas[t].view(-1, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * noise
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
            pred = unet(x_t, t, encoder_hidden_states=states, encoder_attention_mask=mask).sample
        loss = F.mse_loss(pred.float(), training_target(noise_sched, x0, noise, t))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        ema.update(unet, step)
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
    export(unet, ema, step, trained_seconds, n_params, args)


def ckpt_name(args: argparse.Namespace) -> str:
    return "unet_autoguide" if args.autoguide else "unet_t5" if args.text_encoder == "t5" else "unet"


def export(
    unet: UNet2DConditionModel, ema: EMA, step: int, seconds: float, n_params: int, args: argparse.Namespace
) -> None:
    ema.copy_to(unet)
    folder = AUTOGUIDE if args.autoguide else SD_T5 if args.text_encoder == "t5" else SD
    # Stored in float16 (4.7 MB instead of 9.4 MB; loaders upcast to the runtime's dtype): samples move by at
    # most ~1 level in 8 bits against the float32 weights, and every shipped file stays well under 8 MiB.
    unet.to(torch.float16).save_pretrained(folder / "unet")
    unet.to(torch.float32)
    if not args.autoguide:
        save_scheduler(folder)
        write_model_index(folder)
    info = {
        "steps": step,
        "seconds": seconds,
        "params": n_params,
        "batch": args.batch,
        "ema": args.ema,
        "lr": args.lr,
        "p_uncond": P_UNCOND,
        "p_image": P_IMAGE,
        "prediction_type": SCHEDULER_CONFIG["prediction_type"],
        "bf16_autocast": args.bf16,
        "text_encoder": args.text_encoder,
    }
    (RUNS / f"{ckpt_name(args)}_train.json").write_text(json.dumps(info))
    if folder != SD:
        (folder / "train.json").write_text(json.dumps(info, indent=1))
    print(f"exported EMA UNet after {step} steps, {seconds / 60:.1f} min")


if __name__ == "__main__":
    main()
