"""Weight memory of every model the `full` profile loads, computed from the architectures (no downloads).

    .venv/bin/python -m scripts.tools.model_memory

Each network is built on the meta device from the published configuration (SD 1.5, ControlNet v1.1,
CLIP ViT-L/14, IP-Adapter's ViT-H/14 image encoder) or, for ADM, from the official checkpoints'
flags in the shared golden manifests, and its parameters are counted. fp16 bytes = 2 × parameters;
activations come on top and depend on size, batch and CFG (which doubles the batch).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

GOLDEN = Path(os.environ.get("CONDLAB_GOLDEN_ADM", Path(__file__).resolve().parents[3] / "shared/golden/adm"))


def count(build) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in build().parameters())


def sd15_unet():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(cross_attention_dim=768, attention_head_dim=8, sample_size=64)


def sd15_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    )


def clip_l_text():
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                        num_attention_heads=12, max_position_embeddings=77, projection_dim=768))


def clip_vision(hidden: int, layers: int, heads: int, inter: int, projection: int):
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    return CLIPVisionModelWithProjection(CLIPVisionConfig(
        hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
        image_size=224, patch_size=14, projection_dim=projection))


def controlnet():
    from diffusers import ControlNetModel

    return ControlNetModel(cross_attention_dim=768, attention_head_dim=8)


def dit_xl_2_256():
    from diffusers import DiTTransformer2DModel

    # facebook/DiT-XL-2-256's transformer/config.json: 28 blocks of 16 heads × 72, patch 2 on 32×32×4 latents,
    # 1000 classes, learned sigma (8 output channels).
    return DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                                 num_layers=28, sample_size=32, patch_size=2, num_embeds_ada_norm=1000)


def adm(name: str) -> int:
    return json.loads((GOLDEN / "manifests.json").read_text())["models"][name]["num_params"]


def main() -> None:
    unet, vae, text = count(sd15_unet), count(sd15_vae), count(clip_l_text)
    vit_l = count(lambda: clip_vision(1024, 24, 16, 4096, 768))
    vit_h = count(lambda: clip_vision(1280, 32, 16, 5120, 1024))
    cn = count(controlnet)
    dit = count(dit_xl_2_256)
    sd = unet + vae + text
    rows = [
        ("Text to image", "SD 1.5: UNet + VAE + CLIP ViT-L/14 text", sd),
        ("ControlNet (one net)", "SD 1.5 + ControlNet v1.1", sd + cn),
        ("ControlNet (two nets)", "SD 1.5 + 2 × ControlNet v1.1", sd + 2 * cn),
        ("CLIP image: variations", "UNet + VAE + CLIP ViT-L/14 vision (image variations)", unet + vae + vit_l),
        ("CLIP image: IP-Adapter", "SD 1.5 + a UNet copy + ViT-H/14 image encoder (adapter layers not counted)",
         sd + unet + vit_h),
    ]
    rows.append(("Class CFG (DiT)", "DiT-XL/2 256 + its VAE (SD's KL-f8 architecture)", dit + vae))
    if GOLDEN.is_dir():
        rows += [
            ("Classifier guidance 64×64", "ADM 64×64 diffusion + classifier",
             adm("64x64_diffusion") + adm("64x64_classifier")),
            ("Classifier guidance 256×256", "ADM 256×256 uncond + classifier",
             adm("256x256_diffusion_uncond") + adm("256x256_classifier")),
        ]
    # On a Space every role is loaded at startup (models/loading/preload.py), so the GPU holds all of them at once.
    everything = sd + 3 * cn + (unet + vae + vit_l) + (unet + vit_h) + (text + vit_l) + (dit + vae)
    if GOLDEN.is_dir():
        everything += sum(n for tab, _, n in rows if tab.startswith("Classifier guidance"))
    rows.append(("Everything at startup (a Space)", "SD 1.5, 3 ControlNets, image variations, IP-Adapter, full CLIP "
                 "ViT-L/14, DiT-XL/2" + (", both ADM pairs" if GOLDEN.is_dir() else "")
                 + " (MiDaS and OpenPose, fp32, not "
                 "counted)", everything))
    print("| tab | models | parameters | fp16 weights |")
    print("|---|---|---:|---:|")
    for tab, what, n in rows:
        print(f"| {tab} | {what} | {n / 1e6:,.0f} M | {n * 2 / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
