"""Weight memory of every model the `full` profile loads, computed from the architectures (no downloads).

    .venv/bin/python -m scripts.tools.model_memory

Each network is built on the meta device from the published configuration (SD 1.5, ControlNet v1.1,
CLIP ViT-L/14, IP-Adapter's ViT-H/14 image encoder; PixArt-Σ 512-MS with its T5-v1.1-XXL encoder and SDXL VAE, from
the configs ``testing/tiny_pixart.py`` holds key for key; SD3.5 Medium's MM-DiT, CLIP-L, CLIP-G, T5-XXL and VAE, from
the configs below) or, for ADM, from the official checkpoints' flags in the shared golden manifests, and its
parameters are counted. fp16 bytes = 2 × parameters (PixArt-Σ's repos ship float32 files: a Space downloads twice
that and casts while loading); activations come on top and depend on size, batch and CFG (which doubles the batch).
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


def count_weights(build) -> int:
    """Parameters plus floating-point buffers: what the GPU holds of the network. SD3.5's MM-DiT stores its 384 × 384
    grid of positional embeddings (226 M values, 453 MB in fp16) as a buffer in its weights file, beside 2 243 M
    parameters: 4.94 GB, the listed size of transformer/diffusion_pytorch_model.safetensors."""
    with torch.device("meta"):
        model = build()
        return (sum(p.numel() for p in model.parameters())
                + sum(b.numel() for b in model.buffers() if b.is_floating_point()))


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


def pixart_transformer():
    """PixArt-Sigma-XL-2-512-MS's transformer/config.json (28 blocks of 16 heads × 72, T5 captions of width 4096)."""
    from diffusers import PixArtTransformer2DModel

    from testing.tiny_pixart import REAL_TRANSFORMER_CONFIG

    return PixArtTransformer2DModel(**PixArtTransformer2DModel.extract_init_dict(REAL_TRANSFORMER_CONFIG)[0])


def t5_xxl_encoder():
    """T5-v1.1-XXL's encoder (24 layers, d_model 4096, gated GELU): PixArt-Σ's text_encoder and SD3.5's
    text_encoder_3 have the same configuration."""
    from transformers import T5Config, T5EncoderModel

    from testing.tiny_pixart import REAL_T5_CONFIG

    return T5EncoderModel(T5Config(**{k: v for k, v in REAL_T5_CONFIG.items()
                                      if k not in ("architectures", "transformers_version")}))


def sdxl_vae():
    """The SDXL VAE of pixart_sigma_sdxlvae_T5_diffusers (SD's KL-f8 design, 4 latent channels, quant convs)."""
    from diffusers import AutoencoderKL

    from testing.tiny_pixart import REAL_VAE_CONFIG

    return AutoencoderKL(**AutoencoderKL.extract_init_dict(REAL_VAE_CONFIG)[0])


def sd35_transformer():
    """SD3.5 Medium's MM-DiT (``experiments.attention_cost.SD35_MEDIUM_TRANSFORMER_CONFIG``: 24 blocks of 24 heads ×
    64, dual attention in the first 13, QK RMS-norm)."""
    from diffusers import SD3Transformer2DModel

    from experiments.attention_cost import SD35_MEDIUM_TRANSFORMER_CONFIG

    return SD3Transformer2DModel(**SD35_MEDIUM_TRANSFORMER_CONFIG)


def clip_text_with_projection(hidden: int, layers: int, heads: int, inter: int, act: str):
    """SD3's CLIP towers (``CLIPTextModelWithProjection``: the pooled embedding projected to the width)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
        max_position_embeddings=77, projection_dim=hidden, hidden_act=act, vocab_size=49408))


def sd3_vae():
    """SD3's VAE: SD's KL-f8 design with 16 latent channels and no quant convs."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=16,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        use_quant_conv=False, use_post_quant_conv=False,
    )


def flux_dev_transformer():
    """FLUX.1-dev's transformer (black-forest-labs/FLUX.1-dev transformer/config.json: 19 double-stream and 38
    single-stream blocks of 24 heads × 128, ``guidance_embeds`` true): a public model that ships a guidance embedding,
    counted to say why the full profile does not offer it."""
    from diffusers import FluxTransformer2DModel

    return FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=19, num_single_layers=38,
                                  attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                  pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56))


