"""A tiny replica of the Hugging Face hub for the `full` profile: every role's repo under its real id, revision,
subfolders and file names, in huggingface_hub's cache layout, holding tiny random models of the real classes.

With ``HF_HOME`` pointing at it and ``HF_HUB_OFFLINE=1``, the app's own loading code — the same
``from_pretrained(repo_id, subfolder=…, revision=…, variant=…)`` and ``hf_hub_download`` calls a Space makes —
resolves every role of ``assets/profiles/full.toml`` on this CPU machine::

    .venv/bin/python -m testing.hub_replica /tmp/hub              # build it (seconds, ~90 MB)
    HF_HOME=/tmp/hub/hf CONDLAB_ADM_CACHE=/tmp/hub/adm HF_HUB_OFFLINE=1 .venv/bin/python app.py --profile full
    .venv/bin/python -m testing.hub_replica --front-matter        # the README's preload_from_hub lines

Layouts (which files each repo holds, which are ``.bin`` only, which have ``fp16`` variants) follow the repos'
public file listings (PixArt-Σ's two repos and the gated SD3.5 Medium as ``testing/tiny_pixart.py`` and
``testing/tiny_sd3.py`` document them, built by their builders); where this project's search index had no listing
the layout is the one the libraries ask for, said so per repo below. The ADM release files are not on the hub: they
are written, full-size in shape but with pooled fp16 storage (a few MB), under their release names into the folder
the ADM loader downloads to (``CONDLAB_ADM_CACHE``).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from models.architectures.adm import create_classifier, create_model
from models.loading.adm import CHOICES, PRESETS
from testing.tiny import (
    build_tiny_controlnet,
    build_tiny_dit,
    build_tiny_image_models,
    build_tiny_ip_adapter,
    build_tiny_sd,
    meta_shapes,
    random_fp16_state,
    tiny_taesd,
    write_random_midas,
    write_random_openpose,
)
from testing.tiny_pixart import (
    PIXART_BASE_REPO,
    PIXART_BASE_REVISION,
    PIXART_BASE_SPACE_FILES,
    PIXART_TRANSFORMER_REPO,
    PIXART_TRANSFORMER_REVISION,
    PIXART_TRANSFORMER_SPACE_FILES,
    build_tiny_pixart_base,
    build_tiny_pixart_transformer,
)
from testing.tiny_sd3 import SD35_FILES, SD35_REPO_ID, SD35_REVISION, build_tiny_sd3

SD = "stable-diffusion-v1-5/stable-diffusion-v1-5"
CONTROLNETS = {"canny": "lllyasviel/control_v11p_sd15_canny", "depth": "lllyasviel/control_v11f1p_sd15_depth",
               "pose": "lllyasviel/control_v11p_sd15_openpose"}
ANNOTATORS = "lllyasviel/Annotators"
VARIATIONS = "lambdalabs/sd-image-variations-diffusers"
IP_ADAPTER = "h94/IP-Adapter"
CLIP = "openai/clip-vit-large-patch14"
TAESD = "madebyollin/taesd"
DIT = "facebook/DiT-XL-2-256"
DIT_REVISION = "eab87f77abd5aef071a632f08807fbaab0b704d0"  # "upload model && weights", the repo's only weights commit
# Files the app never reads are not replicated (safety checkers, single-file checkpoints, README images).
CONFIG_SUFFIXES = (".json", ".txt")


@dataclass(frozen=True)
class HubRepo:
    """One replicated repo: where it lives, and which of its files a Space preloads."""

    repo_id: str
    revision: str
    source: str  # where its layout was read
    fp16_variant: bool = False  # the repo ships *.fp16.safetensors next to the full weights
    # The exact list, for repos where the rule below does not hold for every folder (SD3.5: fp16 variants for the text
    # encoders only) or where the layout's own module states it (PixArt-Σ); the replica must hold every listed file.
    space_only: tuple[str, ...] = ()

    def space_files(self, folder: Path) -> list[str]:
        """The files a Space running in fp16 reads: configs, tokenizer and processor files, and the fp16 weights
        where the repo has them (else the full weights); ``space_only`` when the repo states them."""
        files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
        if self.space_only:
            missing = sorted(set(self.space_only) - set(files))
            if missing:
                raise RuntimeError(f"the replica of {self.repo_id} lacks files a Space reads: {', '.join(missing)}")
            return sorted(self.space_only)
        if not self.fp16_variant:
            return files
        return [f for f in files if f.endswith(CONFIG_SUFFIXES) or ".fp16." in f]


REPOS: dict[str, HubRepo] = {
    SD: HubRepo(SD, "main", "huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5 file browser; diffusers' "
                "docs use it as the multifolder-layout example (unet/, vae/, text_encoder/, tokenizer/, scheduler/, "
                "each weight as .safetensors and .fp16.safetensors)", fp16_variant=True),
    **{repo: HubRepo(repo, "main", f"huggingface.co/{repo}: config.json, diffusion_pytorch_model.safetensors and "
                     ".fp16.safetensors at the root (the search index holds no listing)", fp16_variant=True)
       for repo in CONTROLNETS.values()},
    ANNOTATORS: HubRepo(ANNOTATORS, "main", "controlnet_aux 0.0.10's MidasDetector / OpenposeDetector.from_pretrained "
                        "ask hf_hub_download for these four names at the repo root"),
    VARIATIONS: HubRepo(VARIATIONS, "v2.0", "a public mirror (yuanqi99/sd-image-variations-diffusers) at the v2.0-era "
                        "commit holds unet/diffusion_pytorch_model.bin and image_encoder/pytorch_model.bin only, no "
                        "safetensors; echomimic_v2 issue #55 reports the same for the original"),
    IP_ADAPTER: HubRepo(IP_ADAPTER, "main", "diffusers' load_ip_adapter docs: models/ip-adapter_sd15.safetensors and "
                        "models/image_encoder/ (config.json, model.safetensors)"),
    CLIP: HubRepo(CLIP, "main", "transformers' CLIPModel docs: config.json, model.safetensors, tokenizer and "
                  "preprocessor files at the root"),
    TAESD: HubRepo(TAESD, "main", "diffusers' AutoencoderTiny docs load it by this id: config.json and "
                   "diffusion_pytorch_model.safetensors at the root"),
    DIT: HubRepo(DIT, DIT_REVISION, "huggingface.co/facebook/DiT-XL-2-256 file browser at eab87f7: model_index.json "
                 "(36 kB: id2label), scheduler/scheduler_config.json, transformer/ and vae/ with config.json and "
                 "diffusion_pytorch_model.bin only (safetensors exist only in the unmerged refs/pr/1)"),
    PIXART_TRANSFORMER_REPO: HubRepo(
        PIXART_TRANSFORMER_REPO, PIXART_TRANSFORMER_REVISION, "huggingface.co/PixArt-alpha/PixArt-Sigma-XL-2-512-MS "
        "tree and commit pages at 76fb7eb (testing/tiny_pixart.py): transformer/config.json and "
        "transformer/diffusion_pytorch_model.safetensors (float32), no fp16 variant",
        space_only=PIXART_TRANSFORMER_SPACE_FILES),
    PIXART_BASE_REPO: HubRepo(
        PIXART_BASE_REPO, PIXART_BASE_REVISION, "huggingface.co/PixArt-alpha/pixart_sigma_sdxlvae_T5_diffusers tree at "
        "2c17b4e (testing/tiny_pixart.py): model_index.json, scheduler/, text_encoder/ (T5-v1.1-XXL in two float32 "
        "shards and an index), tokenizer/ (spiece.model, no tokenizer.json), vae/ (SDXL VAE, float32); no fp16 "
        "variants", space_only=PIXART_BASE_SPACE_FILES),
    SD35_REPO_ID: HubRepo(
        SD35_REPO_ID, SD35_REVISION, "gated; read in public copies keeping its history and configs exported from the "
        "b940f670 snapshot (testing/tiny_sd3.py): fp16 variants for text_encoder, text_encoder_2 and the sharded "
        "text_encoder_3 only, transformer/ and vae/ half precision without a variant; the single-file checkpoint, "
        "'vae copy/' and ComfyUI workflows are not read by the app", fp16_variant=True, space_only=SD35_FILES),
}


def snapshot_dir(hf_home: Path, repo: HubRepo) -> Path:
    """Write ``refs/<revision>`` and return ``snapshots/<sha>/``: huggingface_hub's cache layout for one revision."""
    pinned = len(repo.revision) == 40 and all(c in "0123456789abcdef" for c in repo.revision)
    # A commit hash is looked up as snapshots/<hash> directly; a branch or tag through refs/<name>.
    commit = repo.revision if pinned else hashlib.sha1(f"{repo.repo_id}@{repo.revision}".encode()).hexdigest()
    root = hf_home / "hub" / ("models--" + repo.repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / repo.revision).write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def _copy(source: Path, target: Path, only: Callable[[str], bool] = lambda name: True) -> None:
    for path in source.rglob("*"):
        rel = path.relative_to(source)
        if path.is_file() and only(str(rel)):
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / rel)


