"""Fixtures shared by the tests (the headless environment and timing hooks: ../conftest.py)."""
import pytest


@pytest.fixture
def quiet_checks(monkeypatch):
    from course_lib.checks import core
    monkeypatch.setattr(core, "_QUIET", True)
