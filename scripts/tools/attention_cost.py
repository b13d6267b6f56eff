"""SD 1.5's attention layers and their analytic cost, from its published config (no weights)::

    python -m scripts.tools.attention_cost 512            # every layer and the totals
    python -m scripts.tools.attention_cost 256 512 1024   # plus the fitted slopes
    python -m scripts.tools.attention_cost --joint 512 1024   # SD3.5 Medium's joint-attention matrix instead
"""

from __future__ import annotations

from collections.abc import Sequence

from experiments.attention_cost import (
    SD15_TEXT_TOKENS,
    SD15_UNET_CONFIG,
    SD15_VAE_SCALE,
    SD35_MEDIUM_TRANSFORMER_CONFIG,
    attention_layers,
    joint_matrix_bytes,
    slopes,
    step_totals,
)
from experiments.attention_report import layer_table, totals_table


def main(argv: Sequence[str] | None = None) -> None:
    """Print SD 1.5's analytic tables (from :data:`SD15_UNET_CONFIG`, no weights) at the given sides::

        python -m experiments.attention_cost 512            # every layer and the totals
        python -m experiments.attention_cost 256 512 1024   # plus the fitted slopes
    """
    import argparse

    parser = argparse.ArgumentParser(description="SD 1.5's attention layers and their analytic cost")
    parser.add_argument("resolutions", nargs="*", type=int, default=[512])
    parser.add_argument("--joint", action="store_true",
                        help="SD3.5 Medium's joint attention: one (N + M)² matrix per layer, fp16, from its config")
    args = parser.parse_args(argv)
    if args.joint:
        for resolution in args.resolutions:
            row = joint_matrix_bytes(SD35_MEDIUM_TRANSFORMER_CONFIG, resolution)
            print(f"SD3.5 Medium at {resolution}²: N + M = {row['image_tokens']} + {row['text_tokens']} = "
                  f"{row['sequence']} tokens, {row['heads']} heads, fp16: {row['layer_bytes'] / 2**20:.1f} MiB per "
                  f"joint layer and image ({row['layer_bytes_cfg'] / 2**20:.1f} MiB with CFG's two rows), "
                  f"{SD35_MEDIUM_TRANSFORMER_CONFIG['num_layers']} joint layers")
        return
    layers = [x for r in args.resolutions
              for x in attention_layers(SD15_UNET_CONFIG, r, SD15_VAE_SCALE, SD15_TEXT_TOKENS)]
    print(layer_table(layers), "", totals_table(step_totals(layers)), "", f"slopes: {slopes(layers)}", sep="\n")


if __name__ == "__main__":
    main()
