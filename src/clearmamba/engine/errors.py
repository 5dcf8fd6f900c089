"""The engine's expected failures: each names the file or flag and what was expected, and is a
:class:`clearmamba.errors.UserError` (shown by the CLI as one ``error:`` line, exit status 2). They also subclass
the built-in error they replace, so callers catching ``ValueError`` / ``FileNotFoundError`` keep working."""

from __future__ import annotations

from clearmamba.errors import UserError


class VocabularyError(UserError, ValueError):
    """``--vocab``: unreadable, or not a mapping ``label: [synonym, ...]``."""


class InputFolderError(UserError, NotADirectoryError):
    """The PDF folder given to ``engine run`` does not exist or is not a folder."""


class OutFolderError(UserError, ValueError):
    """``--out`` cannot hold an engine run (a file, unwritable, or another tool's folder)."""


class NoStateError(UserError, FileNotFoundError):
    """``--out`` has no engine state yet (``status`` / ``review`` before any ``run``)."""