def _add_fp16_variants(folder: Path, components: dict[str, type]) -> None:
    """Save each component again in float16 as ``<name>.fp16.safetensors`` (what ``variant="fp16"`` reads)."""
    for sub, cls in components.items():
        model = cls.from_pretrained(folder, subfolder=sub) if sub else cls.from_pretrained(folder)
        model.to(torch.float16).save_pretrained(folder / sub if sub else folder, variant="fp16")


def _to_bin_only(folder: Path, weights: dict[str, str]) -> None:
    """Replace a folder's safetensors with the pre-safetensors ``.bin`` files (``torch.save`` of the state dict)."""
    from safetensors.torch import load_file

    for sub, name in weights.items():
        for path in (folder / sub).glob("*.safetensors"):
            torch.save(load_file(str(path)), folder / sub / name)
            path.unlink()


def _sd_tokenizer_as_released(folder: Path) -> None:
    """SD 1.5's tokenizer/ holds vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json, no
    tokenizer.json: the slow files the fast tokenizer is converted from at load time, as on the hub."""
    from testing.tiny import write_clip_tokenizer

    for path in folder.iterdir():
        path.unlink()
    write_clip_tokenizer(folder)  # the same vocabulary build_tiny_sd gave its text encoder
    (folder / "tokenizer.json").unlink(missing_ok=True)
    if not (folder / "special_tokens_map.json").exists():
        (folder / "special_tokens_map.json").write_text(
            '{"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", '
            '"unk_token": "<|endoftext|>"}')


