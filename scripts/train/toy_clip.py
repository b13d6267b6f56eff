"""Train the toy profile's tiny CLIP on the shapes world and write its tokenizer and processor.

    nice -n 10 .venv/bin/python -m scripts.train.toy_clip            # ~3 min on 2 CPU cores

Writes ``assets/toy/clip/`` (CLIPModel + CLIPTokenizer + CLIPImageProcessor) and the
``text_encoder``/``tokenizer``/``image_encoder``/``feature_extractor`` parts of ``assets/toy/sd/``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm
from transformers import (
    CLIPConfig,
    CLIPImageProcessor,
    CLIPModel,
    CLIPTextModel,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
)

from condition.shapes_world import IMAGE_SIZE, VOCABULARY
from scripts.shared.training import (
    ASSETS,
    RUNS,
    data_pool,
    features,
    images_to_tensor,
    load_checkpoint,
    save_checkpoint,
    setup,
)

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LENGTH = 24  # longest world caption is 17 tokens with BOS/EOS; room for user prompts
HIDDEN = 64  # = projection dim = the UNet's cross_attention_dim
# OpenAI CLIP's normalisation, so toy and full profiles preprocess images identically.
MEAN = [0.48145466, 0.4578275, 0.40821073]
STD = [0.26862954, 0.26130258, 0.27577711]
# Embedding norm both towers are pulled towards: the UNet sees image_embeds directly, and
# equal norms let a text embedding stand in for an image embedding (cross-modal mode).
EMBED_NORM = float(np.sqrt(HIDDEN))


def build_vocab(words: tuple[str, ...]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level-BPE vocabulary in which every world word is one token.

    Every substring of every word, and every split of it into two substrings, becomes a
    merge, so whatever order the BPE applies merges in it always ends at the whole word.
    Single letters, digits and punctuation are always present so unknown words fall back to
    letters rather than to the unknown token, which is EOS in CLIP and would end the prompt.
    """
    symbols = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:!?'-")
    merges: list[tuple[str, str]] = []
    tokens: list[str] = list(symbols) + [s + "</w>" for s in symbols]
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        for length in range(2, len(parts) + 1):
            for start in range(len(parts) - length + 1):
                piece = parts[start : start + length]
                for cut in range(1, length):
                    pair = ("".join(piece[:cut]), "".join(piece[cut:]))
                    if pair not in merges:
                        merges.append(pair)
                token = "".join(piece)
                if token not in tokens:
                    tokens.append(token)
    for extra in (BOS, EOS):
        tokens.append(extra)
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer(folder: Path) -> CLIPTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    vocab, merges = build_vocab(VOCABULARY)
    (folder / "vocab.json").write_text(json.dumps(vocab, indent=0))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": EOS,
        "pad_token": EOS,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (folder / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": BOS, "eos_token": EOS, "unk_token": EOS, "pad_token": EOS}, indent=2)
    )
    tok = CLIPTokenizer.from_pretrained(folder)
    check_tokenizer(tok, vocab)
    return tok


def check_tokenizer(tok: CLIPTokenizer, vocab: dict[str, int]) -> None:
    """Every world word must come out as its own token, padded to MAX_LENGTH with EOS."""
    caption = " ".join(VOCABULARY)
    ids = tok(caption, padding="max_length", max_length=MAX_LENGTH * 2, truncation=True).input_ids
    expected = [vocab[BOS]] + [vocab[w + "</w>"] for w in VOCABULARY] + [vocab[EOS]]
    assert ids[: len(expected)] == expected, (ids, expected)
    ids = tok(
        "a blue square on the left and a yellow circle", padding="max_length", max_length=tok.model_max_length
    ).input_ids
    assert len(ids) == MAX_LENGTH and ids[-1] == vocab[EOS], ids
    assert tok.model_max_length == MAX_LENGTH


def clip_config(vocab: dict[str, int]) -> CLIPConfig:
    text = dict(
        vocab_size=len(vocab),
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_LENGTH,
        bos_token_id=vocab[BOS],
        eos_token_id=vocab[EOS],
        pad_token_id=vocab[EOS],
        projection_dim=HIDDEN,
    )
    vision = dict(
        image_size=IMAGE_SIZE,
        patch_size=4,
        num_channels=3,
        hidden_size=HIDDEN,
        intermediate_size=4 * HIDDEN,
        num_hidden_layers=3,
        num_attention_heads=4,
        projection_dim=HIDDEN,
    )
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=HIDDEN)


def image_processor() -> CLIPImageProcessor:
    return CLIPImageProcessor(
        do_resize=True,
        size={"shortest_edge": IMAGE_SIZE},
        do_center_crop=True,
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=MEAN,
        image_std=STD,
        do_convert_rgb=True,
    )