def transformer_roles() -> dict[str, dict[str, int]]:
    """Parameters per network of the two transformer roles: ``pixart`` (PixArt-Σ 512-MS) and ``flow`` (SD3.5
    Medium); CLIP-L is the ViT-L/14 text tower of SD3's text_encoder, CLIP-G OpenCLIP bigG's of text_encoder_2."""
    t5 = count(t5_xxl_encoder)
    return {
        "pixart": {"transformer": count(pixart_transformer), "T5-v1.1-XXL encoder": t5, "SDXL VAE": count(sdxl_vae)},
        "flow": {"MM-DiT (with its positional-embedding buffer)": count_weights(sd35_transformer),
                 "CLIP-L": count(lambda: clip_text_with_projection(768, 12, 12, 3072, "quick_gelu")),
                 "CLIP-G": count(lambda: clip_text_with_projection(1280, 32, 20, 5120, "gelu")),
                 "T5-XXL encoder": t5, "VAE": count(sd3_vae)},
    }


def t5_fp32_extra_bytes() -> int:
    """Bytes beyond 2 per parameter that a T5 encoder loaded in float16 holds: transformers keeps its feed-forward
    output layers (``wo``, ``_keep_in_fp32_modules``) in float32, 2 more bytes for each of their weights."""
    from testing.tiny_pixart import REAL_T5_CONFIG

    return 2 * REAL_T5_CONFIG["num_layers"] * REAL_T5_CONFIG["d_ff"] * REAL_T5_CONFIG["d_model"]


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
    transformers = transformer_roles()
    for role, label in (("pixart", "PixArt-Σ 512-MS"), ("flow", "SD3.5 Medium")):
        parts = transformers[role]
        rows.append((f"Text to image, model={role}", f"{label}: " + " + ".join(
            f"{name} {n / 1e6:,.0f} M ({n * 2 / 2**30:.2f} GiB)" for name, n in parts.items()), sum(parts.values())))
    if GOLDEN.is_dir():
        rows += [
            ("Classifier guidance 64×64", "ADM 64×64 diffusion + classifier",
             adm("64x64_diffusion") + adm("64x64_classifier")),
            ("Classifier guidance 256×256", "ADM 256×256 uncond + classifier",
             adm("256x256_diffusion_uncond") + adm("256x256_classifier")),
        ]
    t5_extra = t5_fp32_extra_bytes()
    # On a Space every role is loaded at startup (models/loading/preload.py), so the GPU holds all of them at once.
    everything = (sd + 3 * cn + (unet + vae + vit_l) + (unet + vit_h) + (text + vit_l) + (dit + vae)
                  + sum(sum(parts.values()) for parts in transformers.values()))
    if GOLDEN.is_dir():
        everything += sum(n for tab, _, n in rows if tab.startswith("Classifier guidance"))
    rows.append(("Everything at startup (a Space)", "SD 1.5, 3 ControlNets, image variations, IP-Adapter, full CLIP "
                 "ViT-L/14, DiT-XL/2, PixArt-Σ, SD3.5 Medium" + (", both ADM pairs" if GOLDEN.is_dir() else "")
                 + " (MiDaS and OpenPose, fp32, not "
                 "counted)", everything))
    print("| tab | models | parameters | fp16 weights |")
    print("|---|---|---:|---:|")
    for tab, what, n in rows:
        print(f"| {tab} | {what} | {n / 1e6:,.0f} M | {n * 2 / 2**30:.2f} GiB |")
    with torch.device("meta"):
        flux = flux_dev_transformer()
        flux_params = sum(p.numel() for p in flux.parameters())
        guidance_embedder = sum(p.numel() for name, p in flux.named_parameters() if "guidance_embedder" in name)
    print(f"\nNot in the profile: FLUX.1-dev's transformer, which takes w through a guidance embedding "
          f"({guidance_embedder:,} of its {flux_params / 1e6:,.0f} M parameters), is {flux_params * 2 / 2**30:.2f} "
          "GiB in bf16 before its T5-XXL, CLIP-L and VAE, and gated under a non-commercial licence.")
    print(f"\nOn CUDA each T5-XXL encoder (PixArt-Σ's, SD3.5's) keeps its wo layers in float32: "
          f"+{t5_extra / 2**30:.2f} GiB each ({t5_extra:,} B) beyond the fp16 column.")


if __name__ == "__main__":
    main()
