"""The parameter tables of docs/, generated from ``pose_ros.ros.params`` (``make docs``).

A table sits between two comment lines in a Markdown page::

    <!-- BEGIN parameters: tracking.* smoothing.* -->
    ...
    <!-- END parameters -->

and holds, in declaration order, the parameters whose names match one of the patterns (``*``:
all of them): name, default, whether it may change at runtime, range or choices, and the
description ``ros2 param describe`` shows. ``python -m devtools.param_docs`` rewrites the tables;
``--check`` only says which page is out of date (exit code 1), as the tests do.
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
from pathlib import Path

from pose_ros.ros.params import PARAMETERS, ParamSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
DOCS = REPO_ROOT / "docs"
BLOCK = re.compile(
    r"(?P<begin><!-- BEGIN parameters: (?P<patterns>[^>]*?) -->\n)(?P<body>.*?)"
    r"(?P<end><!-- END parameters -->)",
    re.S,
)


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f"`'{value}'`" if value == "" else f"`{value}`"
    return f"`{value}`"


def _limits(spec: ParamSpec) -> str:
    if spec.choices:
        return ", ".join(f"`{choice}`" for choice in spec.choices)
    if spec.float_range is not None:
        return "{:g} … {:g}".format(*spec.float_range)
    if spec.int_range is not None:
        return "{} … {}".format(*spec.int_range)
    return ""


def matching(patterns: list[str]) -> list[ParamSpec]:
    return [s for s in PARAMETERS if any(fnmatch.fnmatchcase(s.name, p) for p in patterns)]


def table(patterns: list[str]) -> str:
    """The Markdown table of the parameters matching ``patterns``."""
    lines = [
        "| parameter | default | changes | range | description |",
        "|---|---|---|---|---|",
    ]
    for spec in matching(patterns):
        changes = "restart" if spec.read_only else "runtime"
        description = spec.description.replace("|", "\\|").replace("<", "&lt;")
        lines.append(
            f"| `{spec.name}` | {_value(spec.default)} | {changes} | {_limits(spec)} | "
            f"{description} |"
        )
    return "\n".join(lines) + "\n"


def render(text: str) -> str:
    """``text`` with every parameter block regenerated."""

    def replace(match: re.Match[str]) -> str:
        patterns = match.group("patterns").split()
        return match.group("begin") + table(patterns) + match.group("end")

    return BLOCK.sub(replace, text)


def documented_names(text: str) -> list[str]:
    """The parameter names listed in the first column of the page's generated tables."""
    names = []
    for match in BLOCK.finditer(text):
        names += re.findall(r"^\| `([^`]+)` \|", match.group("body"), re.M)
    return names


def pages() -> list[Path]:
    return sorted(p for p in DOCS.glob("*.md") if BLOCK.search(p.read_text()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report out-of-date pages")
    args = parser.parse_args(argv)
    stale = []
    for page in pages():
        text = page.read_text()
        fresh = render(text)
        if fresh != text:
            stale.append(page)
            if not args.check:
                page.write_text(fresh)
                print(f"updated {page.relative_to(REPO_ROOT)}")
    if args.check and stale:
        names = ", ".join(str(p.relative_to(REPO_ROOT)) for p in stale)
        print(f"out of date: {names} (run: make docs)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
