"""The README's API table, generated from the endpoint specs (so the docs cannot drift from the code).

    .venv/bin/python -m scripts.tools.api_table            # print it
    .venv/bin/python -m scripts.tools.api_table --write    # replace the block between the markers in README.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.profiles import Profile, load_profile
from tasks import all_tasks
from tasks.fields import Field

README = Path(__file__).resolve().parents[2] / "README.md"
START, END = "<!-- api-table:start -->", "<!-- api-table:end -->"
BUDGETS_START, BUDGETS_END = "<!-- budgets:start -->", "<!-- budgets:end -->"


def describe(field: Field) -> str:
    """One parameter as ``name`` and what it takes, with its default (profile-bound values)."""
    kind, default = field.kind, field.default
    if kind == "choice":
        shown = " \\| ".join(map(str, field.choices)) if len(field.choices) <= 8 else f"one of {len(field.choices)}"
        what = f"{shown} ({default})"
    elif kind in ("number", "integer"):
        what = f"{field.low:g}–{field.high:g} ({default:g})"
    elif kind == "seed":
        what = f"−1 (random) or 0–2⁶³−1 ({default})"
    elif kind == "size":
        what = f"multiple of 8, width × height ≤ {field.high * 8:,} ({default})"
    elif kind == "flag":
        what = f"bool ({default})"
    elif kind == "image":
        what = "upload" + (" (optional)" if field.optional else "")
    elif kind == "text" and field.choices:
        what = f"text, e.g. {default!r}"
    elif kind == "text":
        what = "text"
    else:
        what = f"text, e.g. {default!r}"
    return f"`{field.name}` {what}"


def api_table(profile: Profile) -> str:
    lines = ["| endpoint | what it does | parameters (range, default) | returns |", "|---|---|---|---|"]
    for task in all_tasks():
        endpoint = task.spec.bind(profile)
        params = "; ".join(describe(f) for f in endpoint.fields)
        returns = ", ".join(o.name for o in task.spec.outputs)
        lines.append(f"| `{task.spec.api_name}` | {task.spec.summary} | {params} | {returns} |")
    return "\n".join(lines)


def gpu_budgets(profile: Profile) -> str:
    """The ZeroGPU duration each endpoint asks for: its default request and its largest allowed one."""
    from tasks.spec import Params

    lines = ["| endpoint | default request | largest request |", "|---|---:|---:|"]
    for task in all_tasks():
        if task.spec.cost is None:
            continue
        endpoint = task.spec.bind(profile)
        default = {f.name: f.default for f in endpoint.fields}
        largest = dict(default)
        for f in endpoint.fields:
            if f.name in ("steps", "num_images", "latent_size") and f.high is not None:
                largest[f.name] = f.high
        if "width" in largest:  # the pixel cap as a square
            largest["width"] = largest["height"] = int(profile.limits.max_pixels**0.5) // 8 * 8
        if "scales" in largest:
            largest["scales"] = ", ".join(["1"] * 8)
        if task.spec.api_name == "/classifier_guidance":
            largest["steps"], largest["compare_clean"] = str(profile.limits.guided_steps), True
            if "256x256-uncond" in endpoint.field("model").choices:
                largest["model"] = "256x256-uncond"
        seconds = []
        for request in (default, largest):
            try:
                params = endpoint.parse({k: v for k, v in request.items() if endpoint.field(k).kind != "image"})
            except ValueError:  # an upload or a model file is needed to resolve it: estimate without the checks
                params = Params({f.name: f.parse(request[f.name]) if f.kind != "image" else None
                                 for f in endpoint.fields})
            seconds.append(endpoint.gpu_seconds(params))
        lines.append(f"| `{task.spec.api_name}` | {seconds[0]} s | {seconds[1]} s |")
    return "\n".join(lines)


def readme_block(profile_name: str = "full") -> str:
    table = api_table(load_profile(profile_name))
    return (f"{START}\n_Generated from the endpoint specs by `python -m scripts.tools.api_table --write` (profile "
            f"`{profile_name}`; the toy profile's defaults and caps differ)._\n\n{table}\n{END}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update README.md between the api-table markers")
    parser.add_argument("--budgets", action="store_true", help="print the ZeroGPU durations of the full profile")
    args = parser.parse_args()
    if args.budgets:
        print(gpu_budgets(load_profile("full")))
        return
    block = readme_block()
    if not args.write:
        print(block)
        return
    text = replace_block(README.read_text(), START, END, block)
    text = replace_block(text, BUDGETS_START, BUDGETS_END, budgets_block())
    README.write_text(text)
    print(f"updated {README.name}")


def budgets_block() -> str:
    """The budgets table as it sits in README's ZeroGPU list item (indented two spaces)."""
    table = "\n".join("  " + line for line in gpu_budgets(load_profile("full")).splitlines())
    return f"{BUDGETS_START}\n{table}\n  {BUDGETS_END}"


def replace_block(text: str, start: str, end: str, block: str) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"README.md has no {start} … {end} block")
    head, rest = text.split(start, 1)
    return head + block + rest.split(end, 1)[1]


if __name__ == "__main__":
    main()
