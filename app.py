"""Conditioning Lab: see and measure how diffusion models are conditioned.

This file only wires the interface; the math lives in guidance/, condition/, models/ and
pipelines/, all usable from a notebook without Gradio.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

# On ZeroGPU, `spaces` must patch torch before anything asks about CUDA (the profile choice does): only then does
# torch.cuda.is_available() report the GPU a request will get. Anywhere else importing it changes nothing.
import spaces  # noqa: E402, F401, I001

import gradio as gr  # noqa: E402

from models.loading.preload import on_a_space, preload, status_markdown  # noqa: E402
from models.profiles import Profile, ProfileChoice, choose_default_profile, load_profile  # noqa: E402
from models.runtime import pick_runtime, use_cpu_threads  # noqa: E402
from ui import (  # noqa: E402
    adaln_zero,
    attention_binding,
    attention_cost,
    class_cfg,
    classifier_guidance,
    controlnet,
    distillation,
    image_conditioning,
    playground,
    puncond,
    text_to_image,
)
from ui.components import harden_numeric_inputs  # noqa: E402

TITLE = "Conditioning Lab"


def build_app(profile: Profile, why: str = "", loading: str = "Models load on first use.") -> gr.Blocks:
    runtime = pick_runtime()
    with gr.Blocks(title=TITLE) as demo:
        gr.Markdown(
            f"# {TITLE}\nHow diffusion models are steered: classifier guidance, CFG, Perp-CFG, cross-attention, "
            f"ControlNet and CLIP image conditioning.\n\n"
            f"**Profile: `{profile.name}`** — {profile.description} · running on **{runtime.label}**"
            + (f" · picked because {why}" if why else "") + f"\n\n{loading}"
        )
        with gr.Tab("Text to image"):
            text_to_image.build(profile)
        with gr.Tab("ControlNet"):
            controlnet.build(profile)
        with gr.Tab("Classifier guidance vs CFG"):
            classifier_guidance.build(profile)
            class_cfg.build_class_cfg(profile)
            class_cfg.build_compare(profile)
        with gr.Tab("CLIP image conditioning"):
            image_conditioning.build(profile)
        with gr.Tab("2D guidance playground"):
            playground.build(profile)
        with gr.Tab("p_uncond"):
            puncond.build(profile)
        with gr.Tab("Attention cost"):
            attention_cost.build(profile)
        with gr.Tab("Attention binding"):
            attention_binding.build(profile)
        with gr.Tab("AdaLN-zero"):
            adaln_zero.build(profile)
        with gr.Tab("Guidance distillation"):
            distillation.build(profile)
    harden_numeric_inputs(demo)
    return demo


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=TITLE)
    parser.add_argument("--profile", default=None, help="built-in profile name (full, toy) or a .toml path")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")))
    parser.add_argument("--no-mcp", action="store_true", help="do not serve the endpoints as MCP tools")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    choice = ProfileChoice(args.profile, "chosen with --profile") if args.profile else choose_default_profile()
    profile = load_profile(choice.name)
    runtime = pick_runtime()
    use_cpu_threads(runtime, profile.cpu_threads)
    # On a Space every role is fetched and loaded now, in the main process: no GPU slot waits for a download.
    loading = status_markdown(preload(profile, runtime)) if on_a_space() else "Models load on first use."
    demo = build_app(profile, choice.reason, loading)
    demo.queue(default_concurrency_limit=1, max_size=64)
    # Every lab endpoint is also an MCP tool (streamable HTTP at /gradio_api/mcp/): its description and parameters come
    # from the spec (ui.endpoint.tool_description); the page's own helper events are private and not offered.
    demo.launch(server_name=args.host, server_port=args.port, mcp_server=not args.no_mcp)


if __name__ == "__main__":
    main()
