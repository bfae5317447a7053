"""Gene vocabulary: the mapping between gene names and token ids."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

PAD_TOKEN = "<pad>"
CLS_TOKEN = "<cls>"
MASK_TOKEN = "<mask>"
SPECIAL_TOKENS: tuple[str, ...] = (PAD_TOKEN, CLS_TOKEN, MASK_TOKEN)

_FORMAT = "scformer-gene-vocab"
_FORMAT_VERSION = 1


class GeneVocab:
    """An ordered, immutable mapping from tokens (special tokens, then genes) to integer ids.

    Special tokens come first (``<pad>`` = 0, ``<cls>`` = 1, ``<mask>`` = 2), genes follow in
    the order given. Ids are dense and never reused, so a vocabulary can only grow by appending
    (see :meth:`extend`).

    Parameters
    ----------
    genes
        Gene names (symbols or Ensembl ids), unique and non-empty.
    special_tokens
        Tokens placed before the genes. Must contain ``<pad>``, ``<cls>`` and ``<mask>``.

    Examples
    --------
    >>> vocab = GeneVocab(["CD3E", "MS4A1"])
    >>> vocab["MS4A1"], vocab.pad_id, len(vocab)
    (4, 0, 5)
    """

    def __init__(
        self, genes: Iterable[str], special_tokens: Sequence[str] = SPECIAL_TOKENS
    ) -> None:
        genes = [str(g) for g in genes]
        special_tokens = [str(t) for t in special_tokens]
        missing = [t for t in SPECIAL_TOKENS if t not in special_tokens]
        if missing:
            raise ValueError(f"special_tokens must include {missing}.")
        tokens = special_tokens + genes
        _check_tokens(tokens)
        self._tokens = tokens
        self._n_special = len(special_tokens)
        self._index = pd.Index(tokens)

    # construction -----------------------------------------------------------------------------
    @classmethod
    def from_anndata(cls, adata: AnnData, gene_key: str | None = None) -> GeneVocab:
        """Build a vocabulary from ``adata.var_names`` or from the column ``var[gene_key]``."""
        return cls(gene_names(adata, gene_key))

    @classmethod
    def from_dict(cls, payload: dict) -> GeneVocab:
        """Inverse of :meth:`to_dict`; checks the format tag and the md5."""
        if payload.get("format") != _FORMAT:
            raise ValueError("Not a scformer gene vocabulary (missing 'format' tag).")
        vocab = cls(payload["genes"], special_tokens=payload["special_tokens"])
        if "md5" in payload and payload["md5"] != vocab.md5:
            raise ValueError(
                f"Gene vocabulary checksum mismatch: file says {payload['md5']}, content hashes "
                f"to {vocab.md5}. The file was edited or corrupted; restore it from the model "
                "directory it came with."
            )
        return vocab

    @classmethod
    def load(cls, path: str | Path) -> GeneVocab:
        """Read a vocabulary written by :meth:`save`."""
        with open(path, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh))

    def to_dict(self) -> dict:
        """Return a JSON-serialisable representation, including the md5 of the token list."""
        return {
            "format": _FORMAT,
            "version": _FORMAT_VERSION,
            "special_tokens": self.special_tokens,
            "genes": self.genes,
            "md5": self.md5,
        }

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=1)

    def extend(self, genes: Iterable[str]) -> GeneVocab:
        """Return a new vocabulary with ``genes`` not yet present appended (existing ids kept)."""
        new = [g for g in dict.fromkeys(str(g) for g in genes) if g not in self._index]
        return GeneVocab(self.genes + new, special_tokens=self.special_tokens)

    # lookups ----------------------------------------------------------------------------------
    def lookup(self, genes: Iterable[str]) -> np.ndarray:
        """Token ids of ``genes``; ``-1`` for a gene not in the vocabulary."""
        ids = self._index.get_indexer(pd.Index([str(g) for g in genes]))
        ids[(ids >= 0) & (ids < self._n_special)] = -1  # a gene named "<pad>" is not the pad token
        return ids.astype(np.int64)

    def __getitem__(self, token: str) -> int:
        try:
            return int(self._index.get_loc(token))
        except KeyError:
            raise KeyError(f"{token!r} is not in the gene vocabulary.") from None

    def __contains__(self, token: object) -> bool:
        return token in self._index

    def __len__(self) -> int:
        return len(self._tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GeneVocab) and self._tokens == other._tokens

    def __hash__(self) -> int:
        return hash(self.md5)

    def __repr__(self) -> str:
        special = len(self.special_tokens)
        return f"GeneVocab({self.n_genes} genes + {special} special tokens, md5={self.md5[:8]})"

    # properties -------------------------------------------------------------------------------
    @property
    def tokens(self) -> list[str]:
        """All tokens in id order."""
        return list(self._tokens)

    @property
    def genes(self) -> list[str]:
        """Gene tokens in id order (special tokens excluded)."""
        return self._tokens[self._n_special :]

    @property
    def special_tokens(self) -> list[str]:
        """Special tokens in id order."""
        return self._tokens[: self._n_special]

    @property
    def n_genes(self) -> int:
        """Number of gene tokens."""
        return len(self._tokens) - self._n_special

    @property
    def pad_id(self) -> int:
        """Id of ``<pad>``."""
        return self[PAD_TOKEN]

    @property
    def cls_id(self) -> int:
        """Id of ``<cls>``."""
        return self[CLS_TOKEN]

    @property
    def mask_id(self) -> int:
        """Id of ``<mask>``."""
        return self[MASK_TOKEN]

    @property
    def md5(self) -> str:
        """md5 of the ordered token list: two vocabularies with equal md5 assign equal ids."""
        return hashlib.md5("\n".join(self._tokens).encode("utf-8")).hexdigest()


def gene_names(adata: AnnData, gene_key: str | None = None) -> list[str]:
    """Gene names of ``adata``: ``var_names``, or the ``var[gene_key]`` column."""
    if gene_key is None:
        return [str(g) for g in adata.var_names]
    if gene_key not in adata.var.columns:
        raise KeyError(
            f"gene_key={gene_key!r} is not a column of adata.var (columns: "
            f"{list(adata.var.columns)}). Pass one of those, or gene_key=None to use var_names."
        )
    return [str(g) for g in adata.var[gene_key]]


def _check_tokens(tokens: list[str]) -> None:
    empty = [i for i, t in enumerate(tokens) if not t.strip() or t.lower() == "nan"]
    if empty:
        raise ValueError(
            f"{len(empty)} gene names are empty or NaN (first at position {empty[0]}). "
            "Fill or drop those genes before building a vocabulary."
        )
    counts = pd.Index(tokens).value_counts()
    dupes = counts[counts > 1]
    if len(dupes):
        raise ValueError(
            f"{len(dupes)} gene names are duplicated, e.g. {list(dupes.index[:5])}. Make them "
            "unique (adata.var_names_make_unique()) or aggregate the duplicated genes first."
        )
