"""The README and docs/: the parameter tables match the node's declarations, the two commands are
the ones CI and the Makefile run, links and pictures resolve, and the pages describe the software
(not how it was made)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from devtools import param_docs
from pose_ros.ros.params import DEFAULTS, PARAMETERS, ParamSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
README = REPO_ROOT / "README.md"
DOCS = REPO_ROOT / "docs"
PAGES = [README, *sorted(DOCS.glob("*.md"))]


def test_node_page_documents_exactly_the_declared_parameters() -> None:
    documented = param_docs.documented_names((DOCS / "node.md").read_text())
    assert len(documented) == len(set(documented)), "a parameter is listed twice"
    assert set(documented) == set(DEFAULTS), (
        f"missing: {sorted(set(DEFAULTS) - set(documented))}, "
        f"unknown: {sorted(set(documented) - set(DEFAULTS))} (run: make docs)"
    )


@pytest.mark.parametrize("page", param_docs.pages(), ids=lambda p: p.name)
def test_parameter_tables_are_up_to_date(page: Path) -> None:
    text = page.read_text()
    assert text == param_docs.render(text), f"{page.name} is stale: run make docs"


def test_a_changed_declaration_makes_the_table_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """The check above can fail: a new parameter, or a new default, changes the rendered page."""
    text = (DOCS / "node.md").read_text()
    extra = ParamSpec("tracking.new_setting", 1.5, "A parameter the page does not list yet.")
    monkeypatch.setattr(param_docs, "PARAMETERS", (*PARAMETERS, extra))
    assert param_docs.render(text) != text
    assert "tracking.new_setting" in param_docs.documented_names(param_docs.render(text))
    changed = tuple(
        ParamSpec(s.name, 0.25, s.description, float_range=s.float_range)
        if s.name == "detector.score_threshold"
        else s
        for s in PARAMETERS
    )
    monkeypatch.setattr(param_docs, "PARAMETERS", changed)
    assert param_docs.render(text) != text


def test_the_readme_commands_are_the_ones_ci_and_the_makefile_run() -> None:
    readme = README.read_text()
    block = re.search(r"## The two commands\n.*?```bash\n(.*?)```", readme, re.S)
    assert block, "README: no code block under 'The two commands'"
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert commands == ["make demo", "make test"]
    ci = [
        line.strip()
        for line in (REPO_ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ci[-1] == "make test", ".ci/run must call exactly the README's test command"
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^demo: .*\n\t.*-m devtools\.demo .*\$\(DEMO_ARGS\)", makefile, re.M)
    assert re.search(r"^test: .*\n\t.*-m pytest test ", makefile, re.M)


def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
        anchors.add(slug.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_relative_links_and_anchors_resolve(page: Path) -> None:
    for link in _links(page.read_text()):
        if re.match(r"^[a-z]+://", link):
            continue
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.exists(), f"{page.name}: link to {link}: no such file"
        if anchor and path.suffix == ".md":
            assert anchor in _anchors(path.read_text()), f"{page.name}: no heading for {link}"


def test_readme_pictures_exist_and_are_small() -> None:
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", README.read_text())
    assert {Path(p).name for p in pictures} >= {"annotated_frame.png", "markers_3d.png"}
    for picture in pictures:
        path = REPO_ROOT / picture
        assert path.is_file(), picture
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", picture
        assert path.stat().st_size < 300 * 1024, f"{picture}: keep pictures under 300 KB"


FORBIDDEN = re.compile(
    r"\bsessions?\b|\bagents?\b|\bissues?\b|target was|the aim\b|\baims?\b"
    r"|repository's (?:development )?machines?|#\d+\b",
    re.I,
)


@pytest.mark.parametrize(
    "path",
    [*PAGES, REPO_ROOT / "Makefile", REPO_ROOT / "bench" / "gpu_check.sh"],
    ids=lambda p: p.name,
)
def test_pages_describe_the_software_not_its_making(path: Path) -> None:
    text = re.sub(r"\]\([^)]*\)", "]", path.read_text())  # link targets may hold anything
    found = [m.group(0) for m in FORBIDDEN.finditer(text)]
    assert not found, f"{path.name}: {found}"


def test_the_readme_stays_short() -> None:
    assert len(README.read_text().splitlines()) <= 150
