"""Tiny random rectified-flow models in Stable Diffusion 3.5 Medium's real repo layout, and a toy-like folder.

``build_tiny_sd3`` writes ``stabilityai/stable-diffusion-3.5-medium``'s diffusers layout with the real file names,
classes, scheduler config and fp16 variants, at a size that samples in milliseconds: the parity tests run our loop
and ``StableDiffusion3Pipeline`` on it, and the hub replica can put it under the real repo id and ``SD35_REVISION``.
``build_toy_like_flow`` writes the layout of ``assets/toy/flow`` (``scripts/train/toy_flow.py``): no CLIP-G tower, no
VAE, pixel space, windows of 24 tokens.

Where the layout facts come from (this project's search index; no network here). The repo itself is gated, so its
file pages were read in public copies that keep its history: ``frankjoshua/stable-diffusion-3.5-medium`` (at 9e00742
and b8c3970) and ``ckpt/stable-diffusion-3.5-medium`` (at e40d4eb), where every weight and config file comes from
one commit, 94b13cc "SD3.5 Medium Public Release" (later commits touch README.md and a ComfyUI workflow only); the
configs were cross-checked against configs exported from the real repo's cache snapshot ``b940f670…`` by
independent projects (``_name_or_path`` …/models--stabilityai--stable-diffusion-3.5-medium/snapshots/b940f670…):

* root: ``model_index.json`` (706 bytes, the size of the 11-entry ``StableDiffusion3Pipeline`` index written below
  with ``json.dumps(indent=2)`` as diffusers writes it; the class names are those of SD3's diffusers index, with
  ``tokenizer_3`` a ``T5TokenizerFast``), ``scheduler/``, ``text_encoder/``, ``text_encoder_2/``, ``text_encoder_3/``,
  ``tokenizer/``, ``tokenizer_2/``, ``tokenizer_3/``, ``transformer/``, ``vae/``, a stray ``vae copy/`` (same files as
  ``vae/``), the single-file ``sd3.5_medium.safetensors`` (5.11 GB), two ComfyUI workflows, README, LICENSE, images.
  The app reads none of the last group, so it is not replicated.
* ``scheduler/scheduler_config.json`` (141 bytes): ``FlowMatchEulerDiscreteScheduler``, ``num_train_timesteps``
  1000, ``shift`` 3.0, written by diffusers 0.29.0.dev0; every other field takes its default (no dynamic shifting).
* ``text_encoder/`` and ``text_encoder_2/``: ``config.json``, ``model.safetensors`` and ``model.fp16.safetensors``
  (247 MB each for CLIP-L, 1.39 GB each for CLIP-G: the plain files are half precision too).
* ``text_encoder_3/``: ``config.json``, ``model-0000{1,2}-of-00002.safetensors``, ``model.fp16-0000{1,2}-of-
  00002.safetensors``, ``model.safetensors.index.json``, ``model.safetensors.index.fp16.json`` (T5-XXL encoder,
  d_model 4096, 9.5 GB per copy).
* ``tokenizer/`` and ``tokenizer_2/``: ``merges.txt``, ``special_tokens_map.json``, ``tokenizer_config.json``,
  ``vocab.json`` (CLIP BPE; CLIP-G pads with "!"). ``tokenizer_3/``: ``special_tokens_map.json``, ``spiece.model``,
  ``tokenizer.json``, ``tokenizer_config.json``.
* ``transformer/``: ``config.json`` (``SD3Transformer2DModel``: 24 layers, 24 heads × 64, ``dual_attention_layers``
  0–12, ``qk_norm`` rms_norm, ``pos_embed_max_size`` 384, ``sample_size`` 128, ``joint_attention_dim`` 4096,
  ``pooled_projection_dim`` 2048) and ``diffusion_pytorch_model.safetensors`` (4.94 GB, half precision), **no fp16
  variant**; ``vae/``: ``config.json`` (16 latent channels, ``scaling_factor`` 1.5305, ``shift_factor`` 0.0609, no
  quant convs) and ``diffusion_pytorch_model.safetensors`` (168 MB, half precision), **no fp16 variant**.
* gating: the model card's ``extra_gated_prompt`` (accept the Stability AI Community License and share contact
  details); the files download only with a token of an account that accepted it.

The tiny folder keeps every file name, class and non-size config value; sizes shrink. Not reproduced:
``tokenizer_3/spiece.model`` (a trained SentencePiece model: ``sentencepiece`` is not installed here, and the fast
T5 tokenizer reads ``tokenizer.json`` alone, so ``SD35_FILES`` leaves it out too), and the CLIP tokenizers'
49k-entry vocabulary (a few words here).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from testing.tiny import write_clip_tokenizer

SD35_REPO_ID = "stabilityai/stable-diffusion-3.5-medium"
# Pinned: the revision that independent public projects pass for this repo (``--revision``, ``model_revision``) and
# whose cache snapshot their exported configs name; those configs equal the release's listed above. Whether it is the
# repo's head today could not be checked offline; pinning it keeps a Space on the files verified here.
SD35_REVISION = "b940f670f0eda2d07fbb75229e779da1ad11eb80"
SD35_SCHEDULER_CONFIG = {"_class_name": "FlowMatchEulerDiscreteScheduler", "_diffusers_version": "0.29.0.dev0",
                         "num_train_timesteps": 1000, "shift": 3.0}
SD35_MODEL_INDEX = {
    "_class_name": "StableDiffusion3Pipeline",
    "_diffusers_version": "0.31.0.dev0",
    "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
    "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
    "text_encoder_3": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "CLIPTokenizer"],
    "tokenizer_2": ["transformers", "CLIPTokenizer"],
    "tokenizer_3": ["transformers", "T5TokenizerFast"],
    "transformer": ["diffusers", "SD3Transformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
CLIP_TOKENIZER_FILES = ("merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json")
# What a Space running in fp16 reads: configs, tokenizers, the fp16 variants where the repo has them (text encoders),
# else the plain weights (transformer, VAE: already half precision). Not tokenizer_3/spiece.model: the fast T5
# tokenizer (T5TokenizerFast, the index's class) reads tokenizer.json alone.
SD35_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors",
    "text_encoder_2/config.json",
    "text_encoder_2/model.fp16.safetensors",
    "text_encoder_3/config.json",
    "text_encoder_3/model.safetensors.index.fp16.json",
    "text_encoder_3/model.fp16-00001-of-00002.safetensors",
    "text_encoder_3/model.fp16-00002-of-00002.safetensors",
    *(f"tokenizer/{name}" for name in CLIP_TOKENIZER_FILES),
    *(f"tokenizer_2/{name}" for name in CLIP_TOKENIZER_FILES),
    "tokenizer_3/special_tokens_map.json",
    "tokenizer_3/tokenizer.json",
    "tokenizer_3/tokenizer_config.json",
    "transformer/config.json",
    "transformer/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
WORDS = ["a", "red", "blue", "green", "circle", "square", "cat", "dog", "photo", "of", "on", "the", "left", "right"]


def t5_vocabulary(words: list[str], sentinels: int) -> list[tuple[str, float]]:
    """A Unigram vocabulary in T5's order (<pad>, </s>, <unk>, pieces, sentinels in reverse); every word is one
    piece and single letters cover the rest."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{w}", -1.0) for w in words]
    letters = "abcdefghijklmnopqrstuvwxyz"
    pieces += [(f"▁{c}", -8.0) for c in letters if f"▁{c}" not in dict(pieces)] + [(c, -9.0) for c in letters]
    return pieces + [(f"<extra_id_{i}>", 0.0) for i in range(sentinels - 1, -1, -1)]


