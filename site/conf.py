"""Sphinx configuration of the course website (Jupyter Book 1's stack: Sphinx + myst-nb + sphinx-book-theme).

`make site` (site/build_site.py) stages the committed executed notebooks and the landing page into
build/site-src/ and runs Sphinx with this file: notebooks are rendered as committed, never executed, and every
asset a page loads (theme, search, MathJax from the npm registry) is written into build/site/.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_site  # noqa: E402  (site/build_site.py: the repository address, shared with the staging)

project = "Multimodality II: runnable notebooks"
html_title = "Multimodality II"
author = "the Multimodality II course"
html_show_copyright = False

extensions = ["myst_nb"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_extra"]

# notebooks as committed: never executed, outputs rendered as saved
nb_execution_mode = "off"
nb_merge_streams = True
# text/markdown outputs (the "what we measured" tables) through MyST, as Markdown cells are: tables and math
nb_render_markdown_format = "myst"
# widgets: the committed figure is shown and one line says that the sliders run in Jupyter or Colab (build_site);
# no widget JavaScript, whose default comes from a CDN
nb_ipywidgets_js = {}
myst_enable_extensions = ["dollarmath", "amsmath", "html_image"]
myst_heading_anchors = 3

# MathJax 3, vendored from the npm registry into _static/mathjax (build_site.fetch_mathjax), never a CDN
mathjax_path = "mathjax/tex-chtml-full.js"
mathjax3_config = {"options": {}}  # MathJax finds its fonts next to its own script (output/chtml/fonts)

html_theme = "sphinx_book_theme"
# Sphinx resolves these against this folder: the staged copies (site/_static plus MathJax, the originals)
html_static_path = [str(build_site.STAGE / "_static")]
html_css_files = ["course.css"]
html_extra_path = [str(build_site.STAGE / "_extra")]  # the committed .ipynb files, byte for byte, for the "download .ipynb" links
html_copy_source = False
html_show_sourcelink = False
# a fresh browser has no stored light/dark choice: start from "auto" (else the theme logs a console error)
html_context = {"default_mode": "auto"}
html_theme_options = {
    "repository_url": build_site.repo_url(),
    "repository_branch": "main",
    "path_to_docs": "",  # build/site-src/notebooks/NN.ipynb is notebooks/NN.ipynb in the repository
    "use_repository_button": True,
    "use_download_button": False,  # the page's own "download .ipynb" link gives the committed file
    "launch_buttons": {"colab_url": "https://colab.research.google.com"},
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "show_toc_level": 2,
}
