"""Why ControlNet's zero convolutions work, measured rather than asserted.

ControlNet copies the UNet's encoder and joins it back through 1×1 convolutions whose
weights and biases start at zero. Two facts follow and are checked here on a real
``ControlNetModel.from_unet(unet)``:

1. At initialisation every residual the ControlNet hands the UNet is exactly zero, so
   base + ControlNet equals the base UNet bit for bit: training starts from the
   pretrained model, not from a damaged one.
2. Zero weights do not mean zero gradients. For a 1×1 convolution y = W x + b,
   ∂L/∂W[o, i] = Σ_{b,h,w} g[b, o, h, w] · x[b, i, h, w] (an outer product of the upstream
   gradient g and the zero-conv input x, summed over positions) and ∂L/∂b[o] = Σ g[b, o, h, w].
   Both are non-zero after one backward pass, so the zero convs move on the first step. What
   *is* zero on that first step is the gradient to everything behind them (it passes through
   Wᵀ = 0); once the zero convs have moved, gradients reach the copied encoder.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from models.architectures.controlnet_layout import embedding_channels, zero_convs


@dataclass
class ZeroConvReport:
    """Measured numbers of :func:`zero_conv_analysis` (plain floats, JSON-ready)."""

    zero_convs: int
    controlnet_params: int
    max_abs_residual: float  # largest |residual| any zero conv emits at initialisation
    max_abs_output_change: float  # |UNet with ControlNet − UNet alone|, elementwise max
    bit_identical: bool
    weight_grad_norms: list[float] = field(default_factory=list)  # one per zero conv
    min_weight_grad_norm: float = 0.0
    weight_grad_rel_error: float = 0.0  # max over zero convs of ‖measured − analytic‖ / ‖analytic‖
    bias_grad_rel_error: float = 0.0
    trunk_grad_max_abs: float = 0.0  # every other ControlNet parameter's gradient on step one
    trunk_grad_norm_after_one_step: float = 0.0  # the same after one SGD step on the zero convs
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


def _rel(measured: torch.Tensor, analytic: torch.Tensor) -> float:
    return float((measured - analytic).norm() / analytic.norm().clamp_min(1e-30))


def zero_conv_analysis(
    unet=None,
    *,
    downsample: int = 8,
    latent_size: int = 8,
    batch: int = 2,
    tokens: int = 8,
    seed: int = 0,
    lr: float = 1e-2,
) -> ZeroConvReport:
    """Build ``ControlNetModel.from_unet(unet)`` and measure facts 1 and 2 of the module docstring.

    ``unet=None`` uses a tiny random UNet (models.architectures.tiny_unet) so the panel answers in about a second.
    Runs in float32 on the CPU so the 1e-5 comparison means something; ``unet`` is not modified.
    """
    from diffusers import ControlNetModel

    from models.architectures.tiny_unet import tiny_unet

    start = time.perf_counter()
    gen = torch.Generator("cpu").manual_seed(int(seed))
    if unet is None:
        torch.manual_seed(int(seed))
        unet = tiny_unet()
    if unet.device.type != "cpu" or unet.dtype != torch.float32:
        # A copy: the caller's (possibly half-precision, GPU) UNet stays as it is.
        import copy

        unet = copy.deepcopy(unet).to("cpu", torch.float32)
    unet = unet.eval().requires_grad_(False)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=embedding_channels(downsample))
    controlnet.train()

    c = unet.config
    x = torch.randn(batch, c.in_channels, latent_size, latent_size, generator=gen)
    t = torch.randint(0, 1000, (batch,), generator=gen)
    context = torch.randn(batch, tokens, c.cross_attention_dim, generator=gen)
    side = latent_size * downsample
    control = torch.rand(batch, 3, side, side, generator=gen)
    target = torch.randn(x.shape, generator=gen)

    # Record each zero conv's input and the gradient arriving at its output.
    inputs: dict[str, torch.Tensor] = {}
    upstream: dict[str, torch.Tensor] = {}
    handles = []
    for name, conv in zero_convs(controlnet):

        def hook(module, args, out, name=name):
            inputs[name] = args[0].detach()
            out.register_hook(lambda g, name=name: upstream.__setitem__(name, g.detach()))

        handles.append(conv.register_forward_hook(hook))

    def forward():
        down, mid = controlnet(x, t, encoder_hidden_states=context, controlnet_cond=control, return_dict=False)
        out = unet(x, t, encoder_hidden_states=context, down_block_additional_residuals=down,
                   mid_block_additional_residual=mid, return_dict=False)[0]  # fmt: skip
        return down, mid, out

    try:
        with torch.no_grad():
            base = unet(x, t, encoder_hidden_states=context, return_dict=False)[0]
        down, mid, out = forward()
        residual = max(float(r.detach().abs().max()) for r in [*down, mid])
        change = float((out.detach() - base).abs().max())
        identical = bool(torch.equal(out.detach(), base))

        F.mse_loss(out, target).backward()
        w_norms, w_err, b_err = [], 0.0, 0.0
        zero_params = set()
        for name, conv in zero_convs(controlnet):
            g, xin = upstream[name].double(), inputs[name].double()
            analytic_w = torch.einsum("bohw,bihw->oi", g, xin).reshape(conv.weight.shape)
            analytic_b = g.sum(dim=(0, 2, 3))
            w_err = max(w_err, _rel(conv.weight.grad.double(), analytic_w))
            b_err = max(b_err, _rel(conv.bias.grad.double(), analytic_b))
            w_norms.append(float(conv.weight.grad.norm()))
            zero_params.update({id(conv.weight), id(conv.bias)})
        trunk = [p for p in controlnet.parameters() if id(p) not in zero_params]
        trunk_max = max(float(p.grad.abs().max()) if p.grad is not None else 0.0 for p in trunk)

        # One plain SGD step on the zero convs alone, then a second backward pass.
        with torch.no_grad():
            for _, conv in zero_convs(controlnet):
                conv.weight -= lr * conv.weight.grad
                conv.bias -= lr * conv.bias.grad
        controlnet.zero_grad(set_to_none=True)
        F.mse_loss(forward()[2], target).backward()
        after = math.sqrt(sum(float(p.grad.double().pow(2).sum()) for p in trunk if p.grad is not None))
    finally:
        for h in handles:
            h.remove()

    return ZeroConvReport(
        zero_convs=len(w_norms),
        controlnet_params=sum(p.numel() for p in controlnet.parameters()),
        max_abs_residual=residual,
        max_abs_output_change=change,
        bit_identical=identical,
        weight_grad_norms=w_norms,
        min_weight_grad_norm=min(w_norms),
        weight_grad_rel_error=w_err,
        bias_grad_rel_error=b_err,
        trunk_grad_max_abs=trunk_max,
        trunk_grad_norm_after_one_step=after,
        seconds=time.perf_counter() - start,
    )
