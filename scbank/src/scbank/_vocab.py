"""The union gene vocabulary: id -> name, append-only (ids are never reused)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._errors import CorruptBankError
from ._manifest import FileEntry, FileTracker, md5_bytes, write_durable


class GeneVocab:
    """An append-only list of gene names; a gene's id is its position.

    Parameters
    ----------
    names
        Gene names in id order (unique).
    """

    def __init__(self, names: Sequence[str] = ()) -> None:
        self._names: list[str] = list(names)
        self._ids = {n: i for i, n in enumerate(self._names)}

    def __len__(self) -> int:
        return len(self._names)

    @property
    def names(self) -> np.ndarray:
        """Gene names in id order (object array)."""
        return np.asarray(self._names, dtype=object)

    def extended(self, names: Sequence[str]) -> tuple[GeneVocab, np.ndarray]:
        """Return a vocabulary that also holds ``names``, and the ids of ``names`` in it.

        Existing genes keep their ids; new genes get the next free ids, in input order.
        """
        new = [n for n in dict.fromkeys(names) if n not in self._ids]
        vocab = GeneVocab(self._names + new) if new else self
        return vocab, vocab.ids(names)

    def ids(self, names: Sequence[str]) -> np.ndarray:
        """Ids of ``names`` (KeyError naming unknown genes)."""
        missing = [n for n in names if n not in self._ids]
        if missing:
            raise KeyError(
                f"{len(missing)} gene(s) not in the bank vocabulary, e.g. {missing[:5]}; "
                "intersect your list with bank.var_names first"
            )
        return np.fromiter((self._ids[n] for n in names), dtype=np.int64, count=len(names))

    def to_json(self) -> bytes:
        """Serialise as a JSON object ``{"<id>": "<name>"}``."""
        return json.dumps({str(i): n for i, n in enumerate(self._names)}, indent=0).encode()

    @classmethod
    def from_json(cls, data: bytes, path: str) -> GeneVocab:
        """Parse :meth:`to_json` output, checking that ids are 0..n-1."""
        try:
            d = json.loads(data)
            names = [d[str(i)] for i in range(len(d))]
        except (ValueError, KeyError) as e:
            raise CorruptBankError(f"{path}: not a valid gene vocabulary ({e})", (path,)) from e
        return cls(names)


def write_vocab(root: Path, vocab: GeneVocab, token: str, tracker: FileTracker) -> FileEntry:
    """Write a vocabulary version as ``vocab/gene.vocab-<token>.json`` and return its entry."""
    rel = f"vocab/gene.vocab-{token}.json"
    data = vocab.to_json()
    write_durable(tracker.add(root / rel), data)
    return FileEntry(path=rel, md5=md5_bytes(data), bytes=len(data), n_rows=len(vocab))


def read_vocab(root: Path, entry: FileEntry) -> GeneVocab:
    """Read a vocabulary version, checking its MD5 (it is small)."""
    try:
        data = (root / entry.path).read_bytes()
    except FileNotFoundError:
        raise CorruptBankError(f"{entry.path}: file is missing", (entry.path,)) from None
    if md5_bytes(data) != entry.md5:
        raise CorruptBankError(
            f"{entry.path}: MD5 differs from the manifest (corrupted or modified)", (entry.path,)
        )
    return GeneVocab.from_json(data, entry.path)
