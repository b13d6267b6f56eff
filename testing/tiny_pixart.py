"""Tiny random PixArt-Σ folders in the real layouts of the two hub repos the full profile reads.

diffusers' PixArt-Σ docs load the 512 px transformer from ``PixArt-alpha/PixArt-Sigma-XL-2-512-MS`` (subfolder
``transformer``) and the rest of the pipeline (T5-v1.1-XXL encoder, its tokenizer, the SDXL VAE, the scheduler) from
``PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers``. The layouts below were read from the hub's file browser and
commit pages as stored by this project's search index (huggingface.co/<repo>/tree/<commit>, /commits/main,
/commit/<sha>):

``PixArt-alpha/PixArt-Sigma-XL-2-512-MS`` at 76fb7eb5a9314bc1e4e479d2f13447517fca9be4 (main, 8 commits, last
"Delete asset/asset_model.png", 2024-05-16): ``transformer/config.json`` (746 B) and
``transformer/diffusion_pytorch_model.safetensors`` (2 443 492 488 B: float32, no fp16 variant), both from commit
1429642 "Upload PixArt-Sigma-512px diffusers"; besides them only ``README.md``, ``.gitattributes`` and ``asset/``
images, which the app never reads. The config is the one shown in that commit (``_class_name``
"Transformer2DModel", diffusers 0.28.0.dev0, ``sample_size`` 64, ``interpolation_scale`` 1, no
``use_additional_conditions`` key: diffusers turns micro-conditions off for ``sample_size`` ≠ 128); written
with sorted keys and two-space indents it is 746 B, the listed size.

``PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers`` at 2c17b4e85261cd549b4068d086b7c2ba9d468e9f (main, 4 commits, last
"Upload config.json"; the hash is also the snapshot named in a public copy's configs): ``model_index.json`` (400 B),
``scheduler/scheduler_config.json`` (655 B), ``text_encoder/config.json`` (747 B),
``text_encoder/model-00001-of-00002.safetensors`` (9.99 GB), ``text_encoder/model-00002-of-00002.safetensors``
(9.06 GB), ``text_encoder/model.safetensors.index.json`` (19.9 kB), ``tokenizer/special_tokens_map.json``,
``tokenizer/spiece.model`` (792 kB), ``tokenizer/tokenizer_config.json``, ``vae/config.json`` (631 B) and
``vae/diffusion_pytorch_model.safetensors`` (335 MB: float32). No file has an fp16 variant: a Space in fp16
downloads the float32 files (19 GB for the T5 encoder) and casts them while loading. The tokenizer folder has no
``tokenizer.json``: transformers builds the tokenizer from ``spiece.model``, which needs the ``sentencepiece`` and
``protobuf`` packages at run time.

Config contents: the scheduler file is the 655-byte ``scheduler_config.json`` uploaded in the same batch to
``PixArt-alpha/PixArt-Sigma-XL-2-1024-MS`` (DPMSolverMultistepScheduler, DPM-Solver++ of order 2, linear β from
1e-4 to 0.02, ε-prediction, "linspace" spacing); written as below it is exactly 655 B. The model index,
text-encoder and VAE configs are those of a public re-upload of this snapshot (Vargol/PixArt-Sigma_16bit) less its
``_name_or_path``; the index then measures the listed 400 B (its pipeline class is "PixArtAlphaPipeline", the hub's
tag for the repo; the copy says PixArtSigmaPipeline, of the same length). The copy's text-encoder config measures
741 B against the listed 747 B, so some value differs (probably ``transformers_version``, or ``torch_dtype``: the
copy, a 16-bit conversion, says bfloat16; here it is float32, the dtype of the listed 19 GB of weights). The app
reads neither. T5's real ``spiece.model`` normalises with "nmt_nfkc"; the tiny one is identity (lower-case ASCII).

The tiny folders keep these file names, sharded text encoder (two shards and the index) included, the real config
keys and scheduler numbers, and shrink only the widths and depths. The one addition is ``tokenizer/tokenizer.json``
(``fast_tokenizer_file=True``, the default): this project's pinned environment has no ``sentencepiece``, so it reads
the fast file; ``spiece.model`` is written too, a valid SentencePiece model of the same vocabulary.
"""

from __future__ import annotations

import json
import math
import string
import struct
from pathlib import Path

import torch

