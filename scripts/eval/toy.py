"""Evaluate the toy profile's models, sampling through the same pipeline code the app's tabs run.

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python -m scripts.eval.toy --threads 1   # ~40 min on 1 busy CPU core

Prints a markdown report and writes ``assets/toy/eval.md`` and the sample grid ``assets/toy/samples.png``
(rows: prompts, columns: CFG scales, same noise across a row). Models load through the toy profile
(``models.loading.sd``, ``models.loading.image``, ``models.loading.controlnet``, ``pipelines.toy_guidance``);
every sample is drawn by ``pipelines.text_to_image.generate`` (text, ControlNet and image conditioning,
batched over many prompts) or ``pipelines.classifier_guidance.classifier_guided_sample``: DDIM with a fresh
scheduler from the shipped config and the app's pixel-space step kwargs (η = 0).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from scipy.ndimage import binary_dilation
from torch import Tensor, nn
from tqdm import tqdm

from condition.control import canny_map
from condition.image_embed import cosine, image_embeddings
from condition.images import sanitize_image
from condition.shapes_world import CLASS_NAMES, SHAPE_NAMES, class_parts, from_tensor_range, make_batch, plain_caption
from condition.text import encode_prompts
from guidance.rules import GuidanceRule
from guidance.settings import SamplingSettings
from models.adapters.denoisers import UNetDenoiser
from models.architectures.toy_judge import load_judge
from models.loading.controlnet import controlnet_for
from models.loading.image import ClipReadout, load_clip, load_image_variations
from models.loading.sd import SDComponents, load_role_sd
from models.loading.toy_classifier import LabelledClassifier
from models.profiles import Profile, load_profile
from models.runtime import Runtime, pick_runtime
from pipelines.classifier_guidance import classifier_guided_sample
from pipelines.controlnet import ControlNetDenoiser, ControlSpec
from pipelines.image_conditioning import cross_modal_embedding, variation_pixels
from pipelines.text_to_image import generate, latent_shape, resolve_size
from pipelines.toy_guidance import ToyGuidedModels, load_toy_guided
from scripts.shared.training import ASSETS, CANNY_HIGH, CANNY_LOW, RUNS, images_to_tensor, setup

CACHE_VERSION = "pipe2"  # bump when the sampling path changes, so stale cached samples are not reused


class Eval:
    """The profile, runtime and the stamp that keys the sample cache."""

    def __init__(self, root: Path, runtime: Runtime) -> None:
        self.root = root
        self.profile = toy_profile(root)
        self.runtime = runtime
        # Changes whenever a shipped weight file changes, so cached samples never outlive their models.
        mtime = max(int(p.stat().st_mtime) for p in root.rglob("*.safetensors"))
        self.stamp = f"{root.resolve().name}{mtime}_{CACHE_VERSION}"

    def cached(self, tag: str, build: Callable[[], dict[str, Tensor]]) -> dict[str, Tensor]:
        """Samples per configuration, stored under .toy_runs/eval_cache so an interrupted evaluation resumes."""
        path = RUNS / "eval_cache" / f"{self.stamp}_{tag}.safetensors"
        if path.exists():
            return load_file(str(path))
        out = build()
        path.parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in out.items()}, str(path))
        return out


def toy_profile(root: Path) -> Profile:
    """The built-in toy profile, or the same roles re-rooted at another folder with the assets/toy layout."""
    profile = load_profile("toy")
    base, root = ASSETS.resolve(), root.resolve()
    if root == base:
        return profile
    roles = {r: {**e, "source": str(root / Path(e["source"]).relative_to(base))} for r, e in profile.roles.items()}
    return Profile(root.name, profile.path, roles, profile.settings)


@torch.no_grad()
def draw(sd: SDComponents, denoiser, rule: GuidanceRule, n: int, seed: int, steps: int) -> Tensor:
    """``n`` samples through the app's shared path (fresh DDIM scheduler, pixel-space step kwargs); [-1, 1]."""
    shape = latent_shape(sd, *resolve_size(sd, None, None), n)
    images, _ = generate(sd, denoiser, rule, shape, SamplingSettings(steps=steps, seed=seed, diagnostics=False))
    return images * 2 - 1


