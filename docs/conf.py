"""Sphinx configuration of convnet's documentation site.

Build it from the repository's root, after ``pip install ".[docs]"``::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The API reference imports convnet from this checkout (the folder above ``docs/``), so it
documents the docstrings of the sources beside it, built or not.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import convnet  # noqa: E402

project = "convnet"
author = "the convnet developers"
copyright = "the convnet developers"
release = convnet.__version__
version = release

extensions = [
    "myst_parser",
    "numpydoc",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
templates_path = ["_templates"]

# The API reference: docs/api/index.rst lists every public module; autosummary writes one
# page per module (docs/api/generated/, not committed) from _templates/autosummary/.
autosummary_generate = True
autodoc_default_options = {"member-order": "bysource"}
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3

html_theme = "pydata_sphinx_theme"
html_title = f"convnet {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []


def _skip_named_tuple_fields(app, what, name, obj, skip, options):
    """Leave out the fields of the caches (NamedTuples): their docstring is only
    "Alias for field number N", and the class signature already lists them."""
    if what == "class" and (getattr(obj, "__doc__", None) or "").startswith("Alias for field"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_named_tuple_fields)