PIXART_TRANSFORMER_REPO = "PixArt-alpha/PixArt-Sigma-XL-2-512-MS"
PIXART_TRANSFORMER_REVISION = "76fb7eb5a9314bc1e4e479d2f13447517fca9be4"
PIXART_BASE_REPO = "PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers"
PIXART_BASE_REVISION = "2c17b4e85261cd549b4068d086b7c2ba9d468e9f"

# What a Space running in fp16 reads from each repo: no fp16 variants exist, so the full (float32) weights.
PIXART_TRANSFORMER_SPACE_FILES = ("transformer/config.json", "transformer/diffusion_pytorch_model.safetensors")
PIXART_BASE_SPACE_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model-00001-of-00002.safetensors",
    "text_encoder/model-00002-of-00002.safetensors",
    "text_encoder/model.safetensors.index.json",
    "tokenizer/special_tokens_map.json",
    "tokenizer/spiece.model",
    "tokenizer/tokenizer_config.json",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
)
PIXART_FP16_VARIANTS: tuple[str, ...] = ()  # neither repo ships *.fp16.safetensors

# transformer/config.json of PixArt-Sigma-XL-2-512-MS (commit 1429642), key for key.
REAL_TRANSFORMER_CONFIG = {
    "_class_name": "Transformer2DModel", "_diffusers_version": "0.28.0.dev0", "activation_fn": "gelu-approximate",
    "attention_bias": True, "attention_head_dim": 72, "attention_type": "default", "caption_channels": 4096,
    "cross_attention_dim": 1152, "double_self_attention": False, "dropout": 0.0, "in_channels": 4,
    "interpolation_scale": 1, "norm_elementwise_affine": False, "norm_eps": 1e-06, "norm_num_groups": 32,
    "norm_type": "ada_norm_single", "num_attention_heads": 16, "num_embeds_ada_norm": 1000, "num_layers": 28,
    "num_vector_embeds": None, "only_cross_attention": False, "out_channels": 8, "patch_size": 2, "sample_size": 64,
    "upcast_attention": False, "use_linear_projection": False,
}
REAL_SCHEDULER_CONFIG = {
    "_class_name": "DPMSolverMultistepScheduler", "_diffusers_version": "0.22.0.dev0", "algorithm_type": "dpmsolver++",
    "beta_end": 0.02, "beta_schedule": "linear", "beta_start": 0.0001, "dynamic_thresholding_ratio": 0.995,
    "euler_at_final": False, "lambda_min_clipped": -math.inf, "lower_order_final": True, "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "sample_max_value": 1.0, "solver_order": 2, "solver_type": "midpoint",
    "steps_offset": 0, "thresholding": False, "timestep_spacing": "linspace", "trained_betas": None,
    "use_karras_sigmas": False, "use_lu_lambdas": False, "variance_type": None,
}
REAL_MODEL_INDEX = {
    "_class_name": "PixArtAlphaPipeline", "_diffusers_version": "0.28.0.dev0",
    "scheduler": ["diffusers", "DPMSolverMultistepScheduler"], "text_encoder": ["transformers", "T5EncoderModel"],
    "tokenizer": ["transformers", "T5Tokenizer"], "transformer": ["diffusers", "Transformer2DModel"],
    "vae": ["diffusers", "AutoencoderKL"],
}
# text_encoder/config.json: T5-v1.1-XXL's encoder (4.76 B parameters).
REAL_T5_CONFIG = {
    "architectures": ["T5EncoderModel"], "classifier_dropout": 0.0, "d_ff": 10240, "d_kv": 64, "d_model": 4096,
    "decoder_start_token_id": 0, "dense_act_fn": "gelu_new", "dropout_rate": 0.1, "eos_token_id": 1,
    "feed_forward_proj": "gated-gelu", "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": True,
    "layer_norm_epsilon": 1e-06, "model_type": "t5", "num_decoder_layers": 24, "num_heads": 64, "num_layers": 24,
    "output_past": True, "pad_token_id": 0, "relative_attention_max_distance": 128,
    "relative_attention_num_buckets": 32, "tie_word_embeddings": False, "torch_dtype": "float32",
    "transformers_version": "4.35.2", "use_cache": True, "vocab_size": 32128,
}
# vae/config.json: the SDXL VAE (scaling factor 0.13025, no fp32 upcast asked for).
REAL_VAE_CONFIG = {
    "_class_name": "AutoencoderKL", "_diffusers_version": "0.28.0.dev0", "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512], "down_block_types": ["DownEncoderBlock2D"] * 4,
    "force_upcast": False, "in_channels": 3, "latent_channels": 4, "latents_mean": None, "latents_std": None,
    "layers_per_block": 2, "norm_num_groups": 32, "out_channels": 3, "sample_size": 512, "scaling_factor": 0.13025,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}

