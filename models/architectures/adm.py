"""ADM: the guided-diffusion UNet and its noise-aware classifier (``models/adapters/adm_sampling.py`` joins them to
the loop).

Architecture from Dhariwal & Nichol 2021 ("Diffusion Models Beat GANs", sec. 3 and appendix) and
Nichol & Dhariwal 2021 ("Improved DDPM"): a residual UNet with a sinusoidal timestep embedding,
BigGAN-style up/down-sampling residual blocks, adaptive group norm ("scale-shift norm"), multi-head
self-attention at chosen resolutions and, for the classifier, the encoder half of that UNet with an
attention-pooling head. Module names and parameter shapes follow the released checkpoints, so their
state dicts load unchanged; ``tests/test_adm.py`` proves keys, shapes and outputs against golden data.

Flags are the official command-line names (``create_model(**flags)``, ``create_classifier(**flags)``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

NUM_CLASSES = 1000

# Defaults of the official sampling scripts' argument parsers.
MODEL_DEFAULTS: dict[str, Any] = dict(
    image_size=64,
    num_channels=128,
    num_res_blocks=2,
    num_heads=4,
    num_heads_upsample=-1,
    num_head_channels=-1,
    attention_resolutions="16,8",
    channel_mult="",
    dropout=0.0,
    class_cond=False,
    use_checkpoint=False,
    use_scale_shift_norm=True,
    resblock_updown=False,
    use_fp16=False,
    use_new_attention_order=False,
    learn_sigma=False,
)
CLASSIFIER_DEFAULTS: dict[str, Any] = dict(
    image_size=64,
    classifier_use_fp16=False,
    classifier_width=128,
    classifier_depth=2,
    classifier_attention_resolutions="32,16,8",
    classifier_use_scale_shift_norm=True,
    classifier_resblock_updown=True,
    classifier_pool="attention",
)
# Extensions of this project (not upstream flags): explicit classifier layout and label count.
CLASSIFIER_EXTRA_DEFAULTS: dict[str, Any] = dict(
    classifier_channel_mult="",
    classifier_num_head_channels=64,
    num_classes=NUM_CLASSES,
)
SUPER_RES_FLAGS = ("large_size", "small_size")
# Accepted so a whole parsed flag set can be passed, but they do not change the networks.
SAMPLING_FLAGS = (
    "diffusion_steps",
    "noise_schedule",
    "timestep_respacing",
    "use_kl",
    "predict_xstart",
    "rescale_timesteps",
    "rescale_learned_sigmas",
    "clip_denoised",
    "num_samples",
    "batch_size",
    "use_ddim",
    "model_path",
    "classifier_path",
    "classifier_scale",
    "base_samples",
)
KNOWN_FLAGS = frozenset(
    [*MODEL_DEFAULTS, *CLASSIFIER_DEFAULTS, *CLASSIFIER_EXTRA_DEFAULTS, *SUPER_RES_FLAGS, *SAMPLING_FLAGS]
)

# Default channel multipliers per resolution (the released models' layouts).
_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}
_SUPER_RES_CHANNEL_MULT = {512: (1, 1, 2, 2, 4, 4), 256: (1, 1, 2, 2, 4, 4)}


# ----------------------------------------------------------------------------- building blocks


def timestep_embedding(timesteps: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [B, dim]: cosines first, then sines (the released weights expect this order)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=timesteps.device) / half)
    args = timesteps[:, None].float() * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(nn.GroupNorm):
    """GroupNorm that always normalises in float32, so fp16 activations keep their statistics."""

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x.float()).type(x.dtype)


def _norm(channels: int) -> GroupNorm32:
    return GroupNorm32(32, channels)


def _zeroed(module: nn.Module) -> nn.Module:
    # Output projections start at zero so every residual branch is the identity at initialisation.
    for p in module.parameters():
        p.detach().zero_()
    return module


class EmbedSequential(nn.Sequential):
    """A sequence whose residual blocks also receive the timestep (+ class) embedding."""

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:  # type: ignore[override]
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class Downsample(nn.Module):
    """Halve the resolution: strided 3x3 conv (``op``) or 2x2 average pooling."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        if use_conv:
            self.op: nn.Module = nn.Conv2d(channels, out_channels, 3, stride=2, padding=1)
        else:
            if out_channels != channels:
                raise ValueError("pooling cannot change the channel count")
            self.op = nn.AvgPool2d(kernel_size=2, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.op(x)


class Upsample(nn.Module):
    """Double the resolution: nearest neighbour, then optionally a 3x3 conv (``conv``)."""

    def __init__(self, channels: int, use_conv: bool, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.use_conv = use_conv
        if use_conv:
            self.conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        elif out_channels != channels:
            raise ValueError("nearest upsampling cannot change the channel count")

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.use_conv else x


class ResBlock(nn.Module):
    """Residual block conditioned on the embedding, optionally resampling (BigGAN-style up/down).

    With ``use_scale_shift_norm`` the embedding gives a per-channel scale and shift applied after the
    second normalisation (AdaGN); otherwise it is added to the hidden state.
    """

    def __init__(
        self,
        channels: int,
        emb_channels: int,
        dropout: float,
        out_channels: int | None = None,
        use_conv: bool = False,
        use_scale_shift_norm: bool = False,
        use_checkpoint: bool = False,
        up: bool = False,
        down: bool = False,
    ):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.use_checkpoint = use_checkpoint
        self.in_layers = nn.Sequential(_norm(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd: nn.Module = Upsample(channels, False)
            self.x_upd: nn.Module = Upsample(channels, False)
        elif down:
            self.h_upd, self.x_upd = Downsample(channels, False), Downsample(channels, False)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(
            nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels)
        )
        self.out_layers = nn.Sequential(
            _norm(out_channels),
            nn.SiLU(),
            nn.Dropout(p=dropout),
            _zeroed(nn.Conv2d(out_channels, out_channels, 3, padding=1)),
        )
        if out_channels == channels:
            self.skip_connection: nn.Module = nn.Identity()
        elif use_conv:
            self.skip_connection = nn.Conv2d(channels, out_channels, 3, padding=1)
        else:
            self.skip_connection = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, emb, use_reentrant=False)
        return self._forward(x, emb)

    def _forward(self, x: Tensor, emb: Tensor) -> Tensor:
        if self.updown:
            # Resample between the activation and the conv, so the conv runs at the new resolution.
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


def qkv_attention(qkv: Tensor, num_heads: int, legacy_order: bool) -> Tensor:
    """Multi-head attention over a packed ``[B, 3·H·C, T]`` projection; returns ``[B, H·C, T]``.

    The released weights pack heads in two ways: ``legacy_order`` interleaves per head (q_h, k_h, v_h
    blocks one head after another); the newer order splits into q, k, v first and then into heads.
    """
    b, width, length = qkv.shape
    ch = width // (3 * num_heads)
    if legacy_order:
        q, k, v = qkv.reshape(b * num_heads, 3 * ch, length).split(ch, dim=1)
    else:
        q, k, v = (part.reshape(b * num_heads, ch, length) for part in qkv.chunk(3, dim=1))
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
    return out.transpose(1, 2).reshape(b, num_heads * ch, length)


class AttentionBlock(nn.Module):
    """Spatial self-attention with a residual connection (1-D convs act as per-position linears)."""

    def __init__(
        self,
        channels: int,
        num_heads: int = 1,
        num_head_channels: int = -1,
        use_checkpoint: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise ValueError(f"{channels} channels do not split into heads of {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.use_checkpoint = use_checkpoint
        self.legacy_order = not use_new_attention_order
        self.norm = _norm(channels)
        self.qkv = nn.Conv1d(channels, 3 * channels, 1)
        self.proj_out = _zeroed(nn.Conv1d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return checkpoint(self._forward, x, use_reentrant=False)
        return self._forward(x)

    def _forward(self, x: Tensor) -> Tensor:
        b, c, *spatial = x.shape
        flat = x.reshape(b, c, -1)
        h = qkv_attention(self.qkv(self.norm(flat)), self.num_heads, self.legacy_order)
        return (flat + self.proj_out(h)).reshape(b, c, *spatial)


class AttentionPool2d(nn.Module):
    """CLIP-style attention pooling: the mean token attends over all positions (learned position embedding)."""

    def __init__(self, spatial_dim: int, embed_dim: int, num_head_channels: int, output_dim: int | None = None):
        super().__init__()
        self.positional_embedding = nn.Parameter(torch.randn(embed_dim, spatial_dim**2 + 1) / embed_dim**0.5)
        self.qkv_proj = nn.Conv1d(embed_dim, 3 * embed_dim, 1)
        self.c_proj = nn.Conv1d(embed_dim, output_dim or embed_dim, 1)
        self.num_heads = embed_dim // num_head_channels

    def forward(self, x: Tensor) -> Tensor:
        b, c = x.shape[:2]
        x = x.reshape(b, c, -1)
        x = torch.cat([x.mean(dim=-1, keepdim=True), x], dim=-1)
        x = x + self.positional_embedding[None].to(x.dtype)
        x = qkv_attention(self.qkv_proj(x), self.num_heads, legacy_order=False)
        return self.c_proj(x)[:, :, 0]


# ----------------------------------------------------------------------------- networks


def _torso_to(module_lists: Iterable[nn.Module], dtype: torch.dtype) -> None:
    # Only convolutions change precision; norms, embeddings and heads stay float32 as in the originals.
    for part in module_lists:
        for m in part.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                m.weight.data = m.weight.data.to(dtype)
                if m.bias is not None:
                    m.bias.data = m.bias.data.to(dtype)


def _check_layout(image_size: int, channel_mult: Sequence[float]) -> None:
    if image_size % (2 ** (len(channel_mult) - 1)):
        raise ValueError(f"image_size {image_size} is not divisible by 2^{len(channel_mult) - 1} (channel_mult)")


class _ADMBase(nn.Module):
    """Shared encoder path (embedding, input blocks, middle block) of the UNet and the classifier."""

    init_kwargs: dict[str, Any]
    use_fp16: bool

    def _build_encoder(
        self,
        *,
        image_size: int,
        in_channels: int,
        model_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float,
        channel_mult: Sequence[float],
        conv_resample: bool,
        use_checkpoint: bool,
        num_heads: int,
        num_head_channels: int,
        use_scale_shift_norm: bool,
        resblock_updown: bool,
        use_new_attention_order: bool,
    ) -> tuple[int, list[int], int]:
        _check_layout(image_size, channel_mult)
        emb_dim = model_channels * 4
        self.model_channels = model_channels
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self._maybe_label_embedding(emb_dim)
        ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([EmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_channels, ds = [ch], 1

        self._block_kw = dict(
            emb_dim=emb_dim, dropout=dropout, use_checkpoint=use_checkpoint, use_scale_shift_norm=use_scale_shift_norm,
            num_head_channels=num_head_channels, use_new_attention_order=use_new_attention_order,
        )
        res, attn = self._res, self._attn
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(EmbedSequential(*layers))
                skip_channels.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)
                self.input_blocks.append(EmbedSequential(down))
                skip_channels.append(ch)
                ds *= 2
        self.middle_block = EmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))
        return ch, skip_channels, ds

    def _res(self, cin: int, cout: int, **updown: bool) -> ResBlock:
        kw = self._block_kw
        return ResBlock(cin, kw["emb_dim"], kw["dropout"], out_channels=cout, use_checkpoint=kw["use_checkpoint"],
                        use_scale_shift_norm=kw["use_scale_shift_norm"], **updown)

    def _attn(self, channels: int, heads: int) -> AttentionBlock:
        kw = self._block_kw
        return AttentionBlock(channels, heads, kw["num_head_channels"], kw["use_checkpoint"],
                              kw["use_new_attention_order"])

    def _maybe_label_embedding(self, emb_dim: int) -> None:
        """The UNet adds a class embedding here (between time_embed and input_blocks in the state dict)."""

    def _torso(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block]

    @property
    def dtype(self) -> torch.dtype:
        """The precision the torso runs in (float16 after :meth:`convert_to_fp16`)."""
        return self.input_blocks[0][0].weight.dtype

    def convert_to_fp16(self) -> _ADMBase:
        """Cast the torso's convolutions to float16, as the original samplers did on the GPU."""
        _torso_to(self._torso(), torch.float16)
        return self

    def convert_to_fp32(self) -> _ADMBase:
        _torso_to(self._torso(), torch.float32)
        return self

    def _embed(self, timesteps: Tensor) -> Tensor:
        return self.time_embed(timestep_embedding(timesteps, self.model_channels).to(self.time_embed[0].weight.dtype))


class ADMUNet(_ADMBase):
    """The ADM diffusion UNet. ``forward(x, timesteps, y=None)`` returns ``[B, out_channels, H, W]``
    (ε, then the variance interpolation v ∈ [-1, 1] when the model learns Σ)."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ):
        super().__init__()
        self.init_kwargs = dict(
            image_size=image_size, in_channels=in_channels, model_channels=model_channels, out_channels=out_channels,
            num_res_blocks=num_res_blocks, attention_resolutions=list(attention_resolutions), dropout=dropout,
            channel_mult=list(channel_mult), num_classes=num_classes, use_checkpoint=use_checkpoint,
            use_fp16=use_fp16, num_heads=num_heads, num_head_channels=num_head_channels,
            num_heads_upsample=num_heads_upsample, use_scale_shift_norm=use_scale_shift_norm,
            resblock_updown=resblock_updown, use_new_attention_order=use_new_attention_order,
        )
        self.num_classes = num_classes
        self.use_fp16 = use_fp16
        self.out_channels = out_channels
        self.in_channels = in_channels
        self.image_size = image_size
        heads_up = num_heads if num_heads_upsample == -1 else num_heads_upsample
        ch, skips, ds = self._build_encoder(
            image_size=image_size, in_channels=in_channels, model_channels=model_channels,
            num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions, dropout=dropout,
            channel_mult=channel_mult, conv_resample=conv_resample, use_checkpoint=use_checkpoint,
            num_heads=num_heads, num_head_channels=num_head_channels, use_scale_shift_norm=use_scale_shift_norm,
            resblock_updown=resblock_updown, use_new_attention_order=use_new_attention_order,
        )
        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                layers: list[nn.Module] = [self._res(ch + skips.pop(), int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(self._attn(ch, heads_up))
                if level and i == num_res_blocks:
                    layers.append(self._res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(EmbedSequential(*layers))
        input_ch = int(channel_mult[0] * model_channels)
        self.out = nn.Sequential(_norm(ch), nn.SiLU(), _zeroed(nn.Conv2d(input_ch, out_channels, 3, padding=1)))

    def _maybe_label_embedding(self, emb_dim: int) -> None:
        if self.num_classes is not None:
            self.label_emb = nn.Embedding(self.num_classes, emb_dim)

    def _torso(self) -> list[nn.Module]:
        return [self.input_blocks, self.middle_block, self.output_blocks]

    def forward(self, x: Tensor, timesteps: Tensor, y: Tensor | None = None) -> Tensor:
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("y must be given exactly when the model is class-conditional")
        emb = self._embed(timesteps)
        if y is not None:
            emb = emb + self.label_emb(y)
        h = x.type(self.dtype)
        skips = []
        for block in self.input_blocks:
            h = block(h, emb)
            skips.append(h)
        h = self.middle_block(h, emb)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


class ADMSuperResUNet(ADMUNet):
    """The upsampler: the UNet with the bilinearly upsampled low-resolution image concatenated to x."""

    def __init__(self, image_size: int, in_channels: int, *args: Any, **kwargs: Any):
        super().__init__(image_size, in_channels * 2, *args, **kwargs)
        self.init_kwargs["in_channels"] = self.in_channels = in_channels

    def forward(self, x: Tensor, timesteps: Tensor, low_res: Tensor, y: Tensor | None = None) -> Tensor:  # type: ignore[override]
        up = F.interpolate(low_res, x.shape[-2:], mode="bilinear")
        return super().forward(torch.cat([x, up], dim=1), timesteps, y)


class ADMClassifier(_ADMBase):
    """The noise-aware classifier: the UNet's encoder half plus a pooling head. ``forward(x, t)`` → logits."""

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Sequence[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
        pool: str = "adaptive",
    ):
        super().__init__()
        del num_heads_upsample  # no decoder; accepted so UNet-style kwargs can be reused
        self.init_kwargs = dict(
            image_size=image_size, in_channels=in_channels, model_channels=model_channels, out_channels=out_channels,
            num_res_blocks=num_res_blocks, attention_resolutions=list(attention_resolutions),
            channel_mult=list(channel_mult), use_fp16=use_fp16, num_head_channels=num_head_channels,
            use_scale_shift_norm=use_scale_shift_norm, resblock_updown=resblock_updown, pool=pool,
        )
        self.use_fp16 = use_fp16
        self.pool = pool
        self.out_channels = out_channels
        self.image_size = image_size
        ch, skips, ds = self._build_encoder(
            image_size=image_size, in_channels=in_channels, model_channels=model_channels,
            num_res_blocks=num_res_blocks, attention_resolutions=attention_resolutions, dropout=dropout,
            channel_mult=channel_mult, conv_resample=conv_resample, use_checkpoint=use_checkpoint,
            num_heads=num_heads, num_head_channels=num_head_channels, use_scale_shift_norm=use_scale_shift_norm,
            resblock_updown=resblock_updown, use_new_attention_order=use_new_attention_order,
        )
        if pool == "attention":
            if num_head_channels == -1:
                raise ValueError("attention pooling needs num_head_channels")
            self.out = nn.Sequential(_norm(ch), nn.SiLU(), AttentionPool2d(image_size // ds, ch, num_head_channels,
                                                                          out_channels))
        elif pool == "adaptive":
            self.out = nn.Sequential(_norm(ch), nn.SiLU(), nn.AdaptiveAvgPool2d((1, 1)),
                                     _zeroed(nn.Conv2d(ch, out_channels, 1)), nn.Flatten())
        elif pool in ("spatial", "spatial_v2"):
            # Spatial means of every input block and the middle block, concatenated.
            features = sum(skips) + ch
            if pool == "spatial":
                self.out = nn.Sequential(nn.Linear(features, 2048), nn.ReLU(), nn.Linear(2048, out_channels))
            else:
                self.out = nn.Sequential(nn.Linear(features, 2048), _norm(2048), nn.SiLU(),
                                         nn.Linear(2048, out_channels))
        else:
            raise ValueError(f"classifier_pool must be attention, adaptive, spatial or spatial_v2; got {pool!r}")

    def forward(self, x: Tensor, timesteps: Tensor) -> Tensor:
        emb = self._embed(timesteps)
        spatial = self.pool.startswith("spatial")
        means = []
        h = x.type(self.dtype)
        for block in self.input_blocks:
            h = block(h, emb)
            if spatial:
                means.append(h.type(x.dtype).mean(dim=(2, 3)))
        h = self.middle_block(h, emb)
        if spatial:
            means.append(h.type(x.dtype).mean(dim=(2, 3)))
            return self.out(torch.cat(means, dim=-1))
        return self.out(h.type(x.dtype))


# ----------------------------------------------------------------------------- flags → networks


def check_flags(flags: dict[str, Any]) -> None:
    """Refuse flags the release never had (a typo would otherwise be silently ignored)."""
    unknown = sorted(set(flags) - KNOWN_FLAGS)
    if unknown:
        raise ValueError(f"unknown ADM flag(s): {', '.join(unknown)}")


def parse_channel_mult(channel_mult: str | Sequence[float], image_size: int, table: dict | None = None) -> tuple:
    """``""`` → the released layout for ``image_size``; ``"1,2,2"`` or a sequence → as given."""
    if isinstance(channel_mult, str):
        if not channel_mult.strip():
            table = _CHANNEL_MULT if table is None else table
            if image_size not in table:
                raise ValueError(f"no default channel_mult for image_size {image_size}; pass one, e.g. '1,2,2'")
            return tuple(table[image_size])
        parts = [float(p) for p in channel_mult.split(",")]
    else:
        parts = [float(p) for p in channel_mult]
    if not parts or any(p <= 0 for p in parts):
        raise ValueError(f"channel_mult must be positive numbers, got {channel_mult!r}")
    return tuple(int(p) if p == int(p) else p for p in parts)


def parse_attention_resolutions(resolutions: str | Iterable[int], image_size: int) -> tuple[int, ...]:
    """Resolutions (``"32,16,8"``) → downsample factors (``image_size // res``), as the flags mean them."""
    if isinstance(resolutions, str):
        values = [int(r) for r in resolutions.split(",") if r.strip()]
    else:
        values = [int(r) for r in resolutions]
    for r in values:
        if r <= 0 or image_size % r:
            raise ValueError(f"attention resolution {r} does not divide image_size {image_size}")
    return tuple(image_size // int(r) for r in values)


def create_model(**flags: Any) -> ADMUNet:
    """The diffusion UNet from the official flags (``image_size``, ``num_channels``, ``class_cond``, ...).

    ``large_size``/``small_size`` build the upsampler instead. ``channel_mult`` may be explicit
    ("1,2,2"); ``num_classes`` (default 1000) sets the label count of class-conditional models.
    Sampling-only flags are accepted and ignored; unknown flags raise ``ValueError``. The model is built
    in float32 (checkpoints are float32); see :func:`to_runtime` for the fp16 the originals ran in.
    """
    check_flags(flags)
    f = {**MODEL_DEFAULTS, **{k: v for k, v in flags.items() if k in MODEL_DEFAULTS}}
    super_res = any(k in flags for k in SUPER_RES_FLAGS)
    if super_res:
        image_size = int(flags.get("large_size", 256))
        mult = parse_channel_mult(f["channel_mult"], image_size, _SUPER_RES_CHANNEL_MULT)
    else:
        image_size = int(f["image_size"])
        mult = parse_channel_mult(f["channel_mult"], image_size)
    _check_layout(image_size, mult)
    num_classes = int(flags.get("num_classes", NUM_CLASSES))
    kwargs = dict(
        image_size=image_size,
        in_channels=3,
        model_channels=int(f["num_channels"]),
        out_channels=6 if f["learn_sigma"] else 3,
        num_res_blocks=int(f["num_res_blocks"]),
        attention_resolutions=parse_attention_resolutions(f["attention_resolutions"], image_size),
        dropout=float(f["dropout"]),
        channel_mult=mult,
        num_classes=num_classes if f["class_cond"] else None,
        use_checkpoint=bool(f["use_checkpoint"]),
        use_fp16=bool(f["use_fp16"]),
        num_heads=int(f["num_heads"]),
        num_head_channels=int(f["num_head_channels"]),
        num_heads_upsample=int(f["num_heads_upsample"]),
        use_scale_shift_norm=bool(f["use_scale_shift_norm"]),
        resblock_updown=bool(f["resblock_updown"]),
        use_new_attention_order=bool(f["use_new_attention_order"]),
    )
    return ADMSuperResUNet(**kwargs) if super_res else ADMUNet(**kwargs)


def create_classifier(**flags: Any) -> ADMClassifier:
    """The noise-aware classifier from the official ``classifier_*`` flags plus ``image_size``.

    Project extensions: ``classifier_channel_mult`` (or ``channel_mult``; explicit layouts allow any
    ``image_size`` they divide, e.g. 32), ``classifier_num_head_channels`` (default 64) and
    ``num_classes`` (default 1000). Other model/sampling flags are accepted and ignored.
    """
    check_flags(flags)
    f = {**CLASSIFIER_DEFAULTS, **CLASSIFIER_EXTRA_DEFAULTS, **flags}
    image_size = int(f["image_size"])
    mult = parse_channel_mult(f["classifier_channel_mult"] or flags.get("channel_mult", ""), image_size)
    _check_layout(image_size, mult)
    return ADMClassifier(
        image_size=image_size,
        in_channels=3,
        model_channels=int(f["classifier_width"]),
        out_channels=int(f["num_classes"]),
        num_res_blocks=int(f["classifier_depth"]),
        attention_resolutions=parse_attention_resolutions(f["classifier_attention_resolutions"], image_size),
        channel_mult=mult,
        use_fp16=bool(f["classifier_use_fp16"]),
        num_head_channels=int(f["classifier_num_head_channels"]),
        use_scale_shift_norm=bool(f["classifier_use_scale_shift_norm"]),
        resblock_updown=bool(f["classifier_resblock_updown"]),
        pool=str(f["classifier_pool"]),
    )


def to_runtime(model: _ADMBase, device: torch.device | str, dtype: torch.dtype | None = None) -> _ADMBase:
    """Move to ``device`` in eval mode; on CUDA, models flagged ``use_fp16`` run their torso in float16.

    ``dtype=torch.float16`` forces the fp16 torso (``float32`` forces full precision) on any device.
    """
    device = torch.device(device)
    model = model.to(device).eval()
    want_fp16 = dtype == torch.float16 if dtype is not None else (device.type == "cuda" and model.use_fp16)
    return model.convert_to_fp16() if want_fp16 else model.convert_to_fp32()


def load_adm_state_dict(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a released (or converted) checkpoint: ``.safetensors``, or ``.pt``/``.pth`` with weights_only.

    Keys and shapes must match exactly; otherwise ``ValueError`` lists the first mismatches. Tensors
    take each parameter's current dtype, so loading into an fp16-converted model keeps its precision.
    A model built on the meta device is materialised on the CPU.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path.name} does not hold a state dict")
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        problems = []
        for label, items in (("missing", missing), ("unexpected", unexpected), ("shape", shapes)):
            if items:
                more = f" (+{len(items) - 5} more)" if len(items) > 5 else ""
                problems.append(f"{label}: {', '.join(items[:5])}{more}")
        raise ValueError(f"{path.name} does not fit {type(model).__name__}: " + "; ".join(problems))
    on_meta = any(t.is_meta for t in own.values())
    cast = {k: state[k].to(own[k].dtype) for k in own}
    model.load_state_dict(cast, strict=True, assign=on_meta)
    return model
