"""SD 1.5's attention layers and their analytic cost, from its published config (no weights)::

    python -m scripts.tools.attention_cost 512            # every layer and the totals
    python -m scripts.tools.attention_cost 256 512 1024   # plus the fitted slopes
"""

from __future__ import annotations

from collections.abc import Sequence

from experiments.attention_cost import (
    SD15_TEXT_TOKENS,
    SD15_UNET_CONFIG,
    SD15_VAE_SCALE,
    attention_layers,
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
    args = parser.parse_args(argv)
    layers = [x for r in args.resolutions
              for x in attention_layers(SD15_UNET_CONFIG, r, SD15_VAE_SCALE, SD15_TEXT_TOKENS)]
    print(layer_table(layers), "", totals_table(step_totals(layers)), "", f"slopes: {slopes(layers)}", sep="\n")


if __name__ == "__main__":
    main()
