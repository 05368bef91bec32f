"""What the security tests report at the end of the run (see ``pytest_terminal_summary`` in the conftest)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutcomeRow:
    """One input class as the worker handled it."""

    input_class: str
    outcome: str  # "verdict", "dead letter", or "MISSING"
    reason: str
    expected: str
    original: str  # what the dead-letter record kept of the original bytes
    ok: bool


ROWS: list[OutcomeRow] = []
SUMMARY: list[str] = []