def write_t5_tokenizer(folder: Path, max_length: int, sentinels: int = 4) -> Path:
    """A T5 tokenizer (``tokenizer.json`` + config) with ``model_max_length`` = ``max_length``, no downloads."""
    from transformers import T5Tokenizer

    tokenizer = T5Tokenizer(vocab=t5_vocabulary(WORDS, sentinels), extra_ids=sentinels, model_max_length=max_length)
    tokenizer.save_pretrained(folder)
    return folder


def write_special_tokens_map(folder: Path, tokenizer) -> None:
    """``special_tokens_map.json`` as transformers 4 wrote it (the real repo's tokenizers have one)."""
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    tokens = {n: str(getattr(tokenizer, n)) for n in names if getattr(tokenizer, n, None) is not None}
    extra = [str(t) for t in getattr(tokenizer, "additional_special_tokens", []) or []]
    (folder / "special_tokens_map.json").write_text(
        json.dumps({**({"additional_special_tokens": extra} if extra else {}), **tokens}, indent=2) + "\n")


def write_clip_tokenizer_folder(folder: Path, max_length: int, pad_token: str | None = None) -> Path:
    """A CLIP tokenizer with exactly the real repo's files (no ``tokenizer.json``: the slow files must suffice)."""
    from transformers import CLIPTokenizer

    scratch = folder.parent / f"_{folder.name}_scratch"
    write_clip_tokenizer(scratch, WORDS, max_length=max_length)
    tokenizer = CLIPTokenizer.from_pretrained(scratch, **({"pad_token": pad_token} if pad_token else {}))
    tokenizer.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):  # transformers 5 saves tokenizer.json instead of the BPE files
        shutil.copy(scratch / name, folder / name)
    shutil.rmtree(scratch)
    write_special_tokens_map(folder, tokenizer)
    for path in folder.iterdir():
        if path.name not in CLIP_TOKENIZER_FILES:
            path.unlink()
    return folder


