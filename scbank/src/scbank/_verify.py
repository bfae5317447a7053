"""Integrity check of one generation: every file's size, MD5, schema and row count."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from . import _obs
from ._errors import CorruptBankError
from ._manifest import MANIFEST, FileEntry, Manifest, generation_path, md5_file
from ._tables import data_schema
from ._vocab import read_vocab


@dataclass
class VerifyReport:
    """Result of :meth:`DataBank.verify`.

    Attributes
    ----------
    generation
        The generation checked.
    n_files
        Number of files checked.
    problems
        ``(path, message)`` for every problem found; paths are relative to the bank root.
    """

    generation: int
    n_files: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    @property
    def bad_files(self) -> list[str]:
        """The paths named by problems, without repeats."""
        return list(dict.fromkeys(p for p, _ in self.problems))

    def __str__(self) -> str:
        head = f"generation {self.generation}: {self.n_files} files checked, "
        if self.ok:
            return head + "all OK"
        lines = [head + f"{len(self.bad_files)} bad file(s):"]
        lines += [f"  {path}: {msg}" for path, msg in self.problems]
        return "\n".join(lines)

    def raise_if_bad(self) -> None:
        """Raise :class:`CorruptBankError` naming every bad file if there is a problem."""
        if not self.ok:
            raise CorruptBankError(str(self), tuple(self.bad_files))


def verify(root: Path, manifest: Manifest, current: bool) -> VerifyReport:
    """Check every file of ``manifest`` (see :meth:`DataBank.verify`)."""
    report = VerifyReport(manifest.generation)
    bad = report.problems
    if current:
        gen_file = generation_path(root, manifest.generation)
        if not gen_file.is_file() or gen_file.read_bytes() != (root / MANIFEST).read_bytes():
            bad.append((gen_file.relative_to(root).as_posix(), f"differs from {MANIFEST}"))
    expected: dict[str, tuple[str, pa.Schema | None]] = {}
    for s in manifest.studies:
        expected[s.study_file.path] = ("study", None)
        expected[s.annotation_file.path] = ("annotation", None)
        expected.update((f.path, ("cellmeta", None)) for f in s.cellmeta)
        _check_counts(s.study_id, s.n_cells, s.cell_id_start, "cellmeta", s.cellmeta, bad)
        for name, t in s.tables.items():
            schema = data_schema(t.kind, np.dtype(t.dtype), t.n_cols)
            for f in t.files:
                expected[f.path] = ("data", schema)
                if f.twin is not None:
                    expected[f.twin.path] = ("twin", schema)
            if name == manifest.main_table or name.startswith("layers."):
                _check_counts(s.study_id, s.n_cells, s.cell_id_start, name, t.files, bad)
    for entry in manifest.files():
        report.n_files += 1
        message = _check_file(root, entry, *expected.get(entry.path, ("vocab", None)))
        if message:
            bad.append((entry.path, message))
    return report


def _check_counts(
    study: str,
    n_cells: int,
    start: int,
    what: str,
    files: tuple[FileEntry, ...],
    bad: list[tuple[str, str]],
) -> None:
    """Tables that hold every cell of a study must add up to it, in its cell id range."""
    rows = sum(f.n_rows or 0 for f in files)
    in_range = all(
        f.cell_id_min is not None
        and f.cell_id_max is not None
        and start <= f.cell_id_min <= f.cell_id_max < start + n_cells
        for f in files
    )
    if rows != n_cells or not in_range:
        path = files[0].path if files else f"<{what} of study {study}>"
        bad.append((path, f"{what} of study {study!r}: {rows} rows for {n_cells} cells"))


def _check_file(root: Path, entry: FileEntry, role: str, schema: pa.Schema | None) -> str:
    """Problem with one file, or '' if it is fine."""
    path = root / entry.path
    if not path.is_file():
        return "file is missing"
    size = path.stat().st_size
    if size != entry.bytes:
        return f"{size} bytes on disk, the manifest says {entry.bytes} (truncated or modified)"
    if md5_file(path) != entry.md5:
        return "MD5 differs from the manifest (corrupted or modified)"
    try:
        if role == "vocab":
            n = len(read_vocab(root, entry))
        elif role == "twin":
            reader = pa.ipc.open_file(pa.memory_map(str(path), "r"))
            found, n = (
                reader.schema,
                sum(reader.get_batch(i).num_rows for i in range(reader.num_record_batches)),
            )
            if not found.equals(schema):
                return f"schema {found} differs from the expected {schema}"
        else:
            md = pq.ParquetFile(path).metadata
            n = md.num_rows
            names = md.schema.to_arrow_schema().names
            found = md.schema.to_arrow_schema().remove_metadata()
            if schema is not None and not found.equals(schema):
                return f"schema {found} differs from the expected {schema}"
            need = {"cellmeta": _obs.RESERVED_OBS, "annotation": _obs.RESERVED_VAR}.get(role, ())
            if any(c not in names for c in need):
                return f"missing column(s) {[c for c in need if c not in names]}"
    except (OSError, pa.ArrowException, CorruptBankError) as e:
        return f"cannot be read ({e})"
    if entry.n_rows is not None and n != entry.n_rows:
        return f"{n} rows, the manifest says {entry.n_rows}"
    return ""
