"""The manifest: what one generation of a bank consists of, and its atomic commit."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._errors import CorruptBankError, ScBankError
from ._faults import pause_point

FORMAT_NAME = "scbank"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MANIFEST_DIR = "manifests"


@dataclass(frozen=True)
class FileEntry:
    """One immutable file of the bank.

    Attributes
    ----------
    path
        Path relative to the bank root (``/`` separated).
    md5
        Hex MD5 of the file's bytes.
    bytes
        File size.
    n_rows
        Rows (table files) or genes (vocabulary).
    cell_id_min, cell_id_max
        Range of the ``cell_id`` column (table files with cells).
    twin
        The uncompressed Arrow IPC copy of a data part, used for random access.
    """

    path: str
    md5: str
    bytes: int
    n_rows: int | None = None
    cell_id_min: int | None = None
    cell_id_max: int | None = None
    twin: FileEntry | None = None


@dataclass(frozen=True)
class TableEntry:
    """One data table (X, a layer or an obsm matrix) of one study.

    Attributes
    ----------
    kind
        ``"sparse"`` (cell id, indices[], values[]) or ``"dense"`` (cell id, values[]).
    dtype
        numpy dtype name of the values.
    n_cols
        Number of columns; ``None`` for sparse tables in gene space (indices are gene ids).
    files
        Part files, in cell id order.
    """

    kind: str
    dtype: str
    n_cols: int | None
    files: tuple[FileEntry, ...]


@dataclass(frozen=True)
class StudyEntry:
    """One study: a block of cells with consecutive cell ids and the files that hold it."""

    study_id: str
    n_cells: int
    cell_id_start: int
    n_genes: int
    study_file: FileEntry
    annotation_file: FileEntry
    cellmeta: tuple[FileEntry, ...]
    tables: dict[str, TableEntry]


@dataclass(frozen=True)
class Layout:
    """Physical layout settings, fixed when the bank is created.

    Attributes
    ----------
    row_group_size
        Cells per parquet row group (the unit of streaming and shuffling).
    part_size
        Cells per part file (a multiple of ``row_group_size``).
    random_access
        Whether data parts get an uncompressed Arrow IPC twin for fast random row reads.
    """

    row_group_size: int = 128
    part_size: int = 65536
    random_access: bool = True


@dataclass(frozen=True)
class Manifest:
    """One generation of a bank."""

    generation: int
    created_at: str
    layout: Layout
    next_cell_id: int
    vocab: FileEntry
    studies: tuple[StudyEntry, ...]
    history: tuple[dict[str, Any], ...]
    main_table: str = "X"
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION

    def study(self, study_id: str) -> StudyEntry:
        """Return the entry of ``study_id`` (KeyError naming the known ids if absent)."""
        for s in self.studies:
            if s.study_id == study_id:
                return s
        known = [s.study_id for s in self.studies]
        raise KeyError(f"no study {study_id!r} in generation {self.generation}; studies: {known}")

    def files(self) -> Iterator[FileEntry]:
        """Yield every file of this generation (twins included)."""
        yield self.vocab
        for s in self.studies:
            yield s.study_file
            yield s.annotation_file
            yield from s.cellmeta
            for t in s.tables.values():
                for f in t.files:
                    yield f
                    if f.twin is not None:
                        yield f.twin

    def next(self, operation: str, **details: Any) -> Manifest:
        """Return a copy for the next generation, with the operation logged in ``history``."""
        gen = self.generation + 1
        now = utc_now()
        entry = {"generation": gen, "time": now, "operation": operation, **details}
        return dataclasses.replace(
            self, generation=gen, created_at=now, history=(*self.history, entry)
        )

    def to_json(self) -> str:
        """Serialise to indented JSON."""
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Manifest:
        """Build from the parsed JSON of :meth:`to_json`."""
        studies = tuple(
            StudyEntry(
                study_id=s["study_id"],
                n_cells=s["n_cells"],
                cell_id_start=s["cell_id_start"],
                n_genes=s["n_genes"],
                study_file=_file(s["study_file"]),
                annotation_file=_file(s["annotation_file"]),
                cellmeta=tuple(_file(f) for f in s["cellmeta"]),
                tables={
                    name: TableEntry(
                        kind=t["kind"],
                        dtype=t["dtype"],
                        n_cols=t["n_cols"],
                        files=tuple(_file(f) for f in t["files"]),
                    )
                    for name, t in s["tables"].items()
                },
            )
            for s in d["studies"]
        )
        return cls(
            generation=d["generation"],
            created_at=d["created_at"],
            layout=Layout(**d["layout"]),
            next_cell_id=d["next_cell_id"],
            vocab=_file(d["vocab"]),
            studies=studies,
            history=tuple(d["history"]),
            main_table=d["main_table"],
            format=d["format"],
            format_version=d["format_version"],
        )


def _file(d: dict[str, Any]) -> FileEntry:
    twin = d.get("twin")
    return FileEntry(**{**d, "twin": _file(twin) if twin else None})


def utc_now() -> str:
    """Return the current UTC time, ISO 8601 with seconds."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def new_token() -> str:
    """Return a short random token that makes a writer's file names unique."""
    return uuid.uuid4().hex[:10]


