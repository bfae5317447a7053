"""Exceptions raised by scBank."""

from __future__ import annotations


class ScBankError(Exception):
    """Base class of every error scBank raises on purpose."""


class InvalidInputError(ScBankError, ValueError):
    """Input that scBank refuses to store; the bank is left unchanged."""


class BankLockedError(ScBankError):
    """Another process holds the bank's writer lock."""


class CorruptBankError(ScBankError):
    """A bank file is missing, truncated or does not match its manifest entry.

    Parameters
    ----------
    message
        What went wrong, naming the file(s).
    paths
        The bad files, relative to the bank root.
    """

    def __init__(self, message: str, paths: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.paths = paths
