"""Train the toy profile's order-aware text encoder: a tiny T5 trained with span corruption on the world's captions.

    nice -n 10 .venv/bin/python -m scripts.train.toy_t5 --minutes 20          # ≈ 15 min on 2 CPU cores

Writes ``assets/toy/t5/`` (``T5EncoderModel`` + ``T5Tokenizer``, the layout of PixArt's and SD3's ``text_encoder``
/ ``tokenizer`` folders) and the ``text_encoder``/``tokenizer`` of ``assets/toy/sd_t5/``. Checkpoints go to
``.toy_runs/t5`` and a rerun resumes from them.

Why span corruption (T5's own objective) and not CLIP's contrastive loss: a contrastive text tower gets its only
training signal through the pooled end-of-text state, so nothing asks its per-token states — the ones a UNet
cross-attends to — to keep which word came where. A denoising objective asks the encoder to reconstruct masked
spans from the rest of the caption, through every token's state, with bidirectional attention: the state of
"blue" sees "on the left" after it. In this world the content words are drawn independently, so most masked
words cannot be predicted; what can be is exactly the structure (which position words follow "on the"/"at the",
that the second object's side is the opposite of the first's, that the two colours differ), and that needs order.
A masked-LM encoder would see the same signal; T5 is what PixArt, Imagen and SD3 condition on, so the toy matches
the real models' class, tokenizer and folder layout.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration, T5Tokenizer

from condition.shapes_world import VOCABULARY
from scripts.shared.training import ASSETS, RUNS, data_pool, load_checkpoint, save_checkpoint, setup

MAX_LENGTH = 24  # the tiny CLIP's window: both encoders give the UNet 24 states
HIDDEN = 64  # = the UNet's cross_attention_dim, as for the tiny CLIP
SENTINELS = 8  # captions have ≤ 17 words, so a few sentinel tokens cover every corruption
NOISE_DENSITY = 0.3  # denser than T5's 0.15: the captions are short
MEAN_SPAN = 2.0
OUT = ASSETS / "t5"


def vocabulary() -> list[tuple[str, float]]:
    """A Unigram vocabulary in T5's order (<pad>, </s>, <unk>, pieces, sentinels in reverse) in which every world
    word is one piece; single letters let unknown words fall back to letters instead of <unk>."""
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -2.0)]
    pieces += [(f"▁{word}", -1.0) for word in VOCABULARY]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789.,;:!?'-")
    pieces += [(f"▁{ch}", -8.0) for ch in letters if f"▁{ch}" not in dict(pieces)]
    pieces += [(ch, -9.0) for ch in letters]
    pieces += [(f"<extra_id_{i}>", 0.0) for i in range(SENTINELS - 1, -1, -1)]
    return pieces


def write_tokenizer(folder: Path) -> T5Tokenizer:
    tok = T5Tokenizer(vocab=vocabulary(), extra_ids=SENTINELS, model_max_length=MAX_LENGTH)
    tok.save_pretrained(folder)
    tok = T5Tokenizer.from_pretrained(folder)
    ids = tok("a blue square on the left and a yellow circle").input_ids
    words = "a blue square on the left and a yellow circle".split()
    assert tok.convert_ids_to_tokens(ids) == [f"▁{w}" for w in words] + ["</s>"], tok.convert_ids_to_tokens(ids)
    assert tok.model_max_length == MAX_LENGTH
    return tok


def t5_config(vocab_size: int, pad_id: int, eos_id: int) -> T5Config:
    """T5 v1.1's design (gated GELU, no dropout at this size) at the tiny CLIP's width and depth."""
    return T5Config(
        vocab_size=vocab_size,
        d_model=HIDDEN,
        d_kv=16,
        d_ff=4 * HIDDEN,
        num_layers=3,
        num_decoder_layers=2,
        num_heads=4,
        relative_attention_num_buckets=16,
        relative_attention_max_distance=32,
        dropout_rate=0.0,
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
        decoder_start_token_id=pad_id,
    )


def corrupt(ids: list[int], rng: np.random.Generator, sentinel_ids: list[int], eos: int) -> tuple[list, list]:
    """T5 span corruption of one caption (without its </s>): spans of mean ``MEAN_SPAN`` covering
    ``NOISE_DENSITY`` of the tokens become sentinels in the input; the target lists each sentinel and its span."""
    n = len(ids)
    n_noise = max(1, min(n - 1, round(n * NOISE_DENSITY)))
    n_spans = max(1, min(n_noise, round(n_noise / MEAN_SPAN), n - n_noise))
    noise_lengths = _composition(n_noise, n_spans, rng)
    keep_lengths = _composition(n - n_noise, n_spans, rng)
    if rng.random() < 0.5:  # a span may also open the caption: keep/noise alternate from either end
        keep_lengths, noise_lengths = [0, *keep_lengths], [*noise_lengths, 0]
    source, target, pos, spans = [], [], 0, 0
    for keep, noise in zip(keep_lengths, noise_lengths, strict=True):
        source += ids[pos : pos + keep]
        pos += keep
        if noise:
            source.append(sentinel_ids[spans])
            target += [sentinel_ids[spans]] + ids[pos : pos + noise]
            pos += noise
            spans += 1
    return source + [eos], target + [eos]


def _composition(total: int, parts: int, rng: np.random.Generator) -> list[int]:
    """``total`` split into ``parts`` positive integers, uniformly over the cut points (T5's random segmentation)."""
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, total), parts - 1, replace=False)) if parts > 1 else []
    return [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]


