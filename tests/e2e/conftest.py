"""Fixtures of the whole-loop tests."""

from tests.e2e.loop_stack import loop_stack  # noqa: F401