def normalise(images: np.ndarray) -> torch.Tensor:
    """What the CLIPImageProcessor does to a 32×32 uint8 batch (resize/crop are no-ops)."""
    x = (images_to_tensor(images) + 1) / 2
    return (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def export_sd_parts(model: CLIPModel, tok_dir: Path, sd_dir: Path) -> None:
    """SD-1.x-style text_encoder/tokenizer plus sd-image-variations-style image_encoder/feature_extractor."""
    text = CLIPTextModel(model.config.text_config)
    text.load_state_dict(model.text_model.state_dict())
    text.save_pretrained(sd_dir / "text_encoder")
    vision = CLIPVisionModelWithProjection(model.config.vision_config)
    vision.vision_model.load_state_dict(model.vision_model.state_dict())
    vision.visual_projection.load_state_dict(model.visual_projection.state_dict())
    vision.save_pretrained(sd_dir / "image_encoder")
    CLIPTokenizer.from_pretrained(tok_dir).save_pretrained(sd_dir / "tokenizer")
    image_processor().save_pretrained(sd_dir / "feature_extractor")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="1 is faster when another job shares the 2 cores")
    ap.add_argument("--eval-only", action="store_true", help="only print the shipped CLIP's zero-shot accuracy")
    args = ap.parse_args()
    setup(args.seed, args.threads)
    out = ASSETS / "clip"
    if args.eval_only:
        evaluate(CLIPModel.from_pretrained(out).eval(), CLIPTokenizer.from_pretrained(out))
        return
    tok = write_tokenizer(out)
    vocab = json.loads((out / "vocab.json").read_text())

    pool = data_pool(40000, seed=1000 + args.seed, p_two=0.3, p_plain=0.5)
    captions = [str(c) for c in pool["captions"]]
    uniq = sorted(set(captions))
    cap_index = {c: i for i, c in enumerate(uniq)}
    cap_ids = torch.tensor([cap_index[c] for c in captions])
    all_tokens = tok(uniq, padding="max_length", max_length=MAX_LENGTH, truncation=True, return_tensors="pt").input_ids
    pixels = normalise(pool["images"])

    model = CLIPModel(clip_config(vocab))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    ckpt_dir = RUNS / "clip"
    start, prior_seconds = 0, 0.0
    if (ck := load_checkpoint(ckpt_dir)) is not None and ck[1]["steps"] == args.steps:
        model.load_state_dict(ck[0]["model"])
        start, prior_seconds = ck[1]["step"], ck[1].get("seconds", 0.0)
        for _ in range(start):
            sched.step()
        print(f"resumed at step {start} (optimizer moments restart)")
    gen = torch.Generator().manual_seed(args.seed)
    for _ in range(start):
        torch.randint(len(captions), (args.batch,), generator=gen)
    t0 = time.time()
    bar = tqdm(range(start, args.steps), desc="clip")
    for step in bar:
        idx = torch.randint(len(captions), (args.batch,), generator=gen)
        c = cap_ids[idx]
        out_ = model(input_ids=all_tokens[c], pixel_values=pixels[idx], return_loss=False)
        # Captions repeat within a batch (24 plain prompts), so every identical caption is a positive.
        same = (c[:, None] == c[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        logits = out_.logits_per_image
        loss = 0.5 * (
            torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
            + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean()
        )
        # logits use normalised embeddings; the raw ones are what the UNet sees, so hold their norm fixed.
        img_raw = model.visual_projection(out_.vision_model_output.pooler_output)
        txt_raw = model.text_projection(out_.text_model_output.pooler_output)
        norm_loss = sum(((e.norm(dim=-1) / EMBED_NORM - 1) ** 2).mean() for e in (img_raw, txt_raw))
        total = loss + 0.1 * norm_loss
        opt.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        with torch.no_grad():
            acc = same[torch.arange(len(c)), logits.argmax(1)].mean()
        bar.set_postfix(
            loss=f"{loss.item():.3f}", acc=f"{acc.item():.2f}", norm=f"{img_raw.norm(dim=-1).mean().item():.1f}"
        )
        if (step + 1) % 200 == 0 or step + 1 == args.steps:
            meta = {"step": step + 1, "steps": args.steps, "seconds": prior_seconds + time.time() - t0}
            save_checkpoint(ckpt_dir, {"model": model.state_dict()}, meta)
    elapsed = prior_seconds + time.time() - t0
    model.eval()
    evaluate(model, tok)
    model.save_pretrained(out)
    image_processor().save_pretrained(out)
    export_sd_parts(model, out, ASSETS / "sd")
    (RUNS / "clip_train.json").write_text(json.dumps({"steps": args.steps, "seconds": elapsed, "batch": args.batch}))
    print(f"saved {out} after {args.steps} steps, {elapsed / 60:.1f} min")


@torch.no_grad()
def evaluate(model: CLIPModel, tok: CLIPTokenizer) -> None:
    """Zero-shot accuracy over the 24 plain prompts on held-out single-shape images."""
    from condition.shapes_world import CLASS_NAMES, make_batch

    b = make_batch(480, seed=99, p_two=0.0)
    prompts = [f"a {n}" for n in CLASS_NAMES]
    ids = tok(prompts, padding="max_length", max_length=MAX_LENGTH, return_tensors="pt").input_ids
    t = F.normalize(features(model.get_text_features(input_ids=ids)), dim=-1)
    i = F.normalize(features(model.get_image_features(pixel_values=normalise(b.images))), dim=-1)
    pred = (i @ t.T).argmax(1).numpy()
    print(f"zero-shot accuracy on 24 classes: {(pred == b.labels).mean():.3f}")


if __name__ == "__main__":
    main()