def batch_tensors(pairs: list[tuple[list, list]], pad: int) -> tuple[torch.Tensor, ...]:
    src_len = max(len(s) for s, _ in pairs)
    tgt_len = max(len(t) for _, t in pairs)
    src = torch.full((len(pairs), src_len), pad)
    tgt = torch.full((len(pairs), tgt_len), -100)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s)] = torch.tensor(s)
        tgt[i, : len(t)] = torch.tensor(t)
    return src, (src != pad).long(), tgt


def untied(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with tied tensors (embeddings shared by encoder, decoder and head) stored once each."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def export(model: T5ForConditionalGeneration, tok: T5Tokenizer, info: dict) -> None:
    """The encoder alone as ``T5EncoderModel`` (what PixArt and SD3 load as ``text_encoder``), with its tokenizer."""
    encoder = T5EncoderModel(model.config)
    missing, unexpected = encoder.load_state_dict(model.state_dict(), strict=False)
    assert not [k for k in missing if not k.startswith("decoder")], missing
    for folder in (OUT, ASSETS / "sd_t5" / "text_encoder"):
        encoder.save_pretrained(folder)
    tok.save_pretrained(OUT)
    tok.save_pretrained(ASSETS / "sd_t5" / "tokenizer")
    (OUT / "train.json").write_text(json.dumps(info, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8000)
    ap.add_argument("--minutes", type=float, default=20.0, help="stop and export after this much training time")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    setup(args.seed, args.threads)

    tok = write_tokenizer(OUT)
    # The captions of the UNet's own training pool, so the encoder knows exactly the language the UNet will read.
    pool = data_pool(60000, seed=2000 + args.seed, p_two=0.3, p_plain=0.5)
    caption_ids = [ids[:-1] for ids in tok([str(c) for c in pool["captions"]]).input_ids]
    held_out = [ids[:-1] for ids in tok([str(c) for c in data_pool(2000, seed=77, p_two=0.5, p_plain=0.0)["captions"]])
                .input_ids]
    sentinel_ids = [tok.convert_tokens_to_ids(f"<extra_id_{i}>") for i in range(SENTINELS)]
    model = T5ForConditionalGeneration(t5_config(len(tok), tok.pad_token_id, tok.eos_token_id))
    n_params = sum(p.numel() for p in model.get_encoder().parameters())
    print(f"T5 encoder parameters: {n_params:,} (with the training decoder: {model.num_parameters():,})")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    rng = np.random.default_rng(args.seed)
    step, seconds = 0, 0.0
    ckpt_dir = RUNS / "t5"
    if (ck := load_checkpoint(ckpt_dir)) is not None:
        model.load_state_dict(ck[0]["model"])
        step, seconds = ck[1]["step"], ck[1]["seconds"]
        rng = np.random.default_rng([args.seed, step])  # a resumed run draws fresh, still seeded, corruptions
        print(f"resumed at step {step} ({seconds / 60:.1f} min; optimizer moments restart)")

    def lr_at(s: int) -> float:
        progress = min(1.0, max(s / args.steps, seconds / (args.minutes * 60)))
        return args.lr * min(1.0, (s + 1) / 200) * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * progress)))

    @torch.no_grad()
    def held_out_accuracy() -> float:
        eval_rng = np.random.default_rng(123)
        src, mask, tgt = batch_tensors([corrupt(ids, eval_rng, sentinel_ids, tok.eos_token_id) for ids in held_out],
                                       tok.pad_token_id)
        model.eval()
        logits = model(input_ids=src, attention_mask=mask, labels=tgt).logits
        model.train()
        keep = (tgt != -100) & ~torch.isin(tgt, torch.tensor(sentinel_ids + [tok.eos_token_id]))
        return (logits.argmax(-1) == tgt)[keep].float().mean().item()

    bar = tqdm(total=args.steps, initial=step, desc="t5")
    model.train()
    last = time.time()
    while step < args.steps and seconds < args.minutes * 60:
        rows = rng.integers(len(caption_ids), size=args.batch)
        src, mask, tgt = batch_tensors([corrupt(caption_ids[r], rng, sentinel_ids, tok.eos_token_id) for r in rows],
                                       tok.pad_token_id)
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        loss = model(input_ids=src, attention_mask=mask, labels=tgt).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        now = time.time()
        seconds += now - last
        last = now
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", min=f"{seconds / 60:.1f}")
        if step % 500 == 0:
            save_checkpoint(ckpt_dir, {"model": untied(model)}, {"step": step, "seconds": seconds})
            bar.write(f"step {step}: held-out span accuracy {held_out_accuracy():.3f}")
            last = time.time()
    bar.close()
    save_checkpoint(ckpt_dir, {"model": untied(model)}, {"step": step, "seconds": seconds})
    accuracy = held_out_accuracy()
    info = {"steps": step, "seconds": round(seconds, 1), "batch": args.batch, "lr": args.lr,
            "encoder_params": n_params, "noise_density": NOISE_DENSITY, "mean_span": MEAN_SPAN,
            "held_out_span_token_accuracy": round(accuracy, 4)}
    export(model, tok, info)
    print(f"exported the T5 encoder after {step} steps, {seconds / 60:.1f} min; held-out span accuracy {accuracy:.3f}")


if __name__ == "__main__":
    main()