@torch.no_grad()
def text_contexts(sd: SDComponents, prompts: list[str]) -> tuple[Tensor, Tensor]:
    """Per-row text states ``[B, L, D]`` and the empty prompt's, repeated to match (the uncond branch)."""
    states = encode_prompts(sd.tokenizer, sd.text_encoder, [*prompts, ""]).states
    return states[:-1], states[-1:].repeat(len(prompts), 1, 1)


class TimeBlind(nn.Module):
    """A classifier of clean images shown x_t as if it were clean (t = 0): the naive baseline."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.net(x, torch.zeros_like(t))


# ----------------------------------------------------------------------------- metrics


def judge_accuracy(judge, x: torch.Tensor, labels: np.ndarray) -> dict[str, float]:
    c, s = judge.predict(x)
    tc, ts = labels // len(SHAPE_NAMES), labels % len(SHAPE_NAMES)
    return {
        "colour": float((c == tc).mean()),
        "shape": float((s == ts).mean()),
        "both": float(((c == tc) & (s == ts)).mean()),
    }


def foreground(x: torch.Tensor) -> np.ndarray:
    """Pixels that differ clearly from the image's border median (the background colour)."""
    img = (x.numpy() + 1) / 2  # [N,3,H,W] in [0,1]
    border = np.concatenate([img[:, :, 0], img[:, :, -1], img[:, :, :, 0], img[:, :, :, -1]], axis=2)
    bg = np.median(border, axis=2)[:, :, None, None]
    return np.abs(img - bg).sum(1) > 0.3


def diversity_and_spread(x: torch.Tensor, labels: np.ndarray) -> tuple[float, float]:
    """Mean pairwise RMS pixel distance within a prompt, and the std of the foreground centroid (pixels)."""
    dists, spreads = [], []
    fg = foreground(x)
    ys, xs = np.mgrid[0 : x.shape[-2], 0 : x.shape[-1]]
    for y in np.unique(labels):
        idx = np.where(labels == y)[0]
        flat = ((x[idx] + 1) / 2).flatten(1)
        d = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
        dists.append(float(d.sum() / (len(idx) * (len(idx) - 1))) if len(idx) > 1 else float("nan"))
        cents = [(xs[fg[i]].mean(), ys[fg[i]].mean()) for i in idx if fg[i].sum() > 3]
        if len(cents) > 1:
            spreads.append(float(np.sqrt(np.var(np.array(cents), axis=0).sum())))
    return float(np.mean(dists)), float(np.mean(spreads)) if spreads else float("nan")


def shape_area(x: torch.Tensor) -> float:
    """Mean number of foreground pixels per image (how large the drawn shapes are)."""
    return float(foreground(x).sum(axis=(1, 2)).mean())


def saturation(x: torch.Tensor) -> tuple[float, float]:
    """Fraction of channel values at the clip limits, and mean background brightness (0–255)."""
    clipped = float((x.abs() >= 0.995).float().mean())
    fg = foreground(x)
    img = (x.numpy() + 1) * 127.5
    bg = np.stack([img[:, c][~fg] for c in range(3)]).mean()
    return clipped, float(bg)


def edge_f1(samples: torch.Tensor, maps: np.ndarray) -> float:
    """F1 of the samples' Canny edges against the input maps, with a 1-pixel tolerance."""
    f1s = []
    for img, ref in zip(from_tensor_range(samples.numpy()), maps, strict=True):
        out = np.asarray(canny_map(img, CANNY_LOW, CANNY_HIGH))[..., 0] > 0
        ref = ref > 0
        if not out.any() or not ref.any():
            f1s.append(0.0)
            continue
        precision = (out & binary_dilation(ref)).sum() / out.sum()
        recall = (ref & binary_dilation(out)).sum() / ref.sum()
        f1s.append(0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall))
    return float(np.mean(f1s))


@torch.no_grad()
def clip_image_features(clip: ClipReadout, images: np.ndarray) -> Tensor:
    """Projected CLIP image features of uint8 images, embedded as ``pipelines.image_conditioning.clip_scores`` does."""
    p = next(clip.model.parameters())
    pixels = clip.processor(images=[sanitize_image(im) for im in images], return_tensors="pt").pixel_values
    out = clip.model.get_image_features(pixel_values=pixels.to(p.device, p.dtype))
    return getattr(out, "pooler_output", out).float()