def _sd_scheduler_as_released(folder: Path) -> None:
    """SD 1.5's scheduler_config.json names PNDMScheduler and carries ``clip_sample: false``; the app builds its own
    schedulers from those numbers, so the replica's file has the same keys."""
    import json

    config = json.loads((folder / "scheduler_config.json").read_text())
    released = {"_class_name": "PNDMScheduler", "_diffusers_version": config.get("_diffusers_version"),
                **{k: config[k] for k in ("beta_end", "beta_schedule", "beta_start", "num_train_timesteps",
                                          "steps_offset")},
                "clip_sample": False, "set_alpha_to_one": False, "skip_prk_steps": True, "trained_betas": None}
    (folder / "scheduler_config.json").write_text(json.dumps(released, indent=2))


def write_adm_release(target: Path, choices: tuple[str, ...] = tuple(CHOICES)) -> Path:
    """The release checkpoints (``64x64_diffusion.pt`` …) with every real key and shape, pooled fp16 storage."""
    target.mkdir(parents=True, exist_ok=True)
    for i, choice in enumerate(choices):
        for name, build in ((CHOICES[choice].diffusion, create_model), (CHOICES[choice].classifier,
                                                                        create_classifier)):
            flags = PRESETS[name]
            state = random_fp16_state(meta_shapes(lambda build=build, flags=flags: build(**flags)), seed=i)
            torch.save(state, target / f"{name}.pt")  # the views share one pool each: a few MB on disk
    return target