# The tiny models: real keys, small widths (T5 width = the transformer's caption_channels).
TINY_T5_WIDTH = 32
TINY_TRANSFORMER = {"attention_head_dim": 8, "num_attention_heads": 2, "cross_attention_dim": 16,
                    "caption_channels": TINY_T5_WIDTH, "num_layers": 2, "sample_size": 8}
TINY_T5 = {"d_model": TINY_T5_WIDTH, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 2, "num_decoder_layers": 2}
TINY_VAE = {"block_out_channels": [8, 8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4}
TINY_WORDS = ("a", "photo", "of", "red", "green", "blue", "circle", "square", "cat", "dog", "on", "the", "big")
EXTRA_IDS = 100  # T5's sentinel tokens <extra_id_0…99>, appended after the SentencePiece vocabulary


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def build_tiny_pixart_transformer(folder: Path, seed: int = 0) -> Path:
    """``<folder>/transformer/`` of ``PixArt-Sigma-XL-2-512-MS``: a 2-layer PixArt transformer (AdaLN-single,
    learned σ: 8 output channels for 4 latent ones, T5 captions of width ``TINY_T5_WIDTH``), its config rewritten
    with the real file's keys and class name."""
    from diffusers import PixArtTransformer2DModel

    folder = Path(folder)
    config = {**REAL_TRANSFORMER_CONFIG, **TINY_TRANSFORMER}
    accepted = PixArtTransformer2DModel.extract_init_dict(config)[0]  # the real file's legacy keys are ignored
    torch.manual_seed(seed)
    model = PixArtTransformer2DModel(**accepted)
    with torch.no_grad():
        # With default init the prompt moves ε little (w 4.5 → 3.5 changed the image by 4.5 grey levels); a wider
        # output projection doubles that, so the parity test's wrong-scale check fails by a clear margin.
        model.proj_out.weight.mul_(4.0)
    model.save_pretrained(folder / "transformer", safe_serialization=True)
    _write_json(folder / "transformer" / "config.json", config)
    return folder


def _tiny_vocab() -> list[tuple[str, float]]:
    """(piece, log-probability) as T5's SentencePiece model orders them: <pad>, </s>, <unk>, then the pieces. Whole
    words outscore their letters, so the test prompts tokenize into words; any other lowercase text into letters."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    pieces += [(c, -5.0) for c in string.ascii_lowercase + string.digits + ",."]
    pieces += [("▁" + w, -2.0) for w in TINY_WORDS]
    return pieces


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative int32 fields are sign-extended to ten bytes, as protobuf does
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int | float) -> bytes:
    """One protobuf field: varint (int/bool), fixed32 (float) or length-delimited (bytes)."""
    if isinstance(payload, float):
        return _varint(number << 3 | 5) + struct.pack("<f", payload)
    if isinstance(payload, int):
        return _varint(number << 3) + _varint(payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def spiece_model_bytes(vocab: list[tuple[str, float]]) -> bytes:
    """A SentencePiece ``ModelProto`` (sentencepiece_model.proto) for a unigram vocabulary, T5's way: pad 0, eos 1,
    unk 2, no bos; identity normalisation (an empty precompiled charsmap), dummy prefix, whitespace escaping."""
    kinds = {"<pad>": 3, "</s>": 3, "<unk>": 2}  # CONTROL, CONTROL, UNKNOWN; the rest NORMAL (1)
    pieces = b"".join(_field(1, _field(1, p.encode()) + _field(2, float(s)) + _field(3, kinds.get(p, 1)))
                      for p, s in vocab)
    trainer = (_field(3, 1) + _field(4, len(vocab)) + _field(40, 2) + _field(41, -1) + _field(42, 1)
               + _field(43, 0))  # model_type UNIGRAM, vocab_size, unk_id, bos_id, eos_id, pad_id
    normalizer = _field(1, b"identity") + _field(2, b"") + _field(3, 1) + _field(4, 1) + _field(5, 1)
    return pieces + _field(2, trainer) + _field(3, normalizer)


def write_tiny_t5_tokenizer(folder: Path, fast_tokenizer_file: bool = True) -> Path:
    """``tokenizer/`` with the real file names: ``spiece.model``, ``special_tokens_map.json`` and
    ``tokenizer_config.json`` (the pre-v5 format the repo ships), plus ``tokenizer.json`` when asked."""
    from transformers import T5Tokenizer

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab = _tiny_vocab()
    extra = [f"<extra_id_{i}>" for i in range(EXTRA_IDS)]
    (folder / "spiece.model").write_bytes(spiece_model_bytes(vocab))
    _write_json(folder / "special_tokens_map.json", {"additional_special_tokens": extra, "eos_token": "</s>",
                                                     "pad_token": "<pad>", "unk_token": "<unk>"})
    _write_json(folder / "tokenizer_config.json", {
        "additional_special_tokens": extra, "clean_up_tokenization_spaces": True, "eos_token": "</s>",
        "extra_ids": EXTRA_IDS, "model_max_length": 1000000000000000019884624838656, "pad_token": "<pad>",
        "tokenizer_class": "T5Tokenizer", "unk_token": "<unk>"})
    if fast_tokenizer_file:
        # Sentinels after the pieces in reverse, as transformers converts T5's spiece.model: <extra_id_0> last.
        sentinels = [(token, 0.0) for token in reversed(extra)]
        fast = T5Tokenizer(vocab=vocab + sentinels, extra_ids=EXTRA_IDS)
        fast.backend_tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def tiny_t5_vocab_size() -> int:
    """Rows of the tiny encoder's embedding: the pieces, the sentinels, rounded up as T5 pads 32 100 to 32 128."""
    return 64 * math.ceil((len(_tiny_vocab()) + EXTRA_IDS) / 64)


def build_tiny_pixart_base(folder: Path, seed: int = 0, fast_tokenizer_file: bool = True) -> Path:
    """``pixart_sigma_sdxlvae_T5_diffusers``: model index, scheduler, sharded T5 encoder, tokenizer and a 4-level VAE
    (so the latent grid is an eighth of the image, as with the SDXL VAE)."""
    from diffusers import AutoencoderKL
    from transformers import T5Config, T5EncoderModel

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(folder / "model_index.json", REAL_MODEL_INDEX)
    _write_json(folder / "scheduler" / "scheduler_config.json", REAL_SCHEDULER_CONFIG)
    torch.manual_seed(seed)
    t5_config = {k: v for k, v in REAL_T5_CONFIG.items() if k not in ("architectures", "transformers_version")}
    encoder = T5EncoderModel(T5Config(**{**t5_config, **TINY_T5, "vocab_size": tiny_t5_vocab_size()}))
    size = sum(t.numel() * t.element_size() for t in encoder.state_dict().values())
    # Two shards and an index, as the real 19 GB encoder is stored; the shard limit splits the tiny one in two.
    encoder.save_pretrained(folder / "text_encoder", safe_serialization=True, max_shard_size=size * 6 // 10)
    shards = sorted(p.name for p in (folder / "text_encoder").glob("model-*.safetensors"))
    if shards != ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]:
        raise RuntimeError(f"the tiny T5 encoder was saved as {shards}, not in two shards like the real one")
    write_tiny_t5_tokenizer(folder / "tokenizer", fast_tokenizer_file)
    vae_config = {**REAL_VAE_CONFIG, **TINY_VAE}
    vae = AutoencoderKL(**AutoencoderKL.extract_init_dict(vae_config)[0])
    vae.save_pretrained(folder / "vae", safe_serialization=True)
    _write_json(folder / "vae" / "config.json", vae_config)
    return folder


def build_tiny_pixart(root: Path, seed: int = 0, fast_tokenizer_file: bool = True) -> tuple[Path, Path]:
    """Both folders under ``root``: (transformer repo, base repo), to pass to ``models.loading.pixart.load_pixart``."""
    root = Path(root)
    return (build_tiny_pixart_transformer(root / "PixArt-Sigma-XL-2-512-MS", seed),
            build_tiny_pixart_base(root / "pixart_sigma_sdxlvae_T5_diffusers", seed + 1, fast_tokenizer_file))
