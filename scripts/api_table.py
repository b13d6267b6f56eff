"""The README's API table, generated from the endpoint specs (so the docs cannot drift from the code).

    .venv/bin/python -m scripts.api_table            # print it
    .venv/bin/python -m scripts.api_table --write    # replace the block between the markers in README.md
"""

from __future__ import annotations

import argparse
from pathlib import Path

from models.profiles import Profile, load_profile
from tasks import all_tasks
from tasks.fields import Field

README = Path(__file__).resolve().parents[1] / "README.md"
START, END = "<!-- api-table:start -->", "<!-- api-table:end -->"


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


def readme_block(profile_name: str = "full") -> str:
    table = api_table(load_profile(profile_name))
    return (f"{START}\n_Generated from the endpoint specs by `python -m scripts.api_table --write` (profile "
            f"`{profile_name}`; the toy profile's defaults and caps differ)._\n\n{table}\n{END}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="update README.md between the api-table markers")
    args = parser.parse_args()
    block = readme_block()
    if not args.write:
        print(block)
        return
    text = README.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"README.md has no {START} … {END} block")
    head, rest = text.split(START, 1)
    README.write_text(head + block + rest.split(END, 1)[1])
    print(f"updated {README.name}")


if __name__ == "__main__":
    main()
