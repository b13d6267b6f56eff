"""scripts.eval.evaluate: the same grid gives the same files on one process and on two torchrun ranks, a killed run or a
dead rank resumes to the same files with nothing lost or duplicated, bad input is one clear line, and the two-object
metric scores world images right (and wrong ones wrong).

One small toy grid (2 methods × 2 scales × 2 pair prompts × 2 samples, 2 steps) is run once in this process as the
reference; every other run is compared with it file by file, and one comparison is shown to fail on a different
seed, so "identical" is a claim the comparison can refute.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from models.architectures.toy_judge import load_judge
from scripts.eval import evaluate
from scripts.shared import metrics as M

pytestmark = pytest.mark.distributed

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--profile", "toy", "--methods", "cfg,apg", "--scales", "1,3", "--prompts", "2", "--samples-per-prompt", "2",
        "--steps", "2", "--reference", "2"]
SAMPLES = 16
COMPARED = ("samples.jsonl", "summary.csv", "adherence_diversity.png")


def run_cli(out: Path, *extra: str, ranks: int = 1, fault: str = "") -> subprocess.CompletedProcess:
    """The CLI in a fresh process: ``python -m scripts.eval.evaluate``, or under torchrun (CPU, gloo) for
    ``ranks`` > 1."""
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}"]
    command = [*(launcher if ranks > 1 else [sys.executable]), "-m", "scripts.eval.evaluate", *GRID, "--out", str(out),
               *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False", "OMP_NUM_THREADS": "1",
           "CONDLAB_EVAL_FAULT": fault}
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def run_here(out: Path, *extra: str) -> None:
    """The CLI in this process (models stay loaded between runs, which keeps the file fast)."""
    evaluate.main([*GRID, "--out", str(out), *extra])


def differences(a: Path, b: Path) -> list[str]:
    """The compared files (and sample images) that are not byte-identical between two output folders."""
    names = [*COMPARED, *sorted(str(p.relative_to(a)) for p in a.glob("images/**/*.png"))]
    return [n for n in names if not (b / n).exists() or (a / n).read_bytes() != (b / n).read_bytes()]


def sample_keys(out: Path) -> list[tuple]:
    return [evaluate.row_key(json.loads(line)) for line in (out / "samples.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "out"
    run_here(out)
    return out


def test_reference_run_is_complete(reference):
    keys = sample_keys(reference)
    assert len(keys) == SAMPLES and len(set(keys)) == SAMPLES
    assert keys == sorted(keys)
    rows = [json.loads(line) for line in (reference / "samples.jsonl").read_text().splitlines()]
    assert {"position", "all", "clip_score", "clipped", "background", "seed", "image"} <= set(rows[0])
    # Common noise: a (prompt, sample) has one seed whatever the method and scale.
    assert len({(r["prompt_index"], r["sample"], r["seed"]) for r in rows}) == 4
    summary = (reference / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("method,scale,samples,prompts,colour,colour_lo,colour_hi")
    assert summary[1].startswith("world data,,4,2,1,") and len(summary) == 1 + 1 + 4
    run = json.loads((reference / "run.json").read_text())
    assert run["status"] == "complete" and run["ranks"] == 1 and run["samples"]["drawn_now"] == SAMPLES
    assert str(reference.parent) not in json.dumps(run) and "/tmp" not in json.dumps(run)  # no absolute paths


def test_a_different_seed_gives_different_files(reference, tmp_path):
    """The comparison the other tests rely on can fail: seed 1 instead of 0 changes rows, summary and images."""
    run_here(tmp_path / "out", "--seed", "1")
    changed = differences(reference, tmp_path / "out")
    assert {"samples.jsonl", "summary.csv"} <= set(changed) and len(changed) > len(COMPARED)


def test_two_torchrun_ranks_give_the_same_files(reference, tmp_path):
    proc = run_cli(tmp_path / "out", ranks=2)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert differences(reference, tmp_path / "out") == []
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["ranks"] == 2 and [r["samples"] for r in run["per_rank"]] == [SAMPLES // 2] * 2
    assert "rank 0/2" in proc.stderr and "rank 1/2" in proc.stderr  # a progress bar per rank


def test_killed_run_resumes_to_the_same_files(reference, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(out, fault="kill:0:5")  # SIGKILL after the fifth sample: no chance to clean up
    assert proc.returncode == -9, proc.stderr[-3000:]
    shard = out / "shards" / "rank0.jsonl"
    assert len(shard.read_text().splitlines()) == 5
    with shard.open("a") as f:
        f.write('{"method": "apg", "sca')  # a row cut short mid-write
    run_here(out, "--resume")
    assert differences(reference, out) == []
    assert sample_keys(out) == sample_keys(reference)  # nothing duplicated, nothing lost
    assert json.loads((out / "run.json").read_text())["samples"] == {"grid": SAMPLES, "drawn_now": 11, "kept": 5}
    assert not list(out.glob("shards/*.jsonl"))


def test_dead_rank_is_named_and_resume_recovers(reference, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(out, ranks=2, fault="kill:1:2")  # rank 1 dies (SIGKILL) after two samples
    assert proc.returncode != 0
    assert re.search(r"rank\s*:\s*1 \(local_rank: 1\)", proc.stderr), proc.stderr[-3000:]  # the launcher's report
    assert re.search(r"evaluate: rank 0 of 2 (stopped by SIGTERM|failed: RuntimeError: lost another rank)",
                     proc.stderr), proc.stderr[-3000:]
    assert "--resume" in proc.stderr
    run_here(out, "--resume")
    assert differences(reference, out) == []
    assert sample_keys(out) == sample_keys(reference)


def test_failing_rank_says_which_and_resume_recovers(reference, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setenv("CONDLAB_EVAL_FAULT", "raise:0:3")
    with pytest.raises(SystemExit) as stop:
        run_here(out)
    assert stop.value.code == 1
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith("evaluate: rank 0 of 1 failed: RuntimeError: injected fault after 3 samples.")
    assert "--resume" in message and (out / "logs" / "rank0.txt").exists()
    monkeypatch.delenv("CONDLAB_EVAL_FAULT")
    run_here(out, "--resume")
    assert differences(reference, out) == []


@pytest.mark.parametrize(("args", "argument", "words"), [
    (["--methods", "cfg,magic"], "--methods", "unknown method(s) magic"),
    (["--methods", ""], "--methods", "no empty item"),
    (["--scales", "1,x"], "--scales", "comma list of numbers"),
    (["--scales", ""], "--scales", "no empty item"),
    (["--scales", "1,,3"], "--scales", "no empty item"),
    (["--scales", "1,nan"], "--scales", "finite"),
    (["--scales", "3,3"], "--scales", "twice"),
    (["--scales", "-1"], "--scales", "cfg at scale -1: scale must be between 0 and 30"),
    (["--methods", "cfg++", "--scales", "3"], "--methods/--scales", "cfg++ at scale 3: cfg++ takes scale in [0, 1]"),
    (["--profile", "nosuch"], "--profile", "unknown profile 'nosuch'"),
    (["--prompts", "0"], "--prompts", "1 to 240"),
    (["--profile", "full", "--prompt-set", "pairs"], "--prompt-set", "toy world's captions"),
    (["--samples-per-prompt", "0"], "--samples-per-prompt", "at least 1"),
    (["--steps", "1000"], "--steps", "steps"),
    (["--set", "seed=3"], "--set", "NAME=VALUE"),
    (["--set", "scheduler=bogus"], "--set", "scheduler must be one of"),
    (["--set", "bogus=1"], "--set", "takes no parameter(s) ['bogus']"),
])
def test_bad_arguments_are_one_line_naming_the_argument(args, argument, words, tmp_path, capsys):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as stop:
        evaluate.main(["--out", str(out), *args])
    err = capsys.readouterr().err
    assert stop.value.code == 2
    assert err.count("\n") == 1 and f"argument {argument}" in err and words in err, err
    assert not out.exists()  # refused before anything was written


def test_bad_out_folders(tmp_path, reference, capsys):
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    cases = [(a_file, [], "is a file, not a folder"), (a_file / "sub", [], "cannot write to"),
             (reference, [], "already holds samples; pass --resume"),
             (reference, ["--resume", "--steps", "3"], "argument --resume: ")]
    for out, extra, words in cases:
        with pytest.raises(SystemExit) as stop:
            evaluate.main([*GRID, "--out", str(out), *extra])
        err = capsys.readouterr().err
        assert stop.value.code == 2 and err.count("\n") == 1 and words in err, err
    assert "steps=2" in err and "steps=3" in err


def test_pair_metric_scores_world_images_right_and_swapped_ones_wrong():
    """On world images of the prompts it asks for, the two-object metric is 1; mirrored left↔right it must see
    every position wrong and still the colours and shapes right (so the three parts are measured separately)."""
    judge = load_judge(M.ASSETS / "judge")
    prompts = [p for p in M.pair_prompts(60) if p.objects[0].position in ("left", "right")][:12]
    right, mirrored = [], []
    for i, prompt in enumerate(prompts):
        for image in M.world_images(prompt, 4, seed=i):
            right.append(M.judge_scores(judge, image, prompt))
            mirrored.append(M.judge_scores(judge, np.ascontiguousarray(image[:, ::-1]), prompt))
    assert all(s["all"] == 1 and s["objects"] == 2 for s in right)
    assert np.mean([s["position"] for s in mirrored]) == 0 and np.mean([s["all"] for s in mirrored]) == 0
    assert np.mean([s["colour"] for s in mirrored]) == 1 and np.mean([s["shape"] for s in mirrored]) > 0.9


def test_prompt_sets_and_intervals():
    single = M.single_prompts()
    assert len({p.text for p in single}) == 24 and [p.text for p in single[:4]] == [
        "a red circle", "a green square", "a blue triangle", "a yellow cross"]
    pairs = M.pair_prompts(M.PAIR_PROMPTS_MAX)
    assert len({p.text for p in pairs}) == M.PAIR_PROMPTS_MAX and pairs[:5] == M.pair_prompts(5)
    assert all(M.PARTNER[a.position] == b.position for a, b in (p.objects for p in pairs))
    lo, hi = M.wilson_interval(1.0, 16)
    assert 0.79 < lo < 0.81 and hi == 1.0  # never the point [1, 1] a normal interval gives
    mean, lo, hi = M.mean_interval([1.0, 2.0, 3.0])
    assert mean == 2.0 and abs(hi - 2 - 2.4841) < 1e-3  # t(0.975, 2) = 4.303 × 1/√3
    assert M.embedding_diversity([np.array([1.0, 0.0]), np.array([0.0, 1.0])]) == pytest.approx(1.0)


def test_free_text_profile_with_clip_metrics(tiny_sd_folder, tmp_path):
    """The full profile's path (free-text prompts, a latent model, CLIP score and CLIP diversity) on tiny models."""
    from testing.tiny import build_tiny_image_models

    clip = build_tiny_image_models(tmp_path / "image")["clip"]
    profile = tmp_path / "replica.toml"
    profile.write_text(f'sd = "{tiny_sd_folder}"\nclip = "{clip}"\n[limits]\nmax_pixels = 4096\nmax_steps = 10\n')
    out = tmp_path / "out"
    evaluate.main(["--profile", str(profile), "--methods", "cfg", "--scales", "1,3", "--prompts", "2",
                   "--samples-per-prompt", "2", "--steps", "2", "--out", str(out)])
    header, *rows = (out / "summary.csv").read_text().splitlines()
    assert "clip_score" in header and "clip_diversity" in header and "both" not in header and len(rows) == 2
    assert json.loads((out / "run.json").read_text())["sampling"]["prompt_set"] == "photos"
    assert (out / "adherence_diversity.png").stat().st_size > 10_000
