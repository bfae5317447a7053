"""Lazy access: matrices read on indexing, views of cells, and AnnData conversion."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import abc as ad_abc

from ._ingest import layer_table
from ._manifest import StudyEntry
from ._reader import Reader
from ._rows import normalize_index


class LazyMatrix(ad_abc.CSRDataset):
    """Rows of a gene-space table (``X`` or a layer), read from disk when indexed.

    ``m[rows]`` and ``m[rows, cols]`` return a ``scipy.sparse.csr_matrix`` (float32) equal to
    the same indexing of the in-memory matrix; rows and columns may be ints, slices, int arrays
    or boolean masks. It is an ``anndata.abc.CSRDataset``, so it can be the ``X`` of an AnnData.

    Parameters
    ----------
    reader
        The generation to read.
    table
        Table name (``"X"`` or ``"layers.<name>"``).
    gene_ids
        Vocabulary ids of the columns, in order (default: the whole vocabulary).
    """

    backend = "scbank"  # type: ignore[assignment]  # anndata only prints it

    def __init__(self, reader: Reader, table: str, gene_ids: np.ndarray | None = None) -> None:
        kind, dtype, n_cols = reader.table_info(table)
        if kind != "sparse" or n_cols is not None:
            raise TypeError(f"table {table!r} is not a gene-space sparse table")
        self._reader, self._table, self._gene_ids = reader, table, gene_ids
        n_vars = len(reader.vocab) if gene_ids is None else len(gene_ids)
        self.shape = (reader.n_obs, n_vars)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"LazyMatrix({self._table!r}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, index: Any) -> sp.csr_matrix:
        rows, cols = index if isinstance(index, tuple) else (index, slice(None))
        matrix = self._reader.read(self._table, normalize_index(rows, self.shape[0]))
        if isinstance(cols, slice) and cols == slice(None) and self._gene_ids is None:
            return matrix
        ids = np.arange(self.shape[1]) if self._gene_ids is None else self._gene_ids
        return matrix[:, ids[normalize_index(cols, self.shape[1], "column")]]

    def subset_genes(self, names: Sequence[str]) -> LazyMatrix:
        """Restrict the columns to genes ``names``, in that order.

        Genes that a study did not measure read as zeros for its cells.
        """
        return LazyMatrix(self._reader, self._table, self._reader.vocab.ids(list(names)))

    def to_memory(self) -> sp.csr_matrix:
        """All rows, in memory."""
        return self[:]


class LazyTable:
    """Rows of an obsm table (dense -> ``numpy.ndarray``, sparse -> CSR), read on indexing.

    Cells without a row in a float dense table (e.g. embeddings written for some cells only)
    read as NaN. Studies may store tables of the same name with different widths; then
    ``kind``, ``dtype`` and ``shape[1]`` are None and rows can be read within one study.
    """

    def __init__(self, reader: Reader, table: str) -> None:
        self._reader, self._table = reader, table
        try:
            kind, dtype, n_cols = reader.table_info(table)
        except ValueError:
            kind, dtype, n_cols = None, None, None
        self.kind, self.dtype, self.shape = kind, dtype, (reader.n_obs, n_cols)

    def __repr__(self) -> str:
        return f"LazyTable({self._table!r}, {self.kind}, shape={self.shape}, dtype={self.dtype})"

    def __getitem__(self, rows: Any) -> np.ndarray | sp.csr_matrix:
        return self._reader.read(self._table, normalize_index(rows, self.shape[0]))


class TableMapping(Mapping[str, Any]):
    """``bank.layers`` / ``bank.obsm``: name -> lazy table."""

    def __init__(self, reader: Reader, prefix: str) -> None:
        self._reader, self._prefix = reader, prefix

    def __getitem__(self, name: str) -> LazyMatrix | LazyTable:
        table = self._prefix + name
        if table not in self._reader.table_names():
            raise KeyError(f"no {self._prefix.rstrip('.')} table {name!r}; have {list(self)}")
        return (LazyMatrix if self._prefix == "layers." else LazyTable)(self._reader, table)

    def __iter__(self) -> Iterator[str]:
        n = len(self._prefix)
        return (t[n:] for t in self._reader.table_names() if t.startswith(self._prefix))

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:
        return f"{self._prefix.rstrip('.')}: {list(self)}"


class BankView:
    """A lazy selection of cells (and optionally genes) of one bank generation.

    Nothing is read until :meth:`to_memory` (or ``obs``) is called. Obtain one with
    ``bank[rows]`` or ``bank.study(study_id)``.
    """

    def __init__(
        self,
        reader: Reader,
        positions: np.ndarray,
        gene_ids: np.ndarray | None = None,
        study: StudyEntry | None = None,
    ) -> None:
        self._reader, self._positions, self._gene_ids = reader, positions, gene_ids
        self._study = study  # set for bank.study(): original obs/var/uns of that study

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_cells, n_genes)``."""
        n_vars = len(self._reader.vocab) if self._gene_ids is None else len(self._gene_ids)
        return len(self._positions), n_vars

    def __repr__(self) -> str:
        return f"BankView with n_obs x n_vars = {self.shape[0]} x {self.shape[1]}"

    @property
    def obs(self) -> pd.DataFrame:
        """Cell metadata of the selected cells."""
        if self._study is not None:
            return self._reader.study_obs(self._study, reserved=False)
        return self._reader.obs.iloc[self._positions]

    @property
    def var(self) -> pd.DataFrame:
        """Gene metadata of the selected genes (a study's own ``var`` for ``bank.study()``)."""
        if self._study is not None:
            return self._reader.study_var(self._study)[0]
        var = self._reader.var
        return var if self._gene_ids is None else var.iloc[self._gene_ids]

    def __getitem__(self, rows: Any) -> BankView:
        pos = self._positions[normalize_index(rows, len(self._positions))]
        return BankView(self._reader, pos, self._gene_ids)

    def subset_genes(self, names: Sequence[str]) -> BankView:
        """Restrict the view to genes ``names`` (in that order)."""
        return BankView(self._reader, self._positions, self._reader.vocab.ids(list(names)))

    def _tables(self) -> list[str]:
        """Tables that every study in the view holds, with one shape across them."""
        studies = np.unique(self._reader.locate(self._positions)[0])
        if not len(studies):
            return []
        entries = [self._reader.manifest.studies[s] for s in studies]
        names = [
            t
            for t in self._reader.table_names()
            if t != self._reader.manifest.main_table and all(t in e.tables for e in entries)
        ]
        out = []
        for t in names:
            try:
                self._reader.table_info(t, studies)
            except ValueError:
                continue
            out.append(t)
        return out

    def _read(self, table: str) -> sp.csr_matrix | np.ndarray:
        m = self._reader.read(table, self._positions)
        return m if self._gene_ids is None or table.startswith("obsm.") else m[:, self._gene_ids]

    def to_memory(self) -> ad.AnnData:
        """Load the view as an in-memory AnnData (obs, var, X, layers, obsm; uns for a study).

        Layers and obsm matrices are included when every study in the view has them with one
        shape. For ``bank.study(study_id)`` the result equals the AnnData that was appended
        (X and layers as float32 CSR, obsm with their stored dtype, JSON-able uns).
        """
        tables = self._tables()
        n = len("layers.")
        return ad.AnnData(
            X=self._read(self._reader.manifest.main_table),
            obs=self.obs.copy(),
            var=self.var.copy(),
            layers={t[n:]: self._read(t) for t in tables if t.startswith("layers.")},
            obsm={t[len("obsm.") :]: self._read(t) for t in tables if t.startswith("obsm.")},
            uns=self._reader.study_fields(self._study)["uns"] if self._study else None,
        )


def study_view(reader: Reader, study_id: str) -> BankView:
    """All cells of one study, in its own genes (original order) with its own obs/var."""
    m = reader.manifest
    index = next((i for i, s in enumerate(m.studies) if s.study_id == study_id), None)
    if index is None:
        raise KeyError(f"no study {study_id!r}; studies: {[s.study_id for s in m.studies]}")
    positions = np.arange(reader.row_starts[index], reader.row_starts[index + 1])
    study = m.studies[index]
    return BankView(reader, positions, reader.study_var(study)[1], study)


def lazy_anndata(reader: Reader) -> ad.AnnData:
    """Build an AnnData with in-memory obs/var and lazy X and layers (see DataBank.to_anndata)."""
    main = reader.manifest.main_table
    layers = [
        t[len("layers.") :]
        for t in reader.table_names()
        if t.startswith("layers.") and all(t in s.tables for s in reader.manifest.studies)
    ]
    return ad.AnnData(
        X=LazyMatrix(reader, main) if reader.manifest.studies else None,
        obs=reader.obs.copy(),
        var=reader.var.copy(),
        layers={k: LazyMatrix(reader, layer_table(k)) for k in layers},
    )
