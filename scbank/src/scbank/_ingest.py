"""Ingesting a study: reading AnnData (in memory or .h5ad, lazily) in chunks and writing parts."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp
from anndata import abc as ad_abc

from . import _obs
from ._errors import InvalidInputError
from ._manifest import FileTracker, Layout, StudyEntry, TableEntry, utc_now
from ._tables import PartWriter, dense_table, sparse_table, write_table_file
from ._validate import check_counts, check_labels, check_name
from ._vocab import GeneVocab

CELL_TYPE_KEYS = ("cell_type", "celltype", "cell_ontology_class", "cell_type1")


def layer_table(name: str) -> str:
    """Table name of layer ``name``."""
    return f"layers.{name}"


def obsm_table(name: str) -> str:
    """Table name of obsm matrix ``name``."""
    return f"obsm.{name}"


@dataclass
class Source:
    """A row-sliceable AnnData: ``obs``/``var``/``uns`` in memory, matrices read by chunk.

    For an ``.h5ad`` path the matrices stay on disk: ``anndata.read_h5ad(backed="r")`` would
    load every layer and obsm matrix into memory, so the file is opened with h5py and each
    element is wrapped with ``anndata.io.sparse_dataset`` (CSR) or used as an h5py dataset.
    """

    obs: pd.DataFrame
    var: pd.DataFrame
    uns: Mapping[str, Any]
    x: Any
    layers: Mapping[str, Any]
    obsm: Mapping[str, Any]
    origin: str
    file: h5py.File | None = None

    @classmethod
    def open(cls, data: ad.AnnData | str | Path) -> Source:
        """Wrap an AnnData, or open an ``.h5ad`` file lazily."""
        if isinstance(data, ad.AnnData):
            return cls(
                data.obs, data.var, data.uns, data.X, data.layers, data.obsm, "AnnData in memory"
            )
        path = Path(data)
        if not path.is_file():
            raise InvalidInputError(f"{path}: no such file (expected an .h5ad file or AnnData)")
        f = h5py.File(path, "r")
        try:
            obs, var = ad.io.read_elem(f["obs"]), ad.io.read_elem(f["var"])
            uns = ad.io.read_elem(f["uns"]) if "uns" in f else {}
            groups = {k: dict(f[k]) if k in f else {} for k in ("layers", "obsm")}
        except (KeyError, OSError, ValueError) as e:
            f.close()
            raise InvalidInputError(f"{path}: not a readable .h5ad file ({e})") from e
        lazy = {
            k: {n: _lazy(e, f"{k}[{n!r}]", path) for n, e in g.items()} for k, g in groups.items()
        }
        return cls(
            obs, var, uns, _lazy(f["X"], "X", path), lazy["layers"], lazy["obsm"], str(path), f
        )

    def close(self) -> None:
        """Close the underlying file, if any."""
        if self.file is not None:
            self.file.close()


def _lazy(elem: h5py.Group | h5py.Dataset, what: str, path: Path) -> Any:
    """Wrap an h5ad element for row-chunked reading (``None`` if it is not a matrix)."""
    enc = elem.attrs.get("encoding-type", "array" if isinstance(elem, h5py.Dataset) else "")
    if enc == "csc_matrix":
        raise InvalidInputError(
            f"{what} of {path} is stored as CSC: reading it by rows would load it whole. "
            f"Convert it once: adata.{what} = adata.{what}.tocsr(), then write_h5ad again"
        )
    if enc == "csr_matrix":
        return ad.io.sparse_dataset(elem)
    if enc == "array":
        return elem
    return None


def _rows_of(matrix: Any, start: int, stop: int) -> np.ndarray | sp.csr_matrix:
    """Rows ``start:stop`` of a dense or sparse, in-memory or backed matrix."""
    if isinstance(matrix, ad_abc.CSCDataset):
        raise InvalidInputError(
            "a backed CSC matrix cannot be read by rows without loading it whole; convert it "
            "to CSR first (adata.X = adata.X.to_memory().tocsr())"
        )
    block = matrix[start:stop]
    if sp.issparse(block):
        return sp.csr_matrix(block)
    return np.asarray(block)


def counts_block(
    block: np.ndarray | sp.csr_matrix, gene_ids: np.ndarray, n_genes: int, what: str
) -> sp.csr_matrix:
    """Validate a chunk of counts and re-index its columns by gene id (canonical CSR, float32)."""
    m = sp.csr_matrix(block, dtype=np.float32)
    check_counts(m.data, what)
    out = sp.csr_matrix((m.data, gene_ids[m.indices], m.indptr), shape=(m.shape[0], n_genes))
    out.sum_duplicates()  # sorts gene ids within rows
    out.eliminate_zeros()
    return out


_SKIP = object()


def jsonable(value: Any, where: str) -> Any:
    """Convert ``uns`` content to JSON data; what cannot be converted is dropped with a warning.

    numpy arrays become (nested) lists and numpy scalars Python scalars.
    """
    if isinstance(value, Mapping):
        out = {str(k): jsonable(v, f"{where}[{k!r}]") for k, v in value.items()}
        return {k: v for k, v in out.items() if v is not _SKIP}
    if isinstance(value, np.ndarray) and (value.dtype.kind in "biufU" or value.dtype == object):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        items = [jsonable(v, where) for v in value]
        # an element that was dropped has already been warned about
        return _SKIP if any(i is _SKIP for i in items) else items
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    warnings.warn(
        f"{where} ({type(value).__name__}) is not JSON-serialisable and is not stored",
        stacklevel=4,
    )
    return _SKIP


@dataclass
class _Plan:
    """What to ingest from a source, validated before any file is written."""

    gene_names: np.ndarray
    obs_names: np.ndarray
    layers: list[str]
    obsm: dict[str, tuple[str, str, int]]  # name -> (kind, dtype, n_cols)


def plan(
    source: Source, study_id: str, layers: Sequence[str] | None, obsm: Sequence[str] | None
) -> _Plan:
    """Validate a source against what scBank can store (raises before writing anything)."""
    gene_names = check_labels(source.var.index, f"gene names (var_names) of study {study_id!r}")
    obs_names = check_labels(source.obs.index, f"cell names (obs_names) of study {study_id!r}")
    for axis, df, reserved in (
        ("obs", source.obs, _obs.RESERVED_OBS),
        ("var", source.var, _obs.RESERVED_VAR),
    ):
        bad = [c for c in df.columns if not isinstance(c, str) or c in reserved]
        if bad:
            raise InvalidInputError(
                f"{axis} column(s) {bad} of study {study_id!r} are reserved by scBank "
                f"({', '.join(reserved)}) or not strings; rename them, e.g. "
                f"adata.{axis}.rename(columns={{{bad[0]!r}: 'orig_{bad[0]}'}})"
            )
    if source.x is None:
        raise InvalidInputError(f"study {study_id!r} has no X matrix")
    chosen_layers = list(source.layers) if layers is None else list(layers)
    for name in chosen_layers:
        check_name(name, "layer name")
        if name not in source.layers or source.layers[name] is None:
            raise InvalidInputError(
                f"layer {name!r} is not a matrix of study {study_id!r}; "
                f"available: {sorted(source.layers)}"
            )
    chosen_obsm: dict[str, tuple[str, str, int]] = {}
    for name in list(source.obsm) if obsm is None else list(obsm):
        check_name(name, "obsm name")
        m = source.obsm.get(name)
        dtype = getattr(m, "dtype", None)
        shape = getattr(m, "shape", ())
        if m is None or dtype is None or dtype.kind not in "iuf" or len(shape) != 2:
            msg = f"obsm[{name!r}] of study {study_id!r} is not a 2-d numeric matrix"
            if obsm is not None:
                raise InvalidInputError(f"{msg}; leave it out of obsm=[...]")
            warnings.warn(f"{msg} and is not stored", stacklevel=3)
            continue
        kind = "sparse" if sp.issparse(m) or isinstance(m, ad_abc.CSRDataset) else "dense"
        chosen_obsm[name] = (kind, np.dtype(dtype).name, int(shape[1]))
    return _Plan(gene_names, obs_names, chosen_layers, chosen_obsm)


def _with_columns(df: pd.DataFrame, first: dict[str, pa.Array], what: str) -> pa.Table:
    """Arrow table of scBank's own columns ``first``, then the columns of ``df``.

    pandas' schema metadata is kept, so other tools (``pandas.read_parquet``) see the dtypes.
    """
    try:
        converted = pa.Table.from_pandas(df.reset_index(drop=True), preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError) as e:
        bad = next(c for c in df.columns if not _converts(df[[c]]))
        raise InvalidInputError(
            f"{what} column {bad!r} cannot be stored ({e}); convert it to strings, numbers, "
            "booleans or a categorical"
        ) from e
    columns = first | {name: converted.column(name) for name in converted.column_names}
    return pa.table(columns).replace_schema_metadata(converted.schema.metadata)


def _converts(df: pd.DataFrame) -> bool:
    try:
        pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, TypeError, ValueError):
        return False
    return True


def cellmeta_table(
    obs: pd.DataFrame, obs_names: np.ndarray, study_id: str, cell_ids: np.ndarray
) -> pa.Table:
    """Arrow table of cell metadata: cell id, study id, obs name, then the obs columns."""
    study = pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(len(obs), np.int32)), pa.array([study_id])
    )
    first = {
        _obs.CELL_ID: pa.array(cell_ids, pa.int64()),
        _obs.STUDY_ID: study,
        _obs.OBS_NAME: pa.array(obs_names.tolist(), pa.string()),
    }
    return _with_columns(obs, first, f"obs of study {study_id!r}:")


def annotation_table(var: pd.DataFrame, gene_names: np.ndarray, gene_ids: np.ndarray) -> pa.Table:
    """Arrow table of a study's gene annotation: gene id, var name, then the var columns."""
    first = {
        _obs.GENE_ID: pa.array(gene_ids, pa.int64()),
        _obs.VAR_NAME: pa.array(gene_names.tolist(), pa.string()),
    }
    return _with_columns(var, first, "var")


