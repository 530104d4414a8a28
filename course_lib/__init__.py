"""Transformers from Scratch: reference implementations and teaching tools."""
from course_lib.device import describe_device, get_device, seed_everything  # noqa: F401

__version__ = "0.1.0"
REPO_URL = "https://github.com/transformers-from-scratch/course"  # the one place that names it
