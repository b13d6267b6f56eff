"""Measure guidance at scale: methods × scales × prompts × seeds, sampled through the app's own task, on one
process or data parallel under torchrun / accelerate launch.

    python -m scripts.eval.evaluate --profile toy --methods cfg,apg --scales 1,3,7 --prompts 24 \\
        --samples-per-prompt 8 --steps 25 --out runs/eval                      # one process
    torchrun --nproc_per_node 8 -m scripts.eval.evaluate …same arguments…          # 8 ranks, one GPU each

Every sample is one call of the ``/text_to_image`` task (``tasks.text_to_image.TEXT_TO_IMAGE``, what the tab and
the API run) with ``num_images = 1`` and its own seed, a hash of (``--seed``, prompt, sample index). So the same
noise goes to every method and scale (cells differ by the method alone), and a sample is the same image whichever
rank draws it: N ranks reproduce one rank sample for sample. Ranks take every N-th pending sample (a fair share
whatever each method costs), each on its own device (``cuda:<LOCAL_RANK>``, or the CPU), and coordinate through
``torch.distributed`` with gloo (a few small messages; no tensor crosses ranks).

Each finished sample is written at once (its PNG, then its row in ``OUT/shards/rank<r>.jsonl``), so a killed run
or a dead rank loses only the samples in flight; ``--resume`` merges what is on disk and draws the rest. Rank 0
then writes ``samples.jsonl`` (one row per sample, sorted), ``summary.csv`` (means and 95 % intervals per method
× scale), ``adherence_diversity.png`` and ``run.json``. ``OUT`` must be one folder every rank can write (shared
storage across nodes). Metrics: ``scripts/shared/metrics.py``.

Fault injection for the tests: ``CONDLAB_EVAL_FAULT=kill:RANK:K`` (that rank SIGKILLs itself after K samples) or
``raise:RANK:K`` (raises instead).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from guidance.rules import RULE_NAMES
from models.profiles import Profile, load_profile, portable
from models.runtime import SEED_MAX, pick_runtime, use_cpu_threads
from reporting.metadata import save_png
from scripts.shared import metrics as M
from tasks.text_to_image import TEXT_TO_IMAGE

GRID_FIELDS = ("prompt", "guidance", "scale", "steps", "seed", "num_images")  # the harness sets these per sample
ROW_KEY = ("method", "scale", "prompt_index", "sample")
SAMPLING_KEYS = ("profile", "prompt_set", "steps", "seed", "metrics", "options")  # --resume needs them unchanged


class Stopped(Exception):
    """A signal (the launcher ending every rank, a preemption, Ctrl-C) stopped this rank between samples."""


@dataclass(frozen=True)
class Item:
    """One sample of the grid."""

    method: str
    scale: float
    prompt_index: int
    sample: int
    seed: int

    @property
    def key(self) -> tuple:
        return self.method, self.scale, self.prompt_index, self.sample

    @property
    def image(self) -> str:
        return f"images/{self.method}/w{self.scale:g}/p{self.prompt_index:04d}_s{self.sample:03d}.png"


def sample_seed(base: int, prompt: str, sample: int) -> int:
    """A seed per (prompt, sample), not per rank or cell: common noise across methods and scales."""
    digest = hashlib.blake2b(f"{base}|{prompt}|{sample}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & SEED_MAX


class OneLineParser(argparse.ArgumentParser):
    """Bad input is one line naming the argument (no usage block, no traceback), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (--help lists the arguments)\n")


def comma_list(text: str, kind: type, name: str) -> list:
    """A comma list of ``kind`` values for argparse: no empty items, no duplicates (a cell would be drawn twice)."""
    items = [part.strip() for part in text.split(",")]
    if not text.strip() or any(not part for part in items):
        raise argparse.ArgumentTypeError(f"{name} must be a comma list with no empty item, got {text!r}")
    try:
        values = [kind(part) for part in items]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{name} must be a comma list of numbers, got {text!r}") from None
    if len(set(values)) != len(values):
        raise argparse.ArgumentTypeError(f"{name} lists a value twice: {text!r}")
    return values


