"""Reading one generation of a bank: rows of tables, cell and gene metadata, study rows."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from . import _obs
from ._errors import CorruptBankError
from ._ingest import STUDY_JSON_FIELDS
from ._manifest import FileEntry, Manifest, StudyEntry
from ._rows import assemble_csr
from ._tables import PartFile, index_column, read_table_file
from ._vocab import GeneVocab, read_vocab


class Reader:
    """Read access to one generation (immutable: files of a generation never change).

    Parameters
    ----------
    root
        Bank directory.
    manifest
        The generation to read.
    """

    def __init__(self, root: Path, manifest: Manifest) -> None:
        self.root, self.manifest = root, manifest
        sizes = [s.n_cells for s in manifest.studies]
        self.row_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.cell_id_starts = np.array([s.cell_id_start for s in manifest.studies], np.int64)
        self._parts: dict[str, PartFile] = {}
        self._study_cache: dict[tuple[str, str], Any] = {}

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return int(self.row_starts[-1])

    @cached_property
    def vocab(self) -> GeneVocab:
        """The gene vocabulary (MD5-checked)."""
        return read_vocab(self.root, self.manifest.vocab)

    def part(self, entry: FileEntry) -> PartFile:
        """Return the (cached) reader of a part file."""
        if entry.path not in self._parts:
            self._parts[entry.path] = PartFile(self.root, entry)
        return self._parts[entry.path]

    # --- cells -------------------------------------------------------------------------------

    def locate(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Study index and cell id of each row position."""
        study = np.searchsorted(self.row_starts, positions, side="right") - 1
        return study, self.cell_id_starts[study] + positions - self.row_starts[study]

    def positions(self, cell_ids: np.ndarray) -> np.ndarray:
        """Row positions of cell ids (KeyError naming unknown ids)."""
        sizes = np.diff(self.row_starts)
        study = (np.searchsorted(self.cell_id_starts, cell_ids, side="right") - 1).clip(0)
        local = cell_ids - self.cell_id_starts[study] if len(sizes) else cell_ids
        bad = (local < 0) | (local >= sizes[study]) if len(sizes) else np.ones(len(cell_ids), bool)
        if bad.any():
            raise KeyError(
                f"{int(bad.sum())} cell id(s) are not in generation {self.manifest.generation}, "
                f"e.g. {cell_ids[bad][:5].tolist()}"
            )
        return self.row_starts[study] + local

    # --- tables ------------------------------------------------------------------------------

    def table_names(self) -> list[str]:
        """List the data tables present in at least one study, in first-seen order."""
        return list(dict.fromkeys(t for s in self.manifest.studies for t in s.tables))

    def table_info(
        self, table: str, studies: np.ndarray | None = None
    ) -> tuple[str, np.dtype, int | None]:
        """``(kind, dtype, n_cols)`` of a table; the studies holding it must agree.

        Parameters
        ----------
        table
            Table name.
        studies
            Indices of the studies to consider (default: all).
        """
        chosen = (
            self.manifest.studies
            if studies is None
            else [self.manifest.studies[i] for i in studies]
        )
        infos = {
            (t.kind, t.dtype, t.n_cols): s.study_id
            for s in chosen
            if (t := s.tables.get(table)) is not None
        }
        if not infos:
            raise KeyError(f"no table {table!r}; tables: {self.table_names()}")
        if len(infos) > 1:
            detail = "; ".join(f"{sid}: {k} {d} x{n}" for (k, d, n), sid in infos.items())
            raise ValueError(
                f"table {table!r} has different shapes or dtypes across studies ({detail}); "
                "read it per study with bank.study(study_id)"
            )
        kind, dtype, n_cols = next(iter(infos))
        return kind, np.dtype(dtype), n_cols

    def read(self, table: str, positions: np.ndarray) -> sp.csr_matrix | np.ndarray:
        """Rows of a table: CSR for sparse tables (gene space: all vocabulary ids), else ndarray.

        Cells without a row in a dense float table read as NaN; elsewhere they are an error.
        """
        study, cell_ids = self.locate(positions)
        kind, dtype, n_cols = self.table_info(table, np.unique(study) if len(study) else None)
        columns = [index_column(n_cols), "values"] if kind == "sparse" else ["values"]
        pieces = []
        found = np.zeros(len(positions), dtype=bool)
        for s in np.unique(study):
            entry = self.manifest.studies[s].tables.get(table)
            if entry is None:
                continue
            sel = np.flatnonzero(study == s)
            for f in entry.files:
                rows = self.part(f).local_rows(cell_ids[sel])
                hit = rows >= 0
                if hit.any():
                    order, lengths, flats = self.part(f).read_rows(rows[hit], columns)
                    pieces.append((sel[hit][order], lengths, *flats))
                    found[sel[hit]] = True
        if not found.all() and (kind == "sparse" or dtype.kind != "f"):
            missing = [self.manifest.studies[s].study_id for s in np.unique(study[~found])]
            raise KeyError(
                f"table {table!r} has no rows for {int((~found).sum())} requested cell(s), from "
                f"studies {missing}; select cells of studies that have it (bank.studies)"
            )
        if kind == "sparse":
            width = len(self.vocab) if n_cols is None else n_cols
            return assemble_csr(pieces, len(positions), width, dtype)
        assert n_cols is not None
        out = np.full((len(positions), n_cols), np.nan if dtype.kind == "f" else 0, dtype=dtype)
        for out_rows, _, values in pieces:
            out[out_rows] = values.reshape(-1, n_cols)
        return out

    # --- metadata ----------------------------------------------------------------------------

    def study_fields(self, s: StudyEntry) -> dict[str, Any]:
        """Return the study-table row of a study (JSON fields parsed)."""
        key = (s.study_id, "fields")
        if key not in self._study_cache:
            row = read_table_file(self.root, s.study_file).to_pylist()[0]
            for k in STUDY_JSON_FIELDS:
                row[k] = json.loads(row[k])
            self._study_cache[key] = row
        return self._study_cache[key]

    def study_obs(self, s: StudyEntry, reserved: bool) -> pd.DataFrame:
        """Cell metadata of one study with its original dtypes.

        Without ``reserved``: the original obs (index: obs names). With it: ``cell_id``,
        ``study_id`` and ``obs_name`` come first and the index is ``"<study_id>:<obs_name>"``,
        unique across studies (barcodes often repeat between studies).
        """
        fields = self.study_fields(s)
        tables = [read_table_file(self.root, f) for f in s.cellmeta]
        df = pa.concat_tables(tables).to_pandas() if tables else pd.DataFrame()
        if len(df) != s.n_cells:
            raise CorruptBankError(
                f"cellmeta of study {s.study_id!r} has {len(df)} rows, expected {s.n_cells}",
                tuple(f.path for f in s.cellmeta),
            )
        _obs.restore(df, fields["obs_dtypes"])
        names = df[_obs.OBS_NAME].to_numpy(dtype=object)
        if reserved:
            df.index = pd.Index(s.study_id + ":" + names.astype(str), dtype=object)
            return df[[*_obs.RESERVED_OBS, *fields["obs_dtypes"]]]
        df.index = pd.Index(names, name=fields["obs_index_name"])
        return df[list(fields["obs_dtypes"])]

    def study_var(self, s: StudyEntry) -> tuple[pd.DataFrame, np.ndarray]:
        """Return a study's gene annotation (original dtypes, indexed by var name) and gene ids."""
        fields = self.study_fields(s)
        df = read_table_file(self.root, s.annotation_file).to_pandas()
        _obs.restore(df, fields["var_dtypes"])
        gene_ids = df.pop(_obs.GENE_ID).to_numpy(np.int64)
        df.index = pd.Index(df.pop(_obs.VAR_NAME).to_numpy(object), name=fields["var_index_name"])
        return df, gene_ids

    def obs_dtypes(self) -> dict[str, Any]:
        """Bank-wide dtypes of the cell metadata columns (reserved columns first)."""
        dtypes: dict[str, Any] = {
            _obs.CELL_ID: np.dtype(np.int64),
            _obs.STUDY_ID: pd.CategoricalDtype([s.study_id for s in self.manifest.studies]),
            _obs.OBS_NAME: np.dtype(object),
        }
        specs = [self.study_fields(s)["obs_dtypes"] for s in self.manifest.studies]
        return dtypes | _obs.unify(specs)

    @cached_property
    def obs(self) -> pd.DataFrame:
        """Cell metadata of all studies with unified dtypes (index ``"<study_id>:<obs_name>"``)."""
        dtypes = self.obs_dtypes()
        frames = [_obs.conform(self.study_obs(s, True), dtypes) for s in self.manifest.studies]
        if not frames:
            return _obs.conform(pd.DataFrame(index=pd.Index([], dtype=object)), dtypes)
        return pd.concat(frames)

    @cached_property
    def var(self) -> pd.DataFrame:
        """The union gene space: one row per vocabulary gene, indexed by name."""
        n_studies = np.zeros(len(self.vocab), dtype=np.int64)
        for s in self.manifest.studies:
            n_studies[self.study_var(s)[1]] += 1
        return pd.DataFrame(
            {_obs.GENE_ID: np.arange(len(self.vocab), dtype=np.int64), "n_studies": n_studies},
            index=pd.Index(self.vocab.names, dtype=object),
        )

    def studies(self) -> pd.DataFrame:
        """One row per study: sizes, cell id range, tables and study-level metadata."""
        rows = []
        for s in self.manifest.studies:
            f = self.study_fields(s)
            rows.append(
                {
                    "study_id": s.study_id,
                    "n_cells": s.n_cells,
                    "n_genes": s.n_genes,
                    "cell_id_start": s.cell_id_start,
                    "layers": f["layers"],
                    "obsm": sorted(
                        t.removeprefix("obsm.") for t in s.tables if t.startswith("obsm.")
                    ),
                    "cell_type_key": f["cell_type_key"],
                    "cell_types": f["cell_types"],
                    "hvgs": f["hvgs"],
                    "uns": f["uns"],
                    "source": f["source"],
                    "created_at": f["created_at"],
                }
            )
        cols = ["study_id", "n_cells", "n_genes", "cell_id_start", "layers", "obsm",
                "cell_type_key", "cell_types", "hvgs", "uns", "source", "created_at"]  # fmt: skip
        return pd.DataFrame(rows, columns=cols).set_index("study_id")
