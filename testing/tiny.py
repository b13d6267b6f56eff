"""Tiny random components in the real diffusers / transformers classes.

Used by tests and benchmarks to prove our code paths against diffusers' own pipelines
without downloading anything: the folders they write load through the same loaders
that hub ids go through.
"""

from __future__ import annotations

import collections
import json
import math
import shutil
import string
from collections.abc import Callable
from pathlib import Path

import torch

from models.architectures.controlnet_layout import embedding_channels, zero_convs
from models.architectures.tiny_unet import tiny_unet  # noqa: F401 - part of the fixtures' API
from models.loading.annotators import MIDAS_FILES, OPENPOSE_FILES


def write_clip_tokenizer(folder: Path, words: list[str] | None = None, max_length: int = 77) -> Path:
    """A CLIPTokenizer vocabulary written locally: letters, a few whole words, no downloads."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokens = ["!", '"', "#"] + list(string.ascii_lowercase) + [c + "</w>" for c in string.ascii_lowercase]
    merges: list[str] = []
    for word in words or ["red", "blue", "green", "circle", "square", "cat", "dog", "a", "photo", "of"]:
        # Build each word by successive merges so the BPE reproduces it as one token.
        piece = word[0]
        for i, ch in enumerate(word[1:], start=1):
            right = ch + ("</w>" if i == len(word) - 1 else "")
            merges.append(f"{piece} {right}")
            piece = piece + right
            if piece not in tokens:
                tokens.append(piece)
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(dict.fromkeys(merges)) + "\n")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=max_length)
    tok.save_pretrained(folder)
    return folder


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=8,
        sample_size=32,
    )


def tiny_taesd(decoder_factor: int = 2):
    """A tiny ``AutoencoderTiny`` (TAESD's class) whose decoder upsamples latents by ``decoder_factor``."""
    from diffusers import AutoencoderTiny

    blocks = 1 + (decoder_factor.bit_length() - 1)
    return AutoencoderTiny(encoder_block_out_channels=(8,) * blocks, decoder_block_out_channels=(8,) * blocks,
                           num_encoder_blocks=(1,) * blocks, num_decoder_blocks=(1,) * blocks, latent_channels=4)


def tiny_clip_text(hidden_size: int = 32, vocab_size: int = 1000, projection_dim: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        hidden_size=hidden_size, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
        vocab_size=vocab_size, max_position_embeddings=77, projection_dim=projection_dim,
        bos_token_id=0, eos_token_id=2, pad_token_id=1,
    )
    return CLIPTextModel(config)


def build_tiny_sd(folder: Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """Write a tiny Stable-Diffusion-1.x-style folder (UNet, VAE, CLIP text, tokenizer, DDIM).

    ``prediction_type="v_prediction"`` makes it SD-2-style (the same weights, read as predicting v).
    """
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    folder = Path(folder)
    torch.manual_seed(seed)
    unet = tiny_unet()
    vae = tiny_vae()
    text_encoder = tiny_clip_text()
    tokenizer_dir = write_clip_tokenizer(folder / "_tok")
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
        set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(folder, safe_serialization=True)
    shutil.rmtree(tokenizer_dir)
    return folder


def tiny_clip_model(projection_dim: int = 32, image_size: int = 32, vocab_size: int = 1000, seed: int = 0):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                         vocab_size=vocab_size, max_position_embeddings=77, bos_token_id=0, eos_token_id=2,
                         pad_token_id=1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_attention_heads=4, num_hidden_layers=2,
                           image_size=image_size, patch_size=8),
        projection_dim=projection_dim,
    )
    return CLIPModel(config)


