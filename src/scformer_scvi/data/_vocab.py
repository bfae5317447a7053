"""Gene vocabulary: the mapping between gene names and token ids."""

from __future__ import annotations

import hashlib
import json
import re
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
_ENSEMBL = re.compile(r"^ENS[A-Z]*G\d{11}(\.\d+)?$")


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
    case_sensitive
        How :meth:`lookup` matches names. ``True`` (default): exactly. ``False``: a name with
        no exact match matches the token that equals it ignoring case, if exactly one does.
        Human gene symbols are upper case (``GCG``) and mouse symbols capitalised (``Gcg``),
        so ``False`` lets a mouse gene reuse the token of its same-named human gene; for
        orthologs with different names, extend the vocabulary from an ortholog table instead
        (:meth:`scformer_scvi.SCFormer.expand_vocab`). The setting is saved with the
        vocabulary and does not change its md5 (which covers the tokens only).

    Examples
    --------
    >>> vocab = GeneVocab(["CD3E", "MS4A1"])
    >>> vocab["MS4A1"], vocab.pad_id, len(vocab)
    (4, 0, 5)
    >>> GeneVocab(["GCG", "INS"], case_sensitive=False).coverage(["Gcg", "Ins1"])["n_known"]
    1
    """

    def __init__(
        self,
        genes: Iterable[str],
        special_tokens: Sequence[str] = SPECIAL_TOKENS,
        case_sensitive: bool = True,
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
        self.case_sensitive = bool(case_sensitive)
        self._folded: pd.Series | None = None  # upper-cased gene -> id, built on first use

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
        vocab = cls(
            payload["genes"],
            special_tokens=payload["special_tokens"],
            case_sensitive=payload.get("case_sensitive", True),
        )
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
            "case_sensitive": self.case_sensitive,
            "md5": self.md5,
        }

    def save(self, path: str | Path) -> None:
        """Write the vocabulary as JSON."""
        with open(path, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=1)

    def extend(self, genes: Iterable[str]) -> GeneVocab:
        """Return a new vocabulary with ``genes`` not yet present appended (existing ids kept)."""
        new = [g for g in dict.fromkeys(str(g) for g in genes) if g not in self._index]
        return GeneVocab(
            self.genes + new, special_tokens=self.special_tokens, case_sensitive=self.case_sensitive
        )

    # lookups ----------------------------------------------------------------------------------
    def lookup(self, genes: Iterable[str], case_sensitive: bool | None = None) -> np.ndarray:
        """Token ids of ``genes``; ``-1`` for a gene not in the vocabulary.

        ``case_sensitive=None`` uses the vocabulary's own setting (see the class docstring).
        """
        names = [str(g) for g in genes]
        ids = self._index.get_indexer(pd.Index(names))
        ids[(ids >= 0) & (ids < self._n_special)] = -1  # a gene named "<pad>" is not the pad token
        if not (self.case_sensitive if case_sensitive is None else case_sensitive):
            missing = np.flatnonzero(ids < 0)
            folded = self._folded_index().reindex([names[i].upper() for i in missing])
            ids[missing] = folded.fillna(-1).to_numpy(dtype=np.int64)
        return ids.astype(np.int64)

    def _folded_index(self) -> pd.Series:
        """Upper-cased gene name -> id, for names that only one gene folds to."""
        if self._folded is None:
            folded = pd.Series(
                np.arange(self._n_special, len(self._tokens)),
                index=[g.upper() for g in self.genes],
            )
            self._folded = folded[~folded.index.duplicated(keep=False)]
        return self._folded

    def coverage(self, genes: Iterable[str], case_sensitive: bool | None = None) -> dict:
        """How many of ``genes`` (e.g. a dataset's genes) the vocabulary knows.

        Returns
        -------
        ``n_genes``, ``n_known``, ``fraction``; ``n_case_only``, the known genes that match only
        ignoring case (0 when matching case-sensitively); ``unknown``, up to 10 unknown names;
        and ``naming`` of the genes and of the vocabulary (``"ensembl"`` or ``"symbol"``), so
        a symbols-vs-Ensembl-ids mismatch is visible.
        """
        names = [str(g) for g in genes]
        ids = self.lookup(names, case_sensitive)
        exact = self.lookup(names, case_sensitive=True)
        known = ids >= 0
        return {
            "n_genes": len(names),
            "n_known": int(known.sum()),
            "fraction": float(known.mean()) if names else 0.0,
            "n_case_only": int((known & (exact < 0)).sum()),
            "unknown": [g for g, ok in zip(names, known, strict=True) if not ok][:10],
            "naming": gene_naming(names),
            "vocab_naming": gene_naming(self.genes),
        }

    def suggest_gene_key(self, adata: AnnData) -> str | None:
        """The ``var`` column (or ``None`` for ``var_names``) whose names the vocabulary knows best.

        Pass the result as ``gene_key=`` to ``setup_anndata``, e.g. when ``var_names`` are
        Ensembl ids and a column holds the symbols the vocabulary uses.

        Raises
        ------
        ValueError
            If no candidate shares a single gene with the vocabulary.
        """
        candidates: dict[str | None, int] = {None: self.coverage(adata.var_names)["n_known"]}
        for column in adata.var.columns:
            values = adata.var[column]
            if isinstance(values.dtype, pd.CategoricalDtype) or not (
                pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values)
            ):
                candidates[column] = self.coverage(values.astype(str))["n_known"]
        best = max(candidates, key=lambda key: candidates[key])
        if candidates[best] == 0:
            raise ValueError(
                f"No var column nor var_names shares a gene with the vocabulary (vocabulary "
                f"names are {gene_naming(self.genes)}s, e.g. {self.genes[:3]}). Add a var "
                "column with matching names, e.g. symbols mapped from Ensembl ids."
            )
        return best

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


def gene_naming(genes: Sequence[str]) -> str:
    """How ``genes`` are named: ``"ensembl"`` (mostly Ensembl gene ids) or ``"symbol"``."""
    sample = list(genes)[:1000]
    n_ensembl = sum(bool(_ENSEMBL.match(str(g))) for g in sample)
    return "ensembl" if sample and n_ensembl > len(sample) / 2 else "symbol"


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
