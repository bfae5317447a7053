"""The human-readable JSON-lines layout of a bank (the original scBank design), both ways.

Layout of an export directory::

    manifest.json               format, main table, tables, vocabulary MD5, files' MD5s
    gene.vocab.json             {"<gene id>": "<gene name>"}
    studytable.jsonl            one study per line (study table row + its tables' shapes)
    cellmeta.jsonl              one cell per line: cell_id, study_id, obs_name, obs columns
    gene.annotation.jsonl       one (study, gene) per line: study_id, gene_id, var_name, var columns
    <table>.datatable.jsonl     one cell per line, by cell id: sparse {"id", "genes",
                                "expressions"} (genes = gene ids, or column ids outside gene
                                space) or dense {"id", "values"}

Floats are written with Python's shortest round-trip repr, so values come back bit-exact.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import scipy.sparse as sp

from . import _obs
from ._errors import InvalidInputError
from ._ingest import StudyWriter, annotation_table, cellmeta_table, chunks
from ._manifest import FileTracker, Layout, StudyEntry, md5_file
from ._reader import Reader
from ._tables import dense_table, sparse_table
from ._vocab import GeneVocab

JSONL_FORMAT = "scbank-jsonl"
JSONL_VERSION = 1


def _records(df: pd.DataFrame) -> Iterator[dict[str, Any]]:
    """Rows as JSON-able dicts (missing values as null)."""
    cols = {c: df[c].astype(object).where(df[c].notna(), None).tolist() for c in df.columns}
    for i in range(len(df)):
        yield {c: v[i] for c, v in cols.items()}


def _write_lines(f: IO[str], records: Iterator[dict[str, Any]]) -> None:
    for r in records:
        f.write(json.dumps(r, default=_scalar) + "\n")


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    raise TypeError(f"cannot write {type(v).__name__} to JSON")


def export_jsonl(reader: Reader, out: Path) -> None:
    """Write the generation read by ``reader`` to ``out`` (see module docstring)."""
    if out.exists() and any(out.iterdir()):
        raise InvalidInputError(f"{out} exists and is not empty; choose a new directory")
    out.mkdir(parents=True, exist_ok=True)
    m = reader.manifest
    (out / "gene.vocab.json").write_bytes(reader.vocab.to_json())
    tables = reader.table_names()
    with open(out / "studytable.jsonl", "w") as f:
        for s in m.studies:
            shapes = {
                n: {"kind": t.kind, "dtype": t.dtype, "n_cols": t.n_cols}
                for n, t in s.tables.items()
            }
            row = reader.study_fields(s) | {"cell_id_start": s.cell_id_start, "tables": shapes}
            f.write(json.dumps(row) + "\n")
    with open(out / "cellmeta.jsonl", "w") as f:
        for s in m.studies:
            _write_lines(f, _records(reader.study_obs(s, reserved=True)))
    with open(out / "gene.annotation.jsonl", "w") as f:
        for s in m.studies:
            var, gene_ids = reader.study_var(s)
            head = {_obs.STUDY_ID: s.study_id}
            var.insert(0, _obs.VAR_NAME, var.index.to_numpy())
            var.insert(0, _obs.GENE_ID, gene_ids)
            _write_lines(f, (head | r for r in _records(var)))
    for name in tables:
        with open(out / f"{name}.datatable.jsonl", "w") as f:
            _write_lines(f, _table_records(reader, name))
    files = sorted(p.name for p in out.iterdir())
    manifest = {
        "format": JSONL_FORMAT,
        "format_version": JSONL_VERSION,
        "source_generation": m.generation,
        "main_table": m.main_table,
        "next_cell_id": m.next_cell_id,
        "layout": m.layout.__dict__,
        "vocab_md5": md5_file(out / "gene.vocab.json"),
        "studies": [s.study_id for s in m.studies],
        "tables": tables,
        "files": {p: md5_file(out / p) for p in files},
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _table_records(reader: Reader, name: str) -> Iterator[dict[str, Any]]:
    """One record per stored row of a table, in cell id order."""
    for s in reader.manifest.studies:
        t = s.tables.get(name)
        if t is None:
            continue
        cols = ["gene_ids" if t.n_cols is None else "col_ids", "values"]
        for entry in t.files:
            assert entry.n_rows is not None
            part = reader.part(entry)
            rows = np.arange(entry.n_rows)
            _, lengths, flats = part.read_rows(rows, cols if t.kind == "sparse" else cols[1:])
            ends = np.cumsum(lengths)
            cell_ids = part.parquet.read(columns=["cell_id"])["cell_id"].to_numpy()
            values = [a.tolist() for a in flats]
            for i, cid in enumerate(cell_ids.tolist()):
                sl = slice(ends[i] - lengths[i], ends[i])
                if t.kind == "sparse":
                    yield {"id": cid, "genes": values[0][sl], "expressions": values[1][sl]}
                else:
                    yield {"id": cid, "values": values[0][sl]}


class _Lines:
    """Reads a ``.datatable.jsonl`` file in cell id order, one chunk of ids at a time."""

    def __init__(self, path: Path) -> None:
        self._f = open(path)
        self._next: dict[str, Any] | None = self._read()

    def _read(self) -> dict[str, Any] | None:
        line = self._f.readline()
        return json.loads(line) if line else None

    def upto(self, end: int) -> list[dict[str, Any]]:
        """Consume and return the records with ``id < end``."""
        out = []
        while self._next is not None and self._next["id"] < end:
            out.append(self._next)
            self._next = self._read()
        return out

    def close(self) -> None:
        self._f.close()


def read_jsonl_meta(src: Path) -> tuple[dict[str, Any], GeneVocab, list[dict[str, Any]]]:
    """Read and check the manifest, vocabulary and study table of an export."""
    try:
        meta = json.loads((src / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise InvalidInputError(f"{src}: not an scBank JSON-lines export ({e})") from e
    if meta.get("format") != JSONL_FORMAT or meta.get("format_version", 0) > JSONL_VERSION:
        raise InvalidInputError(f"{src}/manifest.json: unsupported format {meta.get('format')}")
    bad = [p for p, md5 in meta["files"].items() if md5_file(src / p) != md5]
    if bad:
        raise InvalidInputError(f"{src}: files differ from their MD5 in manifest.json: {bad}")
    vocab = GeneVocab.from_json((src / "gene.vocab.json").read_bytes(), "gene.vocab.json")
    with open(src / "studytable.jsonl") as f:
        studies = [json.loads(line) for line in f]
    return meta, vocab, studies


def import_studies(
    src: Path,
    root: Path,
    layout: Layout,
    vocab: GeneVocab,
    studies: list[dict[str, Any]],
    token: str,
    tracker: FileTracker,
) -> list[StudyEntry]:
    """Write every study of an export into the bank at ``root`` (ids kept as exported)."""
    cellmeta = open(src / "cellmeta.jsonl")
    annotation = open(src / "gene.annotation.jsonl")
    names = {n for s in studies for n in s["tables"]}
    lines = {n: _Lines(src / f"{n}.datatable.jsonl") for n in names}
    entries = []
    try:
        for study in studies:
            entries.append(
                _import_study(
                    root, layout, len(vocab), study, cellmeta, annotation, lines, token, tracker
                )
            )
    finally:
        cellmeta.close()
        annotation.close()
        for reader in lines.values():
            reader.close()
    return entries


def _frame(records: list[dict[str, Any]], index: str, specs: dict[str, Any]) -> pd.DataFrame:
    df = pd.DataFrame.from_records(records, columns=[index, *specs])
    out = _obs.restore(df.drop(columns=[index]), specs)
    out.index = pd.Index(df[index].astype(object))
    return out


def _import_study(
    root: Path,
    layout: Layout,
    n_vocab: int,
    study: dict[str, Any],
    cellmeta: IO[str],
    annotation: IO[str],
    lines: dict[str, _Lines],
    token: str,
    tracker: FileTracker,
) -> StudyEntry:
    sid, n, start = study["study_id"], study["n_cells"], study["cell_id_start"]
    obs = _frame(
        [json.loads(cellmeta.readline()) for _ in range(n)], _obs.OBS_NAME, study["obs_dtypes"]
    )
    obs.index.name = study["obs_index_name"]
    genes = [json.loads(annotation.readline()) for _ in range(study["n_genes"])]
    var = _frame(genes, _obs.VAR_NAME, study["var_dtypes"])
    var.index.name = study["var_index_name"]
    gene_ids = np.array([g[_obs.GENE_ID] for g in genes], dtype=np.int64)
    cell_ids = np.arange(start, start + n, dtype=np.int64)
    meta = cellmeta_table(obs, obs.index.to_numpy(), sid, cell_ids)
    with StudyWriter(root, layout, sid, token, tracker) as w:
        for lo, hi in chunks(n, 8 * layout.row_group_size, layout.row_group_size):
            w.cellmeta.write(meta.slice(lo, hi - lo))
            for name, shape in study["tables"].items():
                records = lines[name].upto(start + hi)
                if records:
                    writer = w.table(name, shape["kind"], shape["dtype"], shape["n_cols"])
                    writer.write(_rows_table(records, shape, n_vocab))
        fields = {k: v for k, v in study.items() if k not in ("cell_id_start", "tables")}
        return w.finish(fields, annotation_table(var, var.index.to_numpy(), gene_ids), start)


def _rows_table(records: list[dict[str, Any]], shape: dict[str, Any], n_vocab: int) -> pa.Table:
    """Arrow rows of a data table from its JSON records."""
    ids = np.array([r["id"] for r in records], dtype=np.int64)
    dtype = np.dtype(shape["dtype"])
    if shape["kind"] == "dense":
        values = np.array([r["values"] for r in records], dtype=dtype)
        return dense_table(ids, values.reshape(len(records), -1))
    indptr = np.cumsum([0] + [len(r["genes"]) for r in records])
    m = sp.csr_matrix(
        (
            np.array([v for r in records for v in r["expressions"]], dtype=dtype),
            np.array([g for r in records for g in r["genes"]], dtype=np.int64),
            indptr,
        ),
        shape=(len(records), shape["n_cols"] or n_vocab),
    )
    return sparse_table(ids, m, shape["n_cols"], dtype)
