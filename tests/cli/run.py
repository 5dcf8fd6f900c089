"""Run the ``clearmamba`` command in-process through its real entry point (with the error surface)."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


def clearmamba(*args: str) -> Outcome:
    from clearmamba.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    return Outcome(code, out.getvalue(), err.getvalue())


def assert_clean_error(outcome: Outcome, *expected: str, code: int = 2) -> None:
    """Exit ``code``, one short ``error:`` message and no traceback, naming everything in ``expected``."""
    assert outcome.code == code, outcome.output
    assert "Traceback" not in outcome.output and 'File "' not in outcome.output, outcome.output
    assert outcome.stderr.startswith("error: ") or "Error" in outcome.stderr, outcome.output
    assert len(outcome.stderr.strip().splitlines()) <= 4, outcome.stderr
    for text in expected:
        assert text in outcome.stderr, (text, outcome.stderr)
