"""scBank: an on-disk, append-only, AnnData-compatible lazy store for single cells.

The public API is :class:`DataBank`; see ``FORMAT.md`` for the on-disk format.
"""

from ._bank import DataBank
from ._errors import BankLockedError, CorruptBankError, InvalidInputError, ScBankError
from ._manifest import FORMAT_VERSION, Layout
from ._verify import VerifyReport
from ._view import BankView, LazyMatrix, LazyTable

__version__ = "0.1.0"

__all__ = [
    "FORMAT_VERSION",
    "BankLockedError",
    "BankView",
    "CorruptBankError",
    "DataBank",
    "InvalidInputError",
    "Layout",
    "LazyMatrix",
    "LazyTable",
    "ScBankError",
    "VerifyReport",
]
