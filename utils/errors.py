"""The project's own errors: problems a user fixes from the message alone.

Every entry point reports a ``CLIPVGError`` as one line, ``error: <message>``, naming the file, sample or flag at
fault, and exits with its ``exit_code``; anything else (a bug, CUDA running out of memory, a failed NCCL call) keeps
its full traceback.

| exit status | meaning |
|---|---|
| 0 | success |
| 1 | bad input (``InputError``) or a run that failed for a stated reason (``RunFailed``) |
| 2 | a bad command line (``UsageError``, and argparse's own errors) |
| 130 / 143 | stopped by SIGINT (Ctrl-C) / SIGTERM |
"""
from __future__ import annotations


class CLIPVGError(Exception):
    """Base class of the project's one-line errors."""

    exit_code = 1


class InputError(CLIPVGError, ValueError):
    """A file, sample, checkpoint, weight source or setting that cannot be used; the message names it."""


class UsageError(InputError):
    """A bad command line: a flag's value, or flags that do not go together (exit status 2, like argparse)."""

    exit_code = 2


class RunFailed(CLIPVGError, RuntimeError):
    """A run that started and stopped for a reason the message states (a non-finite loss, a failed rank, a full
    disk while writing a checkpoint)."""