def vision_from_clip(clip):
    """The CLIP model's image tower as ``CLIPVisionModelWithProjection`` (same weights, same embedding space)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    vc = clip.config.vision_config.to_dict()
    vc["projection_dim"] = clip.config.projection_dim
    encoder = CLIPVisionModelWithProjection(CLIPVisionConfig(**vc))
    encoder.vision_model.load_state_dict(clip.vision_model.state_dict())
    encoder.visual_projection.load_state_dict(clip.visual_projection.state_dict())
    return encoder.eval()


def build_tiny_image_models(root: Path, seed: int = 0) -> dict[str, Path]:
    """Write ``variations/`` (an image-variation pipeline folder) and ``clip/`` (the same CLIP, full) under root."""
    from diffusers import DDIMScheduler, StableDiffusionImageVariationPipeline
    from transformers import CLIPImageProcessor

    root = Path(root)
    clip = tiny_clip_model(seed=seed)
    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    clip_dir = root / "clip"
    clip.save_pretrained(clip_dir, safe_serialization=True)
    write_clip_tokenizer(clip_dir)
    processor.save_pretrained(clip_dir)
    torch.manual_seed(seed + 1)
    pipe = StableDiffusionImageVariationPipeline(
        vae=tiny_vae(), image_encoder=vision_from_clip(clip), unet=tiny_unet(cross_attention_dim=32),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                clip_sample=False, set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=processor, requires_safety_checker=False,
    )
    pipe.save_pretrained(root / "variations", safe_serialization=True)
    return {"variations": root / "variations", "clip": clip_dir}


def build_tiny_ip_adapter(root: Path, unet, image_embed_dim: int = 32, tokens: int = 4, seed: int = 0) -> Path:
    """An ``h94/IP-Adapter``-style folder for ``unet``: ``models/ip-adapter_sd15.safetensors``, ``image_encoder/``.

    Keys follow the released file: ``image_proj.{proj,norm}.*`` and ``ip_adapter.{k}.to_{k,v}_ip.weight``
    with k = 1, 3, 5, … over the UNet's cross-attention layers in ``attn_processors`` order.
    """
    from safetensors.torch import save_file

    root = Path(root)
    torch.manual_seed(seed)
    cross = unet.config.cross_attention_dim
    flat = {
        "image_proj.proj.weight": torch.randn(tokens * cross, image_embed_dim) * 0.2,
        "image_proj.proj.bias": torch.randn(tokens * cross) * 0.1,
        "image_proj.norm.weight": 1 + 0.1 * torch.randn(cross),
        "image_proj.norm.bias": 0.1 * torch.randn(cross),
    }
    key_id = 1
    channels = list(unet.config.block_out_channels)
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        flat[f"ip_adapter.{key_id}.to_k_ip.weight"] = torch.randn(hidden, cross) * 0.2
        flat[f"ip_adapter.{key_id}.to_v_ip.weight"] = torch.randn(hidden, cross) * 0.2
        key_id += 2
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in flat.items()}, str(models / "ip-adapter_sd15.safetensors"))
    vision_from_clip(tiny_clip_model(projection_dim=image_embed_dim, seed=seed + 7)).save_pretrained(
        models / "image_encoder", safe_serialization=True)
    return root


def build_tiny_controlnet(folder: Path, sd_folder: Path, seed: int = 0, zero_conv_std: float = 0.05) -> Path:
    """A ControlNet ``from_unet`` on a tiny SD folder's UNet, zero convs randomised so it has an effect.

    The conditioning embedding downsamples by the SD folder's VAE factor (pixel space: none), as
    SD 1.5's ControlNets downsample by 8, so a map of the output's size lands on the latent grid.
    """
    from diffusers import ControlNetModel, UNet2DConditionModel

    sd_folder = Path(sd_folder)
    unet = UNet2DConditionModel.from_pretrained(sd_folder, subfolder="unet")
    factor = 1
    if (sd_folder / "vae").is_dir():
        from diffusers import AutoencoderKL

        factor = 2 ** (len(AutoencoderKL.load_config(sd_folder, subfolder="vae")["block_out_channels"]) - 1)
    torch.manual_seed(seed)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding_channels(factor))
    with torch.no_grad():
        for _, conv in zero_convs(controlnet):
            conv.weight.normal_(0, zero_conv_std)
            conv.bias.normal_(0, zero_conv_std)
        controlnet.controlnet_cond_embedding.conv_out.weight.normal_(0, zero_conv_std)
    controlnet.save_pretrained(folder, safe_serialization=True)
    return Path(folder)


# --- annotators: random weights in controlnet-aux's official formats and file names (slim: pooled fp16) ---


def meta_shapes(factory: Callable[[], torch.nn.Module]) -> dict[str, tuple[int, ...]]:
    """The state-dict keys and shapes of a network, built on the meta device (no memory, no init time)."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in factory().state_dict().items()}