def clip_cosine(clip: ClipReadout, a: np.ndarray, b: np.ndarray) -> float:
    """Mean CLIP image cosine between row i of ``a`` and row i of ``b``."""
    return float(cosine(clip_image_features(clip, a), clip_image_features(clip, b)).mean())


# ----------------------------------------------------------------------------- sections


def section_cfg(
    ev: Eval, judge, per_class: int, steps: int, scales: list[float], lines: list[str], rule_name: str = "cfg"
) -> dict:
    """Judge accuracy, diversity and saturation vs guidance scale for one rule (CFG also saves the sample grid)."""
    sd = load_role_sd(ev.profile, ev.runtime, "sd")
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    prompts = [plain_caption(*class_parts(int(y))) for y in labels]
    den = UNetDenoiser(sd.unet, *text_contexts(sd, prompts))
    if rule_name == "cfg":
        lines += [
            "## Text-to-image: CFG",
            "",
            f'{len(labels)} samples ({per_class} per prompt "a {{colour}} {{shape}}"), the same noise (seed 123) '
            "for every row and rule. Judge accuracy (colour / shape / both); diversity = mean pairwise RMS "
            "distance within a prompt (0–1 pixel scale); spread = std of the shape centroid (pixels); clipped = "
            "fraction of channel values at ±1; bg = mean background brightness (0–255); area = mean foreground "
            "pixels per image. The first row measures world images of the same prompts (what the model learnt "
            f"from). Chance: colour {1 / 6:.3f}, shape {1 / 4:.3f}, both {1 / 24:.3f}.",
            "",
        ]
    else:
        lines += ["## Text-to-image: Perp-CFG (basis uncond, η = 0)", "", "Same prompts, noise and columns as CFG; "
                  "w = 1 is omitted (identical to CFG w = 1, the conditional prediction).", ""]  # fmt: skip
    lines += [
        "| rule | w | colour | shape | both | diversity | spread | clipped | bg | area |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    if rule_name == "cfg":
        lines.append(metrics_row("world data", "–", world_images(labels), judge, labels))
    grids: dict[float, torch.Tensor] = {}
    results = {}
    for w in scales:
        if rule_name == "perp-cfg" and w == 1:
            continue
        t0 = time.time()
        rule = GuidanceRule(rule_name, scale=w, eta=0.0, basis="uncond")
        tag = f"t2i_{rule_name}{w:g}_n{len(labels)}_s123_k{steps}"
        x = ev.cached(tag, lambda rule=rule: {"x": draw(sd, den, rule, len(labels), 123, steps)})["x"]
        results[w] = judge_accuracy(judge, x, labels)["both"]
        lines.append(metrics_row(rule_name, f"{w:g}", x, judge, labels))
        print(lines[-1], f"({time.time() - t0:.0f}s)", flush=True)
        grids[w] = x
    lines.append("")
    if rule_name == "cfg":
        save_grid(grids, per_class, ev.root / "samples.png")
    return results


def section_perp_variants(ev: Eval, judge, per_class: int, steps: int, scales: list[float], lines: list[str]) -> None:
    """Perp-CFG's projection taken in x0 space (as APG does), on either basis, at the larger scales."""
    sd = load_role_sd(ev.profile, ev.runtime, "sd")
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    den = UNetDenoiser(sd.unet, *text_contexts(sd, [plain_caption(*class_parts(int(y))) for y in labels]))
    lines += ["## Text-to-image: Perp-CFG with the projection in x0 space", "",
              "Same prompts and noise as the CFG table; `GuidanceRule(\"perp-cfg\", w, eta=0, basis, space=\"x0\")`: "
              "both predictions are mapped to x̂0 before Δ is split (basis cond = the APG split without momentum).",
              "", "| rule | w | colour | shape | both | diversity | spread | clipped | bg | area |",
              "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for basis in ("uncond", "cond"):
        for w in scales:
            rule = GuidanceRule("perp-cfg", scale=w, eta=0.0, basis=basis, space="x0")
            tag = f"t2i_perpx0_{basis}{w:g}_n{len(labels)}_s123_k{steps}"
            x = ev.cached(tag, lambda rule=rule: {"x": draw(sd, den, rule, len(labels), 123, steps)})["x"]
            lines.append(metrics_row(f"perp-cfg x0, basis {basis}", f"{w:g}", x, judge, labels))
            print(lines[-1], flush=True)
    lines.append("")


def world_images(labels: np.ndarray, seed: int = 777) -> Tensor:
    """Single-shape world images of the given classes, in [-1, 1] (the reference row)."""
    images = [make_batch(1, seed + i, p_two=0.0, colour=class_parts(int(y))[0], shape=class_parts(int(y))[1]).images
              for i, y in enumerate(labels)]
    return images_to_tensor(np.concatenate(images))


def metrics_row(rule: str, w: str, x: Tensor, judge, labels: np.ndarray) -> str:
    acc = judge_accuracy(judge, x, labels)
    div, spread = diversity_and_spread(x, labels)
    clip_frac, bg = saturation(x)
    return (f"| {rule} | {w} | {acc['colour']:.3f} | {acc['shape']:.3f} | {acc['both']:.3f} | {div:.3f} | "
            f"{spread:.2f} | {clip_frac:.4f} | {bg:.1f} | {shape_area(x):.0f} |")


def save_grid(grids: dict[float, torch.Tensor], per_class: int, path: Path) -> None:
    """Rows: the 24 prompts (first sample each); columns: CFG scales; 3× nearest upscaling."""
    cols = []
    for w in sorted(grids):
        imgs = from_tensor_range(grids[w][::per_class].numpy())
        cols.append(np.concatenate(list(imgs), axis=0))
    pad = np.full((cols[0].shape[0], 2, 3), 255, np.uint8)
    grid = np.concatenate([c for col in cols for c in (col, pad)][:-1], axis=1)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.Resampling.NEAREST).save(path)


# Rows of the classifier table: (label, which sampling call makes it, the key it is stored under).
GUIDES = (
    ("noise-aware on x_t, t", "pair", "noise_aware"),
    ("clean on x̂0", "pair", "clean_x0"),
    ("clean on x_t, t = 0", "blind", "clean_xt"),
)


def section_classifier(ev: Eval, judge, per_class: int, steps: int, scales: list[float], lines: list[str]) -> None:
    models = load_toy_guided(ev.profile, ev.runtime)
    clean = models.clean
    blind = ToyGuidedModels(models.sd, LabelledClassifier(TimeBlind(clean.net), clean.class_names, clean.source),
                            clean)  # fmt: skip
    labels = np.repeat(np.arange(len(CLASS_NAMES)), per_class)
    lines += [
        "## Classifier guidance on the unconditional branch",
        "",
        f"`pipelines.classifier_guidance.classifier_guided_sample` on the toy pair (`pipelines.toy_guidance`), as "
        f'the Classifier guidance tab runs it: the UNet with the empty prompt, `ClassifierGuidance(mode="eps")`, '
        f"DDIM {steps} steps, {len(labels)} samples ({per_class} per class, one call per class; class c uses seed "
        "123 + c for every guide and scale). Guides: the noise-aware classifier on x_t and t (the tab's "
        "default); the clean classifier on the predicted x̂0 (the tab's compare_clean); the clean classifier "
        "on x_t with t fixed at 0 (a standard classifier shown noisy images, the baseline the paper argues "
        "against).",
        "",
        "| guide | scale | colour | shape | both | diversity | clipped |",
        "|---|---|---|---|---|---|---|",
    ]

    def call(kind: str, s: float, class_id: int) -> dict[str, Tensor]:
        kw = dict(class_id=class_id, classifier_scale=s, steps=f"ddim{steps}", sampler="ddim", seed=123 + class_id,
                  num_images=per_class, runtime=ev.runtime)  # fmt: skip
        if kind == "pair":  # one call samples both: the noise-aware run, then the same seed guided on x̂0
            res = classifier_guided_sample(models, compare_clean=True, **kw)
            return {"noise_aware": res.guided.images * 2 - 1, "clean_x0": res.clean.images * 2 - 1}
        return {"clean_xt": classifier_guided_sample(blind, **kw).guided.images * 2 - 1}

    for label, kind, key in GUIDES:
        for s in scales:
            t0 = time.time()
            parts = []
            for c in tqdm(range(len(CLASS_NAMES)), desc=f"{label} s={s:g}", leave=False):
                class_id = models.class_names.index(CLASS_NAMES[c])
                tag = f"clf_{kind}{s:g}_c{c}_n{per_class}_k{steps}"
                parts.append(ev.cached(tag, lambda kind=kind, s=s, class_id=class_id: call(kind, s, class_id))[key])
            x = torch.cat(parts)
            acc = judge_accuracy(judge, x, labels)
            div, _ = diversity_and_spread(x, labels)
            lines.append(
                f"| {label} | {s:g} | {acc['colour']:.3f} | {acc['shape']:.3f} | {acc['both']:.3f} | {div:.3f} | "
                f"{saturation(x)[0]:.4f} |"
            )
            print(lines[-1], f"({time.time() - t0:.0f}s)", flush=True)
    lines.append("")


def section_controlnet(ev: Eval, n: int, steps: int, scales: list[float], w: float, lines: list[str]) -> None:
    sd = load_role_sd(ev.profile, ev.runtime, "sd")
    controlnet = controlnet_for(ev.profile, "canny", ev.runtime)
    batch = make_batch(n, seed=31337, p_two=0.3)
    maps = np.stack([np.asarray(canny_map(im, CANNY_LOW, CANNY_HIGH))[..., 0] for im in batch.images])
    # [B, 3, H, W] in [0, 1], one map per row, as the ControlNet tab prepares its map.
    control = torch.from_numpy(maps).float().div(255).unsqueeze(1).repeat(1, 3, 1, 1).to(sd.device, controlnet.dtype)
    cond, uncond = text_contexts(sd, list(batch.captions))
    lines += [
        "## ControlNet (Canny)",
        "",
        f"{n} held-out world images (captions as prompts, CFG w = {w:g}), Canny {CANNY_LOW}/{CANNY_HIGH}; "
        "edge F1 of the output's Canny map vs the input map (1-pixel tolerance). Reference: F1 of the "
        f"source images themselves = {edge_f1(images_to_tensor(batch.images), maps):.3f}.",
        "",
        "| conditioning scale | edge F1 |",
        "|---|---|",
    ]
    rule = GuidanceRule("cfg", scale=w)
    for s in scales:
        den = ControlNetDenoiser(sd.unet, [ControlSpec(controlnet, control, s)], [control], cond, uncond)
        x = ev.cached(f"cn{s:g}_w{w:g}_n{n}_s7_k{steps}", lambda den=den: {"x": draw(sd, den, rule, n, 7, steps)})["x"]
        lines.append(f"| {s:g} | {edge_f1(x, maps):.3f} |")
        print(lines[-1], flush=True)
    lines.append("")


def section_variations(ev: Eval, judge, n: int, steps: int, scales: list[float], lines: list[str]) -> None:
    vsd = load_image_variations(ev.profile, ev.runtime)
    clip = load_clip(ev.profile, ev.runtime)
    batch = make_batch(n, seed=4242, p_two=0.3)
    pixels = torch.cat([variation_pixels(vsd, Image.fromarray(im)) for im in batch.images])
    embeds = image_embeddings(vsd.extras["image_encoder"], pixels).unsqueeze(1)
    other = make_batch(n, seed=999, p_two=0.3).images
    lines += [
        "## CLIP image conditioning (image variations, cross-modal)",
        "",
        f"{n} held-out inputs; conditioning = `image_embeds.unsqueeze(1)` (the Image conditioning tab's "
        f"preprocessing, `variation_pixels`), uncond = zeros; DDIM {steps} steps. "
        "Similarity = tiny-CLIP image cosine between output and its input. Baselines: the same outputs "
        "against a shuffled input, and unrelated world images against the inputs.",
        "",
        "| mode | w | cos(output, input) | cos(output, shuffled input) | judge both (single-shape inputs) |",
        "|---|---|---|---|---|",
    ]
    single = batch.labels >= 0
    perm = np.roll(np.arange(n), 1)
    den = UNetDenoiser(vsd.unet, embeds, torch.zeros_like(embeds))
    for w in scales:
        rule = GuidanceRule("cfg", scale=w)
        x = ev.cached(f"var{w:g}_n{n}_s11_k{steps}", lambda rule=rule: {"x": draw(vsd, den, rule, n, 11, steps)})["x"]
        out = from_tensor_range(x.numpy())
        acc = judge_accuracy(judge, x[single], batch.labels[single])["both"]
        lines.append(
            f"| variation | {w:g} | {clip_cosine(clip, out, batch.images):.3f} | "
            f"{clip_cosine(clip, out, batch.images[perm]):.3f} | {acc:.3f} |"
        )
        print(lines[-1], flush=True)
    lines.append(f"| random world images | – | {clip_cosine(clip, other, batch.images):.3f} | – | – |")
    # Cross-modal (the tab at mix = 1): the projected CLIP text embedding of a prompt stands in for the image's.
    labels = np.repeat(np.arange(len(CLASS_NAMES)), 4)
    per_prompt = torch.cat(
        [cross_modal_embedding(vsd, clip, None, plain_caption(*class_parts(c)), 1.0) for c in range(len(CLASS_NAMES))]
    )
    text_embeds = per_prompt[torch.from_numpy(labels)].unsqueeze(1).to(vsd.device, vsd.dtype)
    den = UNetDenoiser(vsd.unet, text_embeds, torch.zeros_like(text_embeds))
    for w in scales:
        rule = GuidanceRule("cfg", scale=w)
        tag = f"xmodal{w:g}_n{len(labels)}_s13_k{steps}"
        x = ev.cached(tag, lambda rule=rule: {"x": draw(vsd, den, rule, len(labels), 13, steps)})["x"]
        lines.append(f"| text embed → image path | {w:g} | – | – | {judge_accuracy(judge, x, labels)['both']:.3f} |")
        print(lines[-1], flush=True)
    lines.append("")


SECTIONS = ("cfg", "perp-cfg", "perp-x0", "classifier", "controlnet", "variations")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=10, help="samples per prompt (24 prompts)")
    ap.add_argument("--classifier-per-class", type=int, default=5, help="samples per class, classifier guidance")
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n-control", type=int, default=96, help="inputs for the ControlNet and variation sections")
    ap.add_argument("--assets", type=Path, default=ASSETS,
                    help="a folder in the assets/toy layout (default assets/toy, the toy profile)")  # fmt: skip
    ap.add_argument("--only", nargs="*", default=list(SECTIONS), choices=SECTIONS, help="sections to (re)run")
    args = ap.parse_args()
    setup(0, args.threads)
    ev = Eval(args.assets, pick_runtime("cpu", "float32"))
    judge = load_judge(args.assets / "judge")
    # Each section is stored on its own so sections can be rerun separately (e.g. after retraining one model).
    parts_dir = RUNS / f"eval_sections_{args.assets.resolve().name}"
    parts_dir.mkdir(parents=True, exist_ok=True)
    for name in args.only:
        t0 = time.time()
        lines: list[str] = []
        if name in ("cfg", "perp-cfg"):
            # 20 goes past the 0–12 so the table shows what very high w does.
            section_cfg(ev, judge, args.per_class, args.steps, [0, 1, 2, 4, 7, 12, 20], lines, name)
        elif name == "perp-x0":
            section_perp_variants(ev, judge, args.per_class, args.steps, [4, 12, 20], lines)
        elif name == "classifier":
            section_classifier(ev, judge, args.classifier_per_class, args.steps, [1, 3, 10, 30], lines)
        elif name == "controlnet":
            section_controlnet(ev, args.n_control, args.steps, [0, 0.25, 0.5, 1.0, 1.5], 3.0, lines)
        else:
            section_variations(ev, judge, args.n_control, args.steps, [1, 3], lines)
        lines.append(
            f"_{(time.time() - t0) / 60:.1f} min on {torch.get_num_threads()} CPU thread(s); "
            f"DDIM {args.steps} steps, η = 0._\n"
        )
        (parts_dir / f"{name}.md").write_text("\n".join(lines))
    header = ["# Toy profile evaluation", "", "Generated by `python -m scripts.eval.toy`; see scripts/README.md.", ""]
    body = [(parts_dir / f"{n}.md").read_text() for n in SECTIONS if (parts_dir / f"{n}.md").exists()]
    text = "\n".join(header) + "\n" + "\n".join(body)
    (args.assets / "eval.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