def study_row(study: Mapping[str, Any]) -> pa.Table:
    """Build the one-row study table (JSON-typed fields stored as JSON strings)."""
    cols = {k: [json.dumps(v) if k in STUDY_JSON_FIELDS else v] for k, v in study.items()}
    return pa.table(cols)


#: Study-table fields stored as JSON strings.
STUDY_JSON_FIELDS = ("obs_dtypes", "var_dtypes", "uns")


class StudyWriter:
    """Writes every file of one study and builds its manifest entry.

    Parameters
    ----------
    root
        Bank directory.
    layout
        The bank's layout.
    study_id
        The (validated, new) study id.
    token
        Unique token of this write.
    tracker
        Records created files.
    """

    def __init__(
        self, root: Path, layout: Layout, study_id: str, token: str, tracker: FileTracker
    ) -> None:
        self.root, self.layout, self.study_id = root, layout, study_id
        self.token, self.tracker = token, tracker
        self.cellmeta = PartWriter(root, f"cellmeta/{study_id}", token, layout, tracker, data=False)
        self._tables: dict[str, tuple[str, str, int | None, PartWriter]] = {}

    def table(self, name: str, kind: str, dtype: str, n_cols: int | None) -> PartWriter:
        """Return the part writer of data table ``name`` (created on first use)."""
        if name not in self._tables:
            directory = f"tables/{name}/{self.study_id}"
            writer = PartWriter(self.root, directory, self.token, self.layout, self.tracker)
            self._tables[name] = (kind, dtype, n_cols, writer)
        return self._tables[name][3]

    def __enter__(self) -> StudyWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        for writer in [self.cellmeta, *(t[3] for t in self._tables.values())]:
            writer.__exit__(exc_type)  # leaves no open file behind a failed write

    def finish(self, study: dict[str, Any], var_table: pa.Table, cell_id_start: int) -> StudyEntry:
        """Close all parts, write the annotation and study row, and return the entry."""
        cellmeta = self.cellmeta.close()
        tables = {
            name: TableEntry(kind, dtype, n_cols, writer.close())
            for name, (kind, dtype, n_cols, writer) in self._tables.items()
        }
        sid, tok = self.study_id, self.token
        annotation = write_table_file(
            self.root, f"annotation/{sid}/gene.annotation-{tok}.parquet", var_table, self.tracker
        )
        study_file = write_table_file(
            self.root, f"studies/{sid}/study-{tok}.parquet", study_row(study), self.tracker
        )
        return StudyEntry(
            study_id=sid,
            n_cells=study["n_cells"],
            cell_id_start=cell_id_start,
            n_genes=study["n_genes"],
            study_file=study_file,
            annotation_file=annotation,
            cellmeta=cellmeta,
            tables=tables,
        )