def parse_args(argv: list[str] | None) -> tuple[argparse.Namespace, Profile, list[M.EvalPrompt], list[Item]]:
    """The arguments, checked before anything is loaded or written: every problem is one line naming its argument."""
    ap = OneLineParser(prog="python -m scripts.eval.evaluate", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="toy", help="built-in profile name or a profile .toml (default toy)")
    ap.add_argument("--methods", default="cfg", type=lambda v: comma_list(v, str, "--methods"),
                    help=f"comma list of {', '.join(RULE_NAMES)}")
    ap.add_argument("--scales", default="1,3,7.5", type=lambda v: comma_list(v, float, "--scales"),
                    help="comma list of guidance scales (CFG++: λ in [0, 1])")
    ap.add_argument("--prompt-set", choices=M.PROMPT_SETS, help="toy: pairs (default) or single; else photos")
    ap.add_argument("--suite", choices=("compositional",),
                    help="compositional: GenEval's categories in the toy world (single object, two objects, colour "
                         "attribution, position), scored per category (the --prompt-set of that name)")
    ap.add_argument("--prompts", type=int, help="the first N prompts of the set (default: 24, or the whole set)")
    ap.add_argument("--samples-per-prompt", type=int, default=4)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--seed", type=int, default=0, help="base of every per-sample seed")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="any other /text_to_image parameter for every sample, e.g. scheduler=euler, pag_scale=3")
    ap.add_argument("--reference", type=int, metavar="K",
                    help="world images per prompt in the reference row (toy; default --samples-per-prompt, 0: none)")
    ap.add_argument("--out", required=True, type=Path, help="output folder (shared by every rank)")
    ap.add_argument("--resume", action="store_true", help="keep the samples already in --out, draw the rest")
    args = ap.parse_args(argv)

    def check(ok: bool, argument: str, message: str) -> None:
        if not ok:
            ap.error(f"argument {argument}: {message}")

    try:
        profile = load_profile(args.profile)
    except ValueError as e:
        ap.error(f"argument --profile: {e}")
    unknown = [m for m in args.methods if m not in RULE_NAMES]
    check(not unknown, "--methods", f"unknown method(s) {', '.join(unknown)}; known: {', '.join(RULE_NAMES)}")
    check(all(map(math.isfinite, args.scales)), "--scales", f"every scale must be a finite number, got {args.scales}")
    if args.suite and args.prompt_set and args.prompt_set != args.suite:
        ap.error(f"argument --suite: {args.suite} is its own prompt set; drop --prompt-set {args.prompt_set}")
    args.prompt_set = args.suite or args.prompt_set or ("pairs" if profile.name == "toy" else "photos")
    check(args.prompt_set not in M.WORLD_SETS or profile.name == "toy", "--prompt-set",
          f"{args.prompt_set} are the toy world's captions; the profile {profile.name!r} takes photos")
    size = M.prompt_set_size(args.prompt_set)
    args.prompts = min(size, 24) if args.prompts is None else args.prompts
    check(1 <= args.prompts <= size, "--prompts", f"the {args.prompt_set} set has 1 to {size} prompts, got "
          f"{args.prompts}")
    check(args.samples_per_prompt >= 1, "--samples-per-prompt", f"must be at least 1, got {args.samples_per_prompt}")
    check(0 <= args.seed <= SEED_MAX, "--seed", f"must be in 0 … {SEED_MAX}, got {args.seed}")
    args.reference = args.samples_per_prompt if args.reference is None else args.reference
    check(args.reference >= 0, "--reference", f"must be 0 or more, got {args.reference}")
    try:
        args.metrics = M.metric_families(profile, args.prompt_set)
    except ValueError as e:
        ap.error(f"argument --profile/--prompt-set: {e}")
    options = dict(item.partition("=")[::2] for item in args.set)
    bad = [item for item in args.set if "=" not in item or item.partition("=")[0] in GRID_FIELDS]
    check(not bad, "--set", f"expected NAME=VALUE, NAME not one of {', '.join(GRID_FIELDS)}; got {bad}")
    endpoint = TEXT_TO_IMAGE.spec.bind(profile)
    prompts = M.prompt_set(args.prompt_set, args.prompts)
    for method in args.methods:  # every cell validated as the endpoint validates a request, before any model work
        for scale in args.scales:
            try:
                parsed = endpoint.parse(dict(prompt=prompts[0].text, guidance=method, scale=scale, steps=args.steps,
                                             seed=0, **options))
            except ValueError as e:  # name the argument the endpoint's message is about
                first = str(e).split()[0]
                where = {"steps": "--steps", "scale": "--scales"}.get(first) or (
                    "--set" if first in options or "takes no parameter" in str(e) else "--methods/--scales/--set")
                ap.error(f"argument {where}: {method} at scale {scale:g}: {e}")
    args.options = {name: endpoint.public(parsed)[name] for name in options}
    check_out(ap, args, profile)
    grid = [Item(m, s, p, k, sample_seed(args.seed, prompts[p].text, k)) for m in args.methods for s in args.scales
            for p in range(args.prompts) for k in range(args.samples_per_prompt)]
    return args, profile, prompts, grid