def random_fp16_state(shapes: dict[str, tuple[int, ...]], seed: int, zero: bool = False) -> dict[str, torch.Tensor]:
    """Seeded float16 tensors of ``shapes``: He-scaled weights, small biases, norm weights near 1 (or all 0).

    Tensors of one scale are windows, at seeded offsets, into one shared pool, so the file stores the pool once.
    """
    gen = torch.Generator().manual_seed(seed)

    def scale(name: str, shape: tuple[int, ...]) -> tuple[float, float]:  # (mean, std)
        if len(shape) >= 2:
            return 0.0, math.sqrt(2.0 / math.prod(shape[1:]))
        return (0.0, 0.02) if name.endswith("bias") else (1.0, 0.1)

    groups = collections.defaultdict(list)
    for name, shape in shapes.items():
        groups[scale(name, shape)].append(name)
    state, slack = {}, 65536
    for (mean, std), names in sorted(groups.items()):
        size = max(math.prod(shapes[n]) for n in names) + slack
        pool = torch.zeros(size) if zero else torch.randn(size, generator=gen) * std + mean
        pool = pool.half()
        for name in names:
            start = int(torch.randint(0, slack + 1, (1,), generator=gen))
            state[name] = pool[start : start + math.prod(shapes[name])].view(shapes[name])
    return state


def _openpose_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """OpenPose's official checkpoint keys: ``model0.conv1_1.weight`` is stored as ``conv1_1.weight``."""
    out = {k.split(".", 1)[1]: v for k, v in state.items()}
    assert len(out) == len(state), "dropping the first component must keep the keys unique"
    return out


def write_random_midas(folder: Path, seed: int = 0) -> Path:
    from controlnet_aux.midas.midas.dpt_depth import DPTDepthModel

    folder.mkdir(parents=True, exist_ok=True)
    shapes = meta_shapes(lambda: DPTDepthModel(path=None, backbone="vitb_rn50_384", non_negative=True))
    torch.save(random_fp16_state(shapes, seed), folder / MIDAS_FILES[0])
    return folder


def write_random_openpose(folder: Path, seed: int = 0, zero: bool = False) -> Path:
    from controlnet_aux.open_pose.face import FaceNet
    from controlnet_aux.open_pose.model import bodypose_model, handpose_model

    folder.mkdir(parents=True, exist_ok=True)
    body, hand, face = OPENPOSE_FILES
    torch.save(_openpose_keys(random_fp16_state(meta_shapes(bodypose_model), seed, zero)), folder / body)
    torch.save(_openpose_keys(random_fp16_state(meta_shapes(handpose_model), seed + 1, zero)), folder / hand)
    torch.save(random_fp16_state(meta_shapes(FaceNet), seed + 2, zero), folder / face)
    return folder


def build_tiny_dit(folder: Path, seed: int = 0, num_classes: int = 1000, learned_sigma: bool = True,
                   latent: bool = True, id2label: dict[str, str] | None = None) -> Path:
    """Write a tiny ``DiTPipeline`` folder: ``transformer/`` (AdaLN-zero blocks, every weight random so that the class
    and the null class matter), ``vae/`` (or none: pixel space), ``scheduler/`` (DDIM, DiT's linear schedule) and
    ``model_index.json`` with ``id2label`` (None: ImageNet's names, as ``facebook/DiT-XL-2-256`` ships them)."""
    import json

    import diffusers
    from diffusers import DDIMScheduler, DiTTransformer2DModel

    from condition.labels import imagenet_classes

    folder = Path(folder)
    torch.manual_seed(seed)
    channels = 4 if latent else 3
    transformer = DiTTransformer2DModel(
        num_attention_heads=2, attention_head_dim=8, in_channels=channels,
        out_channels=2 * channels if learned_sigma else channels, num_layers=2, sample_size=8, patch_size=2,
        num_embeds_ada_norm=num_classes, norm_type="ada_norm_zero",
    )
    with torch.no_grad():  # diffusers' init leaves AdaLN's modulation small; make every block act
        for name, param in transformer.named_parameters():
            if "norm1.linear" in name or "proj_out" in name:
                param.normal_(0.0, 0.2)
    transformer.save_pretrained(folder / "transformer")
    if latent:
        tiny_vae().save_pretrained(folder / "vae")
    DDIMScheduler(num_train_timesteps=1000, beta_start=0.0001, beta_end=0.02, beta_schedule="linear",
                  clip_sample=False, set_alpha_to_one=True, steps_offset=0).save_pretrained(folder / "scheduler")
    labels = id2label if id2label is not None else {str(i): n for i, n in enumerate(imagenet_classes())}
    index = {"_class_name": "DiTPipeline", "_diffusers_version": diffusers.__version__,
             "scheduler": ["diffusers", "DDIMScheduler"], "transformer": ["diffusers", "DiTTransformer2DModel"],
             "vae": ["diffusers", "AutoencoderKL"] if latent else [None, None], "id2label": labels}
    (folder / "model_index.json").write_text(json.dumps(index, indent=1))
    return folder
