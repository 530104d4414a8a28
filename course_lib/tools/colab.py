"""The two cells every notebook starts with: an "Open in Colab" badge and a setup cell
that installs the course when it runs in Colab. Generated here, nowhere else, so that
one change updates every notebook (a test keeps them current)."""
from __future__ import annotations

from course_lib import REPO_URL

COLAB_TAG = "colab-setup"


def badge_markdown(relpath: str) -> str:
    """relpath: the notebook's path in the repository, e.g. 'notebooks/01_attention.ipynb'."""
    slug = REPO_URL.removeprefix("https://github.com/")
    url = f"https://colab.research.google.com/github/{slug}/blob/main/{relpath}"
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def setup_code() -> str:
    return f'''# Setup: in Colab this installs the course (about a minute); elsewhere it only checks it is installed.
import importlib.util, subprocess, sys
if "google.colab" in sys.modules and importlib.util.find_spec("course_lib") is None:
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "git+{REPO_URL}.git"], check=True)
    from google.colab import output
    output.enable_custom_widget_manager()  # ipywidgets 8 in Colab
if importlib.util.find_spec("course_lib") is None:
    raise ModuleNotFoundError("course_lib is not installed. In a terminal at the repository root run: "
                              "python -m pip install -e .  (see README.md)")'''