def sampling_settings(args: argparse.Namespace, profile: Profile) -> dict:
    """Everything besides the grid that decides a sample's pixels or its metrics: what --resume must find unchanged."""
    return {"profile": profile.name, "prompt_set": args.prompt_set, "steps": args.steps, "seed": args.seed,
            "metrics": args.metrics, "options": args.options}


def check_out(ap: OneLineParser, args: argparse.Namespace, profile: Profile) -> None:
    """--out is a folder this process can write; without --resume it holds no samples; with it, the same settings."""
    out: Path = args.out
    if out.exists() and not out.is_dir():
        ap.error(f"argument --out: {out} is a file, not a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write_probe_{socket.gethostname()}_{os.getpid()}"  # unique across the nodes of a run
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        ap.error(f"argument --out: cannot write to {out}: {e.strerror or e}")
    if not args.resume and ((out / "samples.jsonl").exists() or any(out.glob("shards/*.jsonl"))):
        ap.error(f"argument --out: {out} already holds samples; pass --resume to continue them, or another --out")
    if args.resume and (out / "run.json").exists():
        before, now = json.loads((out / "run.json").read_text()).get("sampling", {}), sampling_settings(args, profile)
        changed = [k for k in SAMPLING_KEYS if before.get(k) != now[k]]
        if changed:
            ap.error(f"argument --resume: {out} was sampled with " + ", ".join(f"{k}={before.get(k)!r}" for k in
                     changed) + f", not {', '.join(f'{k}={now[k]!r}' for k in changed)}; use those or another --out")


# ----------------------------------------------------------------------------- ranks


@dataclass
class Ranks:
    """This process's place in the launch (torchrun and accelerate launch both set RANK / WORLD_SIZE / LOCAL_RANK)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> Ranks:
        """One process (rank 0 of 1) when no launcher set the variables."""
        return cls(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
                   int(os.environ.get("LOCAL_RANK", 0)))

    def start(self) -> str:
        """Join the group and pick this rank's device; returns the device's name."""
        if torch.cuda.is_available() and "CONDLAB_DEVICE" not in os.environ:
            torch.cuda.set_device(self.local_rank)
            os.environ["CONDLAB_DEVICE"] = f"cuda:{self.local_rank}"  # what models.runtime.pick_runtime reads
        if self.world > 1:
            torch.distributed.init_process_group("gloo", timeout=timedelta(hours=2))
        return str(pick_runtime().device)

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (the pending samples: one snapshot, so the split is the same)."""
        box = [value]
        if self.world > 1:
            self._collective(torch.distributed.broadcast_object_list, box, src=0)
        return box[0]

    def gather(self, value: Any) -> list:
        """Every rank's ``value`` on rank 0 (also the wait for every rank to finish)."""
        out = [None] * self.world if self.rank == 0 else None
        if self.world == 1:
            return [value]
        self._collective(torch.distributed.gather_object, value, out, dst=0)
        return out or []

    def _collective(self, op: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Run a collective; a peer's death becomes one clear line instead of gloo's transport error."""
        try:
            op(*args, **kwargs)
        except RuntimeError as e:  # gloo: "Connection closed by peer" when another rank died
            raise RuntimeError(f"lost another rank during {op.__name__} (its own message, or the launcher's report, "
                               f"names it): {str(e).splitlines()[0][:200]}") from e

    def close(self) -> None:
        """Leave the group cleanly (torch warns at exit otherwise)."""
        if self.world > 1 and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


# ----------------------------------------------------------------------------- samples on disk


def read_rows(path: Path) -> list[dict]:
    """The rows of a JSONL file; a last line cut short by a kill is dropped (its sample is drawn again)."""
    rows = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def row_key(row: dict) -> tuple:
    """What makes a sample itself: its method, scale, prompt and index (the seed follows from them)."""
    return tuple(row[k] for k in ROW_KEY)


def consolidate(out: Path) -> dict[tuple, dict]:
    """Merge samples.jsonl and every rank's shard into one sorted samples.jsonl (one row per sample), then drop the
    shards. Rank 0 only, while no other rank writes. A kill at any point leaves every finished row on disk."""
    rows = {row_key(r): r for path in [out / "samples.jsonl", *sorted(out.glob("shards/*.jsonl"))]
            for r in read_rows(path)}
    ordered = [rows[k] for k in sorted(rows)]
    tmp = out / "samples.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in ordered))
    os.replace(tmp, out / "samples.jsonl")
    for shard in out.glob("shards/*.jsonl"):
        shard.unlink()
    return rows


def inject_fault(rank: int, made: int) -> None:
    """The tests' stand-in for a rank dying (``CONDLAB_EVAL_FAULT``, see the module docstring)."""
    kind, _, rest = os.environ.get("CONDLAB_EVAL_FAULT", "").partition(":")
    if kind and rest == f"{rank}:{made}":
        if kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected fault after {made} samples")


def draw(items: list[Item], args: argparse.Namespace, profile: Profile, prompts: list[M.EvalPrompt],
         ranks: Ranks, progress: tqdm) -> int:
    """Sample and score this rank's items, writing each as soon as it is done; returns how many were made."""
    if not items:
        return 0
    meter = M.Meter(profile, pick_runtime(), args.metrics)
    shard = args.out / "shards" / f"rank{ranks.rank}.jsonl"
    shard.parent.mkdir(exist_ok=True)
    for made, item in enumerate(items):
        prompt = prompts[item.prompt_index]
        progress.set_postfix_str(f"{item.method} w={item.scale:g} p{item.prompt_index} s{item.sample}")
        result = TEXT_TO_IMAGE(profile, prompt=prompt.text, guidance=item.method, scale=item.scale,
                               steps=args.steps, seed=item.seed, num_images=1, **args.options)
        image = result.outputs["images"][0][0]
        pixels = np.asarray(image.convert("RGB"))
        scores, embedding = meter.score(pixels, prompt)
        path = args.out / item.image
        path.parent.mkdir(parents=True, exist_ok=True)
        save_png(image, path.with_suffix(".tmp.png"))
        os.replace(path.with_suffix(".tmp.png"), path)
        if embedding is not None:
            np.save(path.with_suffix(".clip.npy"), embedding)
        row = {"method": item.method, "scale": item.scale, "prompt_index": item.prompt_index, "sample": item.sample,
               "prompt": prompt.text, "seed": item.seed, "image": item.image,
               **{k: round(v, 6) for k, v in scores.items()}}
        with shard.open("a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        progress.update(1)
        inject_fault(ranks.rank, made + 1)
    return len(items)


def write_results(args: argparse.Namespace, profile: Profile, prompts: list[M.EvalPrompt], grid: list[Item],
                  rows: dict[tuple, dict]) -> list[dict]:
    """summary.csv and the plot for the current grid (rows of an earlier, larger grid stay in samples.jsonl)."""
    cells = [(m, s, [rows[i.key] for i in grid if (i.method, i.scale) == (m, s)]) for m in args.methods
             for s in args.scales]
    world = None
    if args.reference and args.prompt_set in M.WORLD_SETS:
        world = M.world_row(M.Meter(profile, pick_runtime(), args.metrics), prompts, args.reference, args.seed)
    return M.write_results(args.out, cells, "clip" in args.metrics, world)


def versions() -> dict[str, str]:
    """Python, the packages that decide the pixels, and the project's commit (when it is a git checkout)."""
    out = {"python": platform.python_version()}
    for package in ("torch", "diffusers", "transformers", "accelerate", "numpy"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = "not installed"
    try:
        git = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, check=False)
        out["commit"] = git.stdout.strip() if git.returncode == 0 else "unknown"
    except OSError:  # no git on this machine
        out["commit"] = "unknown"
    return out


def write_run(args: argparse.Namespace, profile: Profile, status: str, **extra: Any) -> None:
    """run.json: what ran, where and how long; paths only repo-relative (or ``<local>/name``), never absolute."""
    arguments = {k: v for k, v in vars(args).items() if k not in ("out", "options")}
    record = {"status": status, "sampling": sampling_settings(args, profile),
              "arguments": {**arguments, "out": portable(str(args.out.resolve()))},
              "profile": {"name": profile.name, "roles": {r: profile.display_source(r) for r in profile.roles}},
              "versions": versions(), **extra}
    tmp = args.out / "run.json.tmp"
    tmp.write_text(json.dumps(record, indent=1, default=str) + "\n")
    os.replace(tmp, args.out / "run.json")


def stop_on_signal(signum: int, frame: object) -> None:
    """SIGTERM (a launcher stopping the group, a scheduler preempting) ends this rank between samples."""
    raise Stopped(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> None:
    """The CLI (see the module docstring); takes ``argv`` so the tests can run it in their own process."""
    started, started_utc = time.perf_counter(), datetime.now(UTC).isoformat(timespec="seconds")
    args, profile, prompts, grid = parse_args(argv)
    ranks = Ranks.from_env()
    who = f"rank {ranks.rank} of {ranks.world}"
    previous_handler = signal.signal(signal.SIGTERM, stop_on_signal)
    progress = None
    try:
        device = ranks.start()
        use_cpu_threads(pick_runtime(), profile.cpu_threads)
        pending = None
        if ranks.rank == 0:
            done = consolidate(args.out)
            pending = [i for i, item in enumerate(grid) if item.key not in done]
            write_run(args, profile, "running", started_utc=started_utc, ranks=ranks.world)
        pending = ranks.broadcast(pending)
        mine = [grid[i] for i in pending[ranks.rank::ranks.world]]
        progress = tqdm(total=len(mine), desc=f"rank {ranks.rank}/{ranks.world}", position=ranks.rank,
                        file=sys.stderr, dynamic_ncols=True)
        progress.write(f"{who} on {device}: {len(mine)} samples of {len(grid)} "
                       f"({len(grid) - len(pending)} already in {args.out.name})", file=sys.stderr)
        sampling_started = time.perf_counter()
        made = draw(mine, args, profile, prompts, ranks, progress)
        progress.close()
        counts = ranks.gather({"rank": ranks.rank, "device": device, "samples": made,
                               "sampling_s": round(time.perf_counter() - sampling_started, 2)})
        if ranks.rank == 0:
            rows = consolidate(args.out)
            missing = [i for i in grid if i.key not in rows]
            if missing:
                raise RuntimeError(f"{len(missing)} samples are missing after every rank finished")
            summary = write_results(args, profile, prompts, grid, rows)
            write_run(args, profile, "complete", started_utc=started_utc,
                      finished_utc=datetime.now(UTC).isoformat(timespec="seconds"),
                      wall_time_s=round(time.perf_counter() - started, 2), ranks=ranks.world, per_rank=counts,
                      samples={"grid": len(grid), "drawn_now": len(pending), "kept": len(grid) - len(pending)})
            print(f"evaluate: {len(grid)} samples, {len(summary)} summary rows in {args.out} "
                  f"({time.perf_counter() - started:.1f} s on {ranks.world} process(es))", file=sys.stderr)
        ranks.close()
    except (Exception, KeyboardInterrupt) as e:
        if progress is not None:
            progress.close()
        reason = (f"stopped by {e} (a launcher stops every rank when one fails: its report names that rank)"
                  if isinstance(e, Stopped) else "interrupted" if isinstance(e, KeyboardInterrupt)
                  else f"failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
        log = args.out / "logs" / f"rank{ranks.rank}.txt"
        log.parent.mkdir(exist_ok=True)
        log.write_text(traceback.format_exc())
        print(f"evaluate: {who} {reason}. Finished samples are kept in {args.out}; run the same command with "
              f"--resume to draw the rest (traceback: {log})", file=sys.stderr)
        sys.exit(143 if isinstance(e, Stopped) else 1)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)  # main() may run inside a longer process (the tests)


if __name__ == "__main__":
    main()
