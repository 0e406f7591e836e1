"""The documentation site's sources: the API reference names every public module.

The API reference (docs/api/index.rst) lists modules in ``autosummary`` directives, and a
page may document one with ``automodule``; a public module is one whose dotted name has no
part starting with an underscore. These tests read the sources as text, so they need no
Sphinx; the docs build itself (``sphinx-build -W``) runs in CI.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# An RST directive (".. autosummary::") or a MyST fence ("```{autosummary}"), its options
# (":toctree: generated") and its content lines.
_RST_DIRECTIVE = re.compile(r"^(\s*)\.\. (automodule|autosummary)::[ \t]*(\S*)[ \t]*$")
_MYST_FENCE = re.compile(r"^(`{3,}|:{3,})\{(automodule|autosummary)\}[ \t]*(\S*)[ \t]*$")


def public_modules(package: Path) -> set[str]:
    """The dotted names of every public module and package under ``package``."""
    names = set()
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not any(part.startswith("_") for part in parts):
            names.add(".".join(parts))
    return names


def _rst_entries(lines: list[str], start: int, indent: str) -> list[str]:
    """The content lines of the RST directive opened on line ``start - 1``."""
    entries = []
    for line in lines[start:]:
        if line.strip() and not line.startswith(indent + " ") and not line.startswith("\t"):
            break
        entry = line.strip()
        if entry and not entry.startswith(":") and not entry.startswith(".."):
            entries.append(entry)
    return entries


def _myst_entries(lines: list[str], start: int, fence: str) -> list[str]:
    """The content lines of the MyST fence opened on line ``start - 1``."""
    entries = []
    for line in lines[start:]:
        if line.strip() == fence:
            break
        entry = line.strip()
        if entry and not entry.startswith(":"):
            entries.append(entry)
    return entries


def documented_modules(source: str) -> set[str]:
    """The modules one docs source names in ``automodule`` and ``autosummary`` directives."""
    lines = source.splitlines()
    names = set()
    for number, line in enumerate(lines):
        if match := _RST_DIRECTIVE.match(line):
            indent, directive, argument = match.groups()
            entries = _rst_entries(lines, number + 1, indent)
        elif match := _MYST_FENCE.match(line):
            fence, directive, argument = match.groups()
            entries = _myst_entries(lines, number + 1, fence)
        else:
            continue
        names.update([argument] if directive == "automodule" else entries)
    return names


def docs_sources(docs: Path) -> list[Path]:
    """The hand-written sources of the site: not the build, not autosummary's output."""
    return [
        path
        for path in sorted(docs.rglob("*"))
        if path.suffix in (".rst", ".md")
        and not {"_build", "generated", "_templates"} & set(path.relative_to(docs).parts)
    ]


def api_reference_modules(docs: Path) -> set[str]:
    """Every module the site's sources document."""
    names = set()
    for path in docs_sources(docs):
        names |= documented_modules(path.read_text(encoding="utf-8"))
    return names


@pytest.fixture
def checkout() -> Path:
    if not (DOCS / "conf.py").is_file():
        pytest.skip("needs a source checkout with docs/")
    return ROOT


def test_the_api_reference_names_every_public_module(checkout: Path) -> None:
    missing = public_modules(checkout / "convnet") - api_reference_modules(checkout / "docs")
    assert not missing, (
        f"public modules missing from the API reference: {', '.join(sorted(missing))}; "
        "add them to an autosummary list in docs/api/index.rst"
    )


def test_the_api_reference_names_no_module_that_does_not_exist(checkout: Path) -> None:
    documented = api_reference_modules(checkout / "docs")
    stale = {name for name in documented if name.split(".")[0] == "convnet"}
    stale -= public_modules(checkout / "convnet")
    assert not stale, f"the API reference names modules that are gone or private: {stale}"


def test_public_modules_include_subpackages_and_leave_out_private_ones(checkout: Path) -> None:
    names = public_modules(checkout / "convnet")
    assert {"convnet", "convnet.cli", "convnet.bench", "convnet.bench.cases"} <= names
    assert not any("._" in name or name.startswith("_") for name in names)


def test_a_module_left_out_of_the_reference_is_found(tmp_path: Path) -> None:
    """The scan itself: a module not listed is reported, whichever syntax lists the rest."""
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "_private").mkdir()
    for name in ("__init__", "alpha", "beta", "_hidden", "__main__"):
        (package / f"{name}.py").write_text("")
    for name in ("sub/__init__", "sub/gamma", "_private/__init__", "_private/delta"):
        (package / f"{name}.py").write_text("")
    docs = tmp_path / "docs"
    (docs / "api" / "generated").mkdir(parents=True)
    (docs / "api" / "index.rst").write_text(
        "API\n===\n\n.. autosummary::\n   :toctree: generated\n\n   pkg\n   pkg.alpha\n\n"
        "Text after the list: pkg.beta\n\n.. automodule:: pkg.sub\n   :members:\n"
    )
    (docs / "api" / "generated" / "pkg.sub.gamma.rst").write_text(".. automodule:: pkg.sub.gamma")
    assert public_modules(package) == {"pkg", "pkg.alpha", "pkg.beta", "pkg.sub", "pkg.sub.gamma"}
    assert api_reference_modules(docs) == {"pkg", "pkg.alpha", "pkg.sub"}
    (docs / "guide.md").write_text(
        "# Guide\n\n```{autosummary}\n:toctree: generated\n\npkg.beta\n```\n\npkg.sub.gamma\n"
    )
    assert api_reference_modules(docs) == {"pkg", "pkg.alpha", "pkg.beta", "pkg.sub"}
