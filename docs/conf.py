"""Sphinx configuration: MyST markdown + notebooks (myst-nb), API pages from numpy docstrings."""

import shutil
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent

project = "scformer-scvi"
author = "scformer-scvi developers"
release = _version("scformer-scvi")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
autodoc_typehints = "description"
# Tutorials are executed by the test suite; the docs render them as written.
nb_execution_mode = "off"
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
myst_enable_extensions = ["colon_fence", "dollarmath"]
html_theme = "sphinx_book_theme"
html_title = "scformer-scvi"
exclude_patterns = ["_build", "**.ipynb_checkpoints", "conf.py"]
suppress_warnings = ["myst.header"]
# Types from scvi-tools / lightning docstrings that we do not cross-reference.
nitpicky = False

# The tutorials live in ../tutorials (runnable scripts); copy them into the source tree.
(HERE / "tutorials").mkdir(exist_ok=True)
for script in sorted((ROOT / "tutorials").glob("*.py")):
    shutil.copy(script, HERE / "tutorials" / script.name)
autodoc_inherit_docstrings = False
