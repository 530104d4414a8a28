"""Fixtures shared by the tests (the headless environment and timing hooks: ../conftest.py).

Where shared test code lives, and why:
- fixtures and pytest hooks (things a test receives as an argument) go here;
- plain helper functions (assert_diagnosed, assert_all_tested, hf_gpt2, ...) live in tests/helpers.py
  and a test imports them by name: `from helpers import assert_diagnosed`. An import says where
  the name comes from, so an editor can jump to it, and a helper keeps its ordinary signature
  inside parametrized tests; a fixture that returns a function would hide both. `from conftest
  import ...` is no alternative: the repository root has a conftest.py too, and which of the two
  a test would get depends on the order pytest loaded them.
`import helpers` works because pytest's default ("prepend") import mode puts tests/ on sys.path
(tests/ has no __init__.py). The line below makes pytest rewrite the asserts in helpers.py as it
does in test files, so a failing helper shows the values it compared."""
import pytest

pytest.register_assert_rewrite("helpers")


@pytest.fixture
def quiet_checks(monkeypatch):
    from course_lib.checks import core
    monkeypatch.setattr(core, "_QUIET", True)
