"""Linear probes on the toy text encoders' per-token states: is "where" and "which colour goes with which shape" in
the states the UNet cross-attends to, before the UNet sees them?

    HF_HUB_OFFLINE=1 .venv/bin/python -m scripts.eval.probe_text_encoders     # ≈ 1 min; assets/toy/probe.{md,json}

Each probe is a logistic regression on one token's state (the encoder's last hidden state at that token), trained on
captions of one set of world scenes and scored on captions of other scenes, none shared. Probes:

* **side of an object, read at its shape word** (left / right / top / bottom, chance 0.25): in "a blue square on the
  left and a yellow circle" the state of "square" must carry "on the left", which comes after it; the second
  object's side is the partner of the first's (left ↔ right), said before it.
* **colour of an object, read at its shape word** (6 colours, chance 1/6): in a two-object caption both colours are
  in the context; a state that keeps word order knows which one is its own.
* **colour of the object at a side, read at the position word** ("left" → blue): the binding a cross-attention
  query for the left half would need.
* the same three read from the **mean of the caption's states** (a bag of words, order-free), as the baseline.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer, CLIPTextModel, PreTrainedModel, T5EncoderModel

from condition.shapes_world import COLOUR_NAMES, POSITION_PHRASES, Scene, make_batch
from condition.text import encode_prompts
from scripts.shared.training import ASSETS

SIDES = ("left", "right", "top", "bottom")
ENCODERS = {"clip": ASSETS / "sd", "t5": ASSETS / "sd_t5"}


@dataclass
class ProbeRows:
    """Per probe: features [N, D] and labels [N] (one row per caption and object)."""

    features: dict[str, list[np.ndarray]]
    labels: dict[str, list[int]]


def pair_captions(scenes: list[Scene]) -> list[tuple[str, Scene]]:
    """Every two-object caption that names the first object's side (with and without the second's)."""
    out = []
    for scene in scenes:
        a, b = scene.shapes
        pa, pb = POSITION_PHRASES[a.position], POSITION_PHRASES[b.position]
        out.append((f"a {a.colour} {a.shape} {pa} and a {b.colour} {b.shape}", scene))
        out.append((f"a {a.colour} {a.shape} {pa} and a {b.colour} {b.shape} {pb}", scene))
    return out


def load_encoder(folder: Path) -> tuple[object, PreTrainedModel]:
    tokenizer = AutoTokenizer.from_pretrained(folder / "tokenizer")
    config = json.loads((folder / "text_encoder" / "config.json").read_text())
    cls = T5EncoderModel if config["model_type"] == "t5" else CLIPTextModel
    return tokenizer, cls.from_pretrained(folder / "text_encoder").eval()


@torch.no_grad()
def probe_rows(tokenizer, encoder, captions: list[tuple[str, Scene]]) -> ProbeRows:
    feats: dict[str, list[np.ndarray]] = {}
    labels: dict[str, list[int]] = {}

    def add(name: str, feature: torch.Tensor, label: int) -> None:
        feats.setdefault(name, []).append(feature.float().numpy())
        labels.setdefault(name, []).append(label)

    for start in range(0, len(captions), 256):
        chunk = captions[start:start + 256]
        encoded = encode_prompts(tokenizer, encoder, [c for c, _ in chunk])
        for (caption, scene), states, ids in zip(chunk, encoded.states, encoded.token_ids, strict=True):
            words = caption.split()
            index = word_token_index(tokenizer, ids, words)
            real = torch.tensor([i for i in index.values()])
            pooled = states[real].mean(0)
            shape_slots = [k for k, w in enumerate(words) if w in {s.shape for s in scene.shapes}][:2]
            for obj, slot in zip(scene.shapes, shape_slots, strict=True):
                add("side@shape", states[index[slot]], SIDES.index(obj.position))
                add("colour@shape", states[index[slot]], COLOUR_NAMES.index(obj.colour))
                add("side@mean", pooled, SIDES.index(obj.position))
            for k, word in enumerate(words):
                if word in SIDES:
                    owner = next(s for s in scene.shapes if s.position == word)
                    add("colour@position", states[index[k]], COLOUR_NAMES.index(owner.colour))
                    add("colour@mean", torch.cat([pooled, _one_hot(SIDES.index(word), len(SIDES))]),
                        COLOUR_NAMES.index(owner.colour))
    return ProbeRows(feats, labels)


def _one_hot(index: int, size: int) -> torch.Tensor:
    out = torch.zeros(size)
    out[index] = 1.0
    return out


def word_token_index(tokenizer, ids: torch.Tensor, words: list[str]) -> dict[int, int]:
    """Word k of the caption → the position of its (single) token in ``ids`` (every world word is one token)."""
    special = set(tokenizer.all_special_ids)
    positions = [i for i, t in enumerate(ids.tolist()) if t not in special]
    if len(positions) != len(words):
        raise ValueError(f"expected one token per word in {' '.join(words)!r}")
    return dict(enumerate(positions))


def fit_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
              classes: int) -> float:
    """Multinomial logistic regression (L2, full-batch L-BFGS) on standardised features; held-out accuracy."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    xs = torch.tensor((train_x - mean) / std, dtype=torch.float32)
    xt = torch.tensor((test_x - mean) / std, dtype=torch.float32)
    ys = torch.tensor(train_y)
    linear = torch.nn.Linear(xs.shape[1], classes)
    opt = torch.optim.LBFGS(linear.parameters(), lr=0.5, max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(linear(xs), ys) + 1e-3 * linear.weight.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((linear(xt).argmax(1).numpy() == test_y).mean())


CHANCE = {"side@shape": 0.25, "side@mean": 0.25, "colour@shape": 1 / 6, "colour@position": 1 / 6,
          "colour@mean": 1 / 6}
CLASSES = {"side@shape": 4, "side@mean": 4, "colour@shape": 6, "colour@position": 6, "colour@mean": 6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", type=int, default=3000, help="two-object scenes for fitting")
    ap.add_argument("--test", type=int, default=1000, help="other scenes for scoring")
    ap.add_argument("--out", type=Path, default=ASSETS / "probe")
    args = ap.parse_args()
    torch.set_num_threads(1)
    train_scenes = make_batch(args.train, seed=501, p_two=1.0).scenes
    test_scenes = make_batch(args.test, seed=502, p_two=1.0).scenes
    train_caps, test_caps = pair_captions(train_scenes), pair_captions(test_scenes)
    shared = {c for c, _ in train_caps} & {c for c, _ in test_caps}
    test_caps = [(c, s) for c, s in test_caps if c not in shared]  # held out: no caption seen in fitting
    results: dict[str, dict[str, float]] = {}
    for name, folder in ENCODERS.items():
        tokenizer, encoder = load_encoder(folder)
        train, test = probe_rows(tokenizer, encoder, train_caps), probe_rows(tokenizer, encoder, test_caps)
        results[name] = {"left/right separation": side_separation(tokenizer, encoder)}
        print(f"{name:5s} left/right separation at the position word {results[name]['left/right separation']:.3f}")
        for probe in CHANCE:
            accuracy = fit_probe(np.stack(train.features[probe]), np.array(train.labels[probe]),
                                 np.stack(test.features[probe]), np.array(test.labels[probe]), CLASSES[probe])
            results[name][probe] = accuracy
            print(f"{name:5s} {probe:16s} {accuracy:.3f}  (chance {CHANCE[probe]:.3f}, n = {len(test.labels[probe])})")
    write_report(results, len(test_caps), args.out)


@torch.no_grad()
def side_separation(tokenizer, encoder) -> float:
    """How far apart an encoder puts "left" and "right" in the same caption: ‖h(left) − h(right)‖ / ‖h(left)‖ at
    the position word, averaged over the 24 (colour, shape) captions "a {colour} {shape} on the left/right". A
    cross-attention layer reads these states directly: a small separation is a faint signal to learn from."""
    from condition.shapes_world import CLASS_NAMES

    ratios = []
    for name in CLASS_NAMES:
        captions = [f"a {name} on the left", f"a {name} on the right"]
        encoded = encode_prompts(tokenizer, encoder, captions)
        index = word_token_index(tokenizer, encoded.token_ids[0], captions[0].split())[len(captions[0].split()) - 1]
        left, right = encoded.states[0, index].float(), encoded.states[1, index].float()
        ratios.append(float((left - right).norm() / left.norm()))
    return float(np.mean(ratios))


def write_report(results: dict[str, dict[str, float]], n_captions: int, out: Path) -> None:
    lines = ["# Linear probes on the toy text encoders (`python -m scripts.eval.probe_text_encoders`)", "",
             f"Held-out accuracy on {n_captions} two-object captions of scenes not used for fitting "
             "(logistic regression on one token's state, or on the caption's mean state).", "",
             "| probe | chance | " + " | ".join(results) + " |", "|---|---:|" + "---:|" * len(results)]
    for probe, chance in CHANCE.items():
        lines.append(f"| {probe} | {chance:.3f} | " + " | ".join(f"{results[e][probe]:.3f}" for e in results) + " |")
    lines += ["", "Probes: side@shape — the object's side read at its shape word; colour@shape — its colour there; "
              "colour@position — the colour of the object at the named side, read at the position word; *@mean — the "
              "same from the caption's mean state (a bag of words).", "",
              "Left/right separation ‖h(left) − h(right)‖ / ‖h(left)‖ at the position word, same caption otherwise: "
              + ", ".join(f"{e} {results[e]['left/right separation']:.3f}" for e in results) + "."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"captions": n_captions, "chance": CHANCE, "accuracy": results},
                                                   indent=1))


if __name__ == "__main__":
    main()