def chunks(n: int, chunk_size: int, row_group_size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of chunks whose sizes are multiples of the row group size."""
    step = max(row_group_size, chunk_size // row_group_size * row_group_size)
    for start in range(0, n, step):
        yield start, min(n, start + step)


def ingest(
    root: Path,
    layout: Layout,
    vocab: GeneVocab,
    source: Source,
    study_id: str,
    cell_id_start: int,
    *,
    layers: Sequence[str] | None,
    obsm: Sequence[str] | None,
    chunk_size: int,
    cell_type_key: str | None,
    token: str,
    tracker: FileTracker,
) -> tuple[StudyEntry, GeneVocab]:
    """Write one study from ``source``; return its manifest entry and the extended vocabulary."""
    p = plan(source, study_id, layers, obsm)
    vocab, gene_ids = vocab.extended(p.gene_names.tolist())
    n = len(p.obs_names)
    cell_ids = np.arange(cell_id_start, cell_id_start + n, dtype=np.int64)
    meta = cellmeta_table(source.obs, p.obs_names, study_id, cell_ids)
    var_table = annotation_table(source.var, p.gene_names, gene_ids)
    counts = [("X", source.x), *((layer_table(k), source.layers[k]) for k in p.layers)]
    with StudyWriter(root, layout, study_id, token, tracker) as w:
        for start, stop in chunks(n, chunk_size, layout.row_group_size):
            ids = cell_ids[start:stop]
            w.cellmeta.write(meta.slice(start, stop - start))
            for name, matrix in counts:
                block = counts_block(
                    _rows_of(matrix, start, stop),
                    gene_ids,
                    len(vocab),
                    f"{name} of study {study_id!r} (rows {start}-{stop - 1})",
                )
                w.table(name, "sparse", "float32", None).write(
                    sparse_table(ids, block, None, np.dtype(np.float32))
                )
            for name, (kind, dtype, n_cols) in p.obsm.items():
                block = _rows_of(source.obsm[name], start, stop)
                writer = w.table(obsm_table(name), kind, dtype, n_cols)
                if kind == "sparse":
                    writer.write(sparse_table(ids, block, n_cols, np.dtype(dtype)))
                else:
                    writer.write(dense_table(ids, block.astype(dtype, copy=False)))
        study = study_fields(source, study_id, p, cell_type_key)
        return w.finish(study, var_table, cell_id_start), vocab


def study_fields(
    source: Source, study_id: str, p: _Plan, cell_type_key: str | None
) -> dict[str, Any]:
    """Collect the study-level metadata stored in the study table."""
    obs, var = source.obs, source.var
    if cell_type_key is None:
        cell_type_key = next((k for k in CELL_TYPE_KEYS if k in obs.columns), None)
    elif cell_type_key not in obs.columns:
        raise InvalidInputError(f"cell_type_key {cell_type_key!r} is not an obs column")
    cell_types = sorted(map(str, obs[cell_type_key].dropna().unique())) if cell_type_key else []
    hv = var.get("highly_variable")
    hvgs = (
        p.gene_names[hv.to_numpy(dtype=bool)].tolist()
        if hv is not None and hv.dtype == bool
        else []
    )
    return {
        "study_id": study_id,
        "n_cells": len(p.obs_names),
        "n_genes": len(p.gene_names),
        "source": source.origin,
        "created_at": utc_now(),
        "layers": p.layers,
        "obsm": list(p.obsm),
        "cell_type_key": cell_type_key,
        "cell_types": cell_types,
        "hvgs": hvgs,
        "obs_index_name": obs.index.name,
        "var_index_name": var.index.name,
        "obs_dtypes": _obs.describe(obs),
        "var_dtypes": _obs.describe(var),
        "uns": jsonable(dict(source.uns), "uns"),
    }