def build_hub_replica(root: Path, space_files_only: bool = False, adm: bool = True) -> dict[str, Path]:
    """Write the replica under ``root``: ``hf/`` (set ``HF_HOME`` to it) and ``adm/`` (``CONDLAB_ADM_CACHE``).

    ``space_files_only`` keeps only what a Space running in fp16 preloads (:meth:`HubRepo.space_files`), to
    prove that list is enough; ``adm=False`` skips the (larger) ADM release files.
    """
    from diffusers import AutoencoderKL, ControlNetModel, UNet2DConditionModel
    from transformers import CLIPTextModel

    root = Path(root)
    hf_home = root / "hf"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folders: dict[str, Path] = {}
        sd = build_tiny_sd(work / "sd")
        _add_fp16_variants(sd, {"unet": UNet2DConditionModel, "vae": AutoencoderKL, "text_encoder": CLIPTextModel})
        folders[SD] = sd
        for i, repo in enumerate(CONTROLNETS.values()):
            net = build_tiny_controlnet(work / repo.replace("/", "--"), sd, seed=i + 1)
            _add_fp16_variants(net, {"": ControlNetModel})
            folders[repo] = net
        annotators = work / "annotators"
        write_random_midas(annotators)
        write_random_openpose(annotators, seed=3)
        folders[ANNOTATORS] = annotators
        image = build_tiny_image_models(work / "image")
        _to_bin_only(image["variations"], {"unet": "diffusion_pytorch_model.bin", "vae": "diffusion_pytorch_model.bin",
                                           "image_encoder": "pytorch_model.bin"})
        folders[VARIATIONS] = image["variations"]
        folders[CLIP] = image["clip"]
        tiny_taesd(decoder_factor=2).save_pretrained(work / "taesd")  # the tiny SD's VAE shrinks by 2
        folders[TAESD] = work / "taesd"
        # As in the release, the adapter's image encoder is wider than the UNet's text context (1024 vs 768 there,
        # 48 vs 32 here), so code that mixed the two widths up would fail on the replica too.
        folders[IP_ADAPTER] = build_tiny_ip_adapter(work / "ip_adapter", UNet2DConditionModel.from_pretrained(
            sd, subfolder="unet"), image_embed_dim=48)
        folders[DIT] = build_tiny_dit(work / "dit")
        # PixArt-Σ as released: the base repo's tokenizer is spiece.model alone (no tokenizer.json).
        folders[PIXART_TRANSFORMER_REPO] = build_tiny_pixart_transformer(work / "pixart_transformer", seed=5)
        folders[PIXART_BASE_REPO] = build_tiny_pixart_base(work / "pixart_base", seed=6, fast_tokenizer_file=False)
        # SD3.5 Medium: fp16 variants beside the plain files for the three text encoders only (build_tiny_sd3).
        folders[SD35_REPO_ID] = build_tiny_sd3(work / "sd35", seed=7)
        _to_bin_only(folders[DIT], {"transformer": "diffusion_pytorch_model.bin", "vae": "diffusion_pytorch_model.bin"})
        _sd_tokenizer_as_released(sd / "tokenizer")
        _sd_scheduler_as_released(sd / "scheduler")
        for repo_id, folder in folders.items():
            repo = REPOS[repo_id]
            keep = set(repo.space_files(folder)) if space_files_only else None
            snapshot = snapshot_dir(hf_home, repo)
            _copy(folder, snapshot, (lambda name, keep=keep: keep is None or name in keep))
    return {"hf_home": hf_home, "adm_cache": write_adm_release(root / "adm") if adm else root / "adm"}


def front_matter(hf_home: Path | None = None) -> str:
    """The README front matter's ``models`` and ``preload_from_hub`` entries (``repo files revision``), read off a
    replica (``hf_home``, or one built for the purpose): the files a Space running in fp16 reads, for every repo
    (the Space's build fetches them all, so no startup waits for a download)."""
    if hf_home is None:
        with tempfile.TemporaryDirectory() as tmp:
            return front_matter(build_hub_replica(Path(tmp), adm=False)["hf_home"])
    lines = ["models:", *(f"  - {repo_id}" for repo_id in REPOS), "preload_from_hub:"]
    for repo in REPOS.values():
        snapshots = hf_home / "hub" / ("models--" + repo.repo_id.replace("/", "--")) / "snapshots"
        files = ",".join(repo.space_files(next(snapshots.iterdir())))
        revision = f" {repo.revision}" if repo.revision != "main" else ""
        lines.append(f"  - {repo.repo_id} {files}{revision}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="Build the tiny hub replica of the full profile.")
    parser.add_argument("root", nargs="?", help="where to write hf/ and adm/")
    parser.add_argument("--front-matter", action="store_true", help="print the preload_from_hub lines")
    args = parser.parse_args()
    if args.front_matter:
        print(front_matter())
        return
    if not args.root:
        parser.error("give a folder, or --front-matter")
    built = build_hub_replica(Path(args.root))
    size = sum(f.stat().st_size for f in Path(args.root).rglob("*") if f.is_file())
    print(f"hub replica: HF_HOME={built['hf_home']} CONDLAB_ADM_CACHE={built['adm_cache']} ({size / 1e6:.0f} MB)")


if __name__ == "__main__":
    main()
