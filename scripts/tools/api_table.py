"""Generate docs/api.md's endpoint reference and docs/deploy.md's ZeroGPU budgets from the endpoint specs.

The docs cannot drift from the code: ``tests/test_readme_examples.py`` compares both blocks with what this prints.

    .venv/bin/python -m scripts.tools.api_table            # print the reference
    .venv/bin/python -m scripts.tools.api_table --write    # replace the blocks between the markers in docs/
    .venv/bin/python -m scripts.tools.api_table --budgets  # print the ZeroGPU durations of the full profile
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.profiles import Profile, load_profile
from tasks import all_tasks
from tasks.fields import Field
from tasks.spec import Output

DOCS = Path(__file__).resolve().parents[2] / "docs"
API_DOC = DOCS / "api.md"
DEPLOY_DOC = DOCS / "deploy.md"
START, END = "<!-- api-table:start -->", "<!-- api-table:end -->"
BUDGETS_START, BUDGETS_END = "<!-- budgets:start -->", "<!-- budgets:end -->"
OUTPUT_KINDS = {"gallery": "gallery", "image": "image", "json": "JSON", "number": "number", "code": "code",
                "markdown": "markdown", "lineplot": "plot data (a table)", "slider": "image pair"}


def cell(text: object) -> str:
    """Text made safe for a markdown table cell."""
    return " ".join(str(text).split()).replace("|", "\\|")


def describe(field: Field) -> str:
    """One parameter as ``name`` and what it takes, with its default (profile-bound values)."""
    kind, default = field.kind, field.default
    if kind == "choice":
        shown = " | ".join(map(str, field.choices))
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
    """The overview: one row per endpoint (what it does, what it returns)."""
    lines = ["| endpoint | what it does | returns |", "|---|---|---|"]
    for task in all_tasks():
        returns = ", ".join(f"`{o.name}`" for o in task.spec.outputs)
        lines.append(f"| [`{task.spec.api_name}`](#{task.spec.api_name.strip('/')}) | {cell(task.spec.summary)} | "
                     f"{returns} |")
    return "\n".join(lines)


def describe_output(output: Output) -> str:
    return f"`{output.name}` ({OUTPUT_KINDS.get(output.kind, output.kind)}: {cell(output.label)})"


def parameter_tables(profile: Profile) -> str:
    """Per endpoint: its parameters in API order with what each takes, its default and its one-sentence help."""
    sections = []
    for task in all_tasks():
        endpoint = task.spec.bind(profile)
        rows = ["| parameter | takes (default) | what it does |", "|---|---|---|"]
        for f in endpoint.fields:
            name, takes = describe(f).split(" ", 1)
            rows.append(f"| {name} | {cell(takes)} | {cell(f.info or f.label)} |")
        returns = "; ".join(describe_output(o) for o in task.spec.outputs)
        sections.append(f"### `{task.spec.api_name}`\n\n{cell(task.spec.summary)}.\n\nReturns, in order: {returns}."
                        f"\n\n" + "\n".join(rows))
    return "\n\n".join(sections)


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


def api_block(profile_name: str = "full") -> str:
    """docs/api.md's generated reference, between its markers."""
    profile = load_profile(profile_name)
    return (f"{START}\n_Generated from the endpoint specs by `python -m scripts.tools.api_table --write` (profile "
            f"`{profile_name}`; the toy profile's defaults and caps differ)._\n\n{api_table(profile)}\n\n"
            f"{parameter_tables(profile)}\n{END}")


def budgets_block() -> str:
    """docs/deploy.md's table of ZeroGPU durations, between its markers."""
    return f"{BUDGETS_START}\n{gpu_budgets(load_profile('full'))}\n{BUDGETS_END}"


def replace_block(text: str, start: str, end: str, block: str, where: str = "the file") -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{where} has no {start} … {end} block")
    head, rest = text.split(start, 1)
    return head + block + rest.split(end, 1)[1]


def write_blocks() -> list[Path]:
    """Replace the generated blocks in docs/api.md and docs/deploy.md; the files that changed."""
    changed = []
    for path, start, end, block in ((API_DOC, START, END, api_block()),
                                    (DEPLOY_DOC, BUDGETS_START, BUDGETS_END, budgets_block())):
        text = path.read_text()
        new = replace_block(text, start, end, block, where=path.name)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update docs/api.md and docs/deploy.md between markers")
    parser.add_argument("--budgets", action="store_true", help="print the ZeroGPU durations of the full profile")
    args = parser.parse_args()
    if args.budgets:
        print(gpu_budgets(load_profile("full")))
        return
    if not args.write:
        print(api_block())
        return
    changed = write_blocks()
    print("updated " + (", ".join(f"docs/{p.name}" for p in changed) if changed else "nothing (already current)"))


if __name__ == "__main__":
    main()