def md5_bytes(data: bytes) -> str:
    """Hex MD5 of ``data``."""
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def md5_file(path: Path, block: int = 1 << 22) -> str:
    """Hex MD5 of a file, read in blocks."""
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a directory's entries (new or renamed files) durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durable(path: Path, data: bytes) -> None:
    """Write a new file and fsync it (the caller fsyncs the directory before committing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_replace(path: Path, data: bytes) -> None:
    """Replace ``path`` atomically: write a temporary file, fsync, ``os.replace``, fsync dir."""
    tmp = path.with_name(f".{path.name}.{new_token()}.tmp")
    write_durable(tmp, data)
    os.replace(tmp, path)
    fsync_dir(path.parent)


def generation_path(root: Path, generation: int) -> Path:
    """Where the manifest of ``generation`` is kept."""
    return root / MANIFEST_DIR / f"gen-{generation:06d}.json"


def commit(root: Path, manifest: Manifest) -> None:
    """Make ``manifest`` the current generation.

    The generation's own manifest is written first, then ``manifest.json`` is swapped
    atomically: a crash at any point leaves the previous generation current. A generation file
    left by a crashed writer is never current and is simply overwritten by the next commit.
    """
    data = manifest.to_json().encode()
    atomic_replace(generation_path(root, manifest.generation), data)
    pause_point("before-commit")
    atomic_replace(root / MANIFEST, data)


def load(root: Path, generation: int | None = None) -> Manifest:
    """Read the current manifest, or that of an earlier ``generation``.

    Raises
    ------
    ScBankError
        If ``root`` is not a bank, or the format version is newer than this scBank.
    CorruptBankError
        If the manifest cannot be parsed.
    """
    current = root / MANIFEST
    if not current.is_file():
        raise ScBankError(f"{root} is not an scBank (no {MANIFEST}); create one first")
    path = current if generation is None else generation_path(root, generation)
    if generation is not None and generation > load(root).generation:
        # a crashed writer may leave the file of a generation that was never committed
        raise ScBankError(f"generation {generation} of {root} was never committed")
    try:
        d = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ScBankError(
            f"generation {generation} of {root} is not available (never committed, or removed "
            "by vacuum()); see DataBank.history"
        ) from None
    except (OSError, ValueError) as e:
        rel = path.relative_to(root).as_posix()
        raise CorruptBankError(f"{rel}: cannot parse manifest ({e})", (rel,)) from e
    if d.get("format") != FORMAT_NAME:
        raise ScBankError(f"{path} is not an scBank manifest")
    if d.get("format_version", 0) > FORMAT_VERSION:
        raise ScBankError(
            f"{root} uses scBank format version {d['format_version']}; this scbank reads up "
            f"to version {FORMAT_VERSION}: upgrade the scbank package"
        )
    m = Manifest.from_dict(d)
    if generation is not None and m.generation != generation:
        rel = path.relative_to(root).as_posix()
        raise CorruptBankError(f"{rel} holds generation {m.generation}", (rel,))
    return m


@dataclass
class FileTracker:
    """The files a writer creates, so that a failed write can remove them again."""

    root: Path
    created: list[Path] = field(default_factory=list)

    def add(self, path: Path) -> Path:
        """Record ``path`` (absolute) as created by this writer and return it."""
        self.created.append(path)
        return path

    def sync_dirs(self) -> None:
        """Fsync every directory that received a file (before the manifest commit)."""
        for d in sorted({p.parent for p in self.created}):
            fsync_dir(d)

    def remove_all(self) -> None:
        """Best-effort removal after a failed write (a crash leaves them for vacuum())."""
        for p in self.created:
            p.unlink(missing_ok=True)