def clip_tower(hidden: int, seed: int, max_positions: int = 77):
    """A random ``CLIPTextModelWithProjection`` (SD3's CLIP class) of width ``hidden``, projecting to ``hidden``."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    config = CLIPTextConfig(hidden_size=hidden, intermediate_size=2 * hidden, num_attention_heads=4,
                            num_hidden_layers=2, vocab_size=1000, max_position_embeddings=max_positions,
                            projection_dim=hidden, bos_token_id=0, eos_token_id=2, pad_token_id=1)
    return CLIPTextModelWithProjection(config).eval()


def t5_encoder(d_model: int, vocab_size: int, seed: int):
    """A random ``T5EncoderModel`` (T5 v1.1's gated GELU) of width ``d_model``."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    config = T5Config(vocab_size=vocab_size, d_model=d_model, d_kv=8, d_ff=2 * d_model, num_layers=2, num_heads=4,
                      relative_attention_num_buckets=8, relative_attention_max_distance=16, dropout_rate=0.0,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0)
    return T5EncoderModel(config).eval()


def tiny_sd3_transformer(seed: int, in_channels: int = 16, sample_size: int = 8, joint_width: int = 96,
                         pooled_width: int = 80, pos_embed_max_size: int = 16, dual_attention: bool = True):
    """A random two-block MM-DiT with SD3.5 Medium's design choices (QK RMS-norm, a dual-attention first block)."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(seed)
    return SD3Transformer2DModel(
        sample_size=sample_size, patch_size=2, in_channels=in_channels, out_channels=in_channels, num_layers=2,
        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=joint_width, caption_projection_dim=16,
        pooled_projection_dim=pooled_width, pos_embed_max_size=pos_embed_max_size, qk_norm="rms_norm",
        dual_attention_layers=(0,) if dual_attention else (),
    ).eval()


def tiny_sd3_vae(seed: int):
    """A random ``AutoencoderKL`` with SD3's latent format: four levels (8× down), 16 channels, SD3's scaling and
    shift factors, no quant convs."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, block_out_channels=(8, 16, 16, 16), layers_per_block=1,
        latent_channels=16, norm_num_groups=8, sample_size=64, scaling_factor=1.5305, shift_factor=0.0609,
        use_quant_conv=False, use_post_quant_conv=False, mid_block_add_attention=True, force_upcast=True,
    ).eval()


def save_half(model, folder: Path, *, variant: bool = False, shards: int = 1) -> None:
    """Save ``model`` in float16 (the real repo's files are half precision), plain and, with ``variant``, also as
    the ``fp16`` variant; ``shards`` > 1 splits each copy as T5's is split."""
    with _quiet_diffusers():
        model = model.to(torch.float16)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    # Shards are filled greedily tensor by tensor: a fifth over the even split leaves exactly ``shards`` files here.
    extra = {"max_shard_size": int(size / shards * 1.2)} if shards > 1 else {}
    model.save_pretrained(folder, safe_serialization=True, **extra)
    if variant:
        model.save_pretrained(folder, safe_serialization=True, variant="fp16", **extra)


@contextmanager
def _quiet_diffusers() -> Iterator[None]:
    """Without diffusers' advice to load in half precision instead of casting: these models are being written."""
    from diffusers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


def build_tiny_sd3(folder: Path, seed: int = 0, shift: float = 3.0) -> Path:
    """Write a tiny random ``stabilityai/stable-diffusion-3.5-medium`` in its real layout (see the module docstring):
    CLIP-L (width 32) + CLIP-G (48) → pooled 80, T5 (96) → joint width 96, a 16-channel 8× VAE, native 64 × 64.

    ``shift`` replaces the scheduler's 3.0 (the tests' wrong-shift comparison).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        (folder / "model_index.json").write_text(json.dumps(SD35_MODEL_INDEX, indent=2) + "\n")
        (folder / "scheduler").mkdir(exist_ok=True)
        (folder / "scheduler" / "scheduler_config.json").write_text(
            json.dumps({**SD35_SCHEDULER_CONFIG, "shift": shift}, indent=2) + "\n")
        write_clip_tokenizer_folder(folder / "tokenizer", 77)
        write_clip_tokenizer_folder(folder / "tokenizer_2", 77, pad_token="!")
        write_t5_tokenizer(folder / "tokenizer_3", 512)
        from transformers import T5Tokenizer

        t5_tokenizer = T5Tokenizer.from_pretrained(folder / "tokenizer_3")
        write_special_tokens_map(folder / "tokenizer_3", t5_tokenizer)
        save_half(clip_tower(32, seed + 1), folder / "text_encoder", variant=True)
        save_half(clip_tower(48, seed + 2), folder / "text_encoder_2", variant=True)
        save_half(t5_encoder(96, len(t5_tokenizer), seed + 3), folder / "text_encoder_3", variant=True, shards=2)
        save_half(tiny_sd3_transformer(seed + 4), folder / "transformer")
        save_half(tiny_sd3_vae(seed + 5), folder / "vae")
    return folder


TOY_LIKE_INDEX = {**SD35_MODEL_INDEX, "_diffusers_version": None, "tokenizer_3": ["transformers", "T5Tokenizer"],
                  "text_encoder_2": [None, None], "tokenizer_2": [None, None], "vae": [None, None]}


def build_toy_like_flow(folder: Path, seed: int = 0, size: int = 16) -> Path:
    """Write a folder in ``assets/toy/flow``'s layout (``scripts/train/toy_flow.py``): no CLIP-G, no VAE, an MM-DiT
    on ``size`` × ``size`` RGB pixels, CLIP and T5 of width 32 with windows of 24 tokens, shift 1."""
    import diffusers
    from diffusers import FlowMatchEulerDiscreteScheduler
    from transformers import T5Tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng():
        index = {**TOY_LIKE_INDEX, "_diffusers_version": diffusers.__version__}
        (folder / "model_index.json").write_text(json.dumps(index, indent=2))
        FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False) \
            .save_pretrained(folder / "scheduler")
        write_clip_tokenizer(folder / "tokenizer", WORDS, max_length=24)
        write_t5_tokenizer(folder / "tokenizer_3", 24)
        clip_tower(32, seed + 1, max_positions=24).save_pretrained(folder / "text_encoder")
        vocab = len(T5Tokenizer.from_pretrained(folder / "tokenizer_3"))
        t5_encoder(32, vocab, seed + 3).save_pretrained(folder / "text_encoder_3")
        transformer = tiny_sd3_transformer(seed + 4, in_channels=3, sample_size=size, joint_width=32, pooled_width=32,
                                           pos_embed_max_size=size // 2, dual_attention=False)
        save_half(transformer, folder / "transformer")  # as the toy's export: fp16 on disk, loaders upcast
    return folder
