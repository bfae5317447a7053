"""Table files: parquet parts (zstd, checksummed pages) and their Arrow IPC random-access twins.

A data part is written twice when the bank's layout asks for random access: as parquet (the
compact, checksummed copy, read for streaming) and as an uncompressed Arrow IPC file that is
memory-mapped, so that reading one row costs a few page faults instead of decoding a whole
parquet row group.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from ._errors import CorruptBankError
from ._faults import pause_point
from ._manifest import FileEntry, FileTracker, Layout
from ._rows import gather

_INT32_MAX = np.iinfo(np.int32).max


def index_column(n_cols: int | None) -> str:
    """Name of the indices column of a sparse table (gene ids in gene space)."""
    return "gene_ids" if n_cols is None else "col_ids"


def data_schema(kind: str, dtype: np.dtype, n_cols: int | None) -> pa.Schema:
    """Return the schema of a data table: sparse or dense rows keyed by ``cell_id``."""
    fields = [pa.field("cell_id", pa.int64())]
    if kind == "sparse":
        fields.append(pa.field(index_column(n_cols), pa.list_(pa.int32())))
    fields.append(pa.field("values", pa.list_(pa.from_numpy_dtype(dtype))))
    return pa.schema(fields)


def sparse_table(
    cell_ids: np.ndarray, matrix: sp.csr_matrix, n_cols: int | None, dtype: np.dtype
) -> pa.Table:
    """Sparse rows ``(cell_id, <indices>[], values[])`` of a CSR matrix."""
    if matrix.nnz > _INT32_MAX:
        raise ValueError("chunk too large: more than 2**31 non-zeros; use a smaller chunk_size")
    offsets = pa.array(matrix.indptr.astype(np.int32))
    columns = [
        pa.array(cell_ids, pa.int64()),
        pa.ListArray.from_arrays(offsets, pa.array(matrix.indices.astype(np.int32, copy=False))),
        pa.ListArray.from_arrays(offsets, pa.array(matrix.data.astype(dtype, copy=False))),
    ]
    return pa.Table.from_arrays(columns, schema=data_schema("sparse", dtype, n_cols))


def dense_table(cell_ids: np.ndarray, values: np.ndarray) -> pa.Table:
    """Dense rows ``(cell_id, values[])`` of a 2-d array."""
    n, d = values.shape
    offsets = pa.array(np.arange(n + 1, dtype=np.int64) * d, pa.int32())
    flat = pa.array(np.ascontiguousarray(values).reshape(-1))
    columns = [pa.array(cell_ids, pa.int64()), pa.ListArray.from_arrays(offsets, flat)]
    return pa.Table.from_arrays(columns, schema=data_schema("dense", values.dtype, d))


class _HashingFile:
    """A write-only file object that hashes what passes through (one pass, no re-read)."""

    def __init__(self, path: Path) -> None:
        self._f = open(path, "xb")
        self._md5 = hashlib.md5(usedforsecurity=False)
        self.size = 0

    def write(self, data: bytes) -> int:
        self._md5.update(data)
        self.size += len(data)
        return self._f.write(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self._f.flush()

    @property
    def closed(self) -> bool:
        return self._f.closed

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def entry(self, rel: str, **kw: int | None) -> FileEntry:
        return FileEntry(path=rel, md5=self._md5.hexdigest(), bytes=self.size, **kw)


class _OpenPart:
    """One part being written: parquet, plus the IPC twin of a data part if the layout asks."""

    def __init__(
        self, root: Path, rel: str, schema: pa.Schema, data: bool, twin: bool, tracker: FileTracker
    ):
        self.rel = rel
        self.rows = 0
        self.cell_ids: list[tuple[int, int]] = []
        path = tracker.add(root / rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.pq_file = _HashingFile(path)
        self.pq = pq.ParquetWriter(
            pa.PythonFile(self.pq_file, mode="w"),
            schema,
            compression="zstd",
            write_page_checksum=True,
            write_statistics=["cell_id"],
            # dictionaries help categorical metadata; for gene ids and counts they cost
            # space and time (measured: 10% larger, 30% slower to read)
            use_dictionary=not data,
        )
        self.ipc_file: _HashingFile | None = None
        self.ipc: pa.ipc.RecordBatchFileWriter | None = None
        if twin:
            self.ipc_file = _HashingFile(tracker.add(root / twin_path(rel)))
            self.ipc = pa.ipc.new_file(pa.PythonFile(self.ipc_file, mode="w"), schema)

    def write(self, table: pa.Table, row_group_size: int) -> None:
        self.pq.write_table(table, row_group_size=row_group_size)
        if self.ipc is not None:
            self.ipc.write_table(table)
        ids = table.column("cell_id").to_numpy()
        self.cell_ids.append((int(ids.min()), int(ids.max())))
        self.rows += table.num_rows

    def close_files(self) -> None:
        """Finish and close the files (also when aborting: the tracker deletes them)."""
        self.pq.close()
        self.pq_file.close()
        if self.ipc is not None and self.ipc_file is not None:
            self.ipc.close()
            self.ipc_file.close()

    def close(self) -> FileEntry:
        self.close_files()
        twin = self.ipc_file.entry(twin_path(self.rel)) if self.ipc_file is not None else None
        lo = min(a for a, _ in self.cell_ids)
        hi = max(b for _, b in self.cell_ids)
        entry = self.pq_file.entry(self.rel, n_rows=self.rows, cell_id_min=lo, cell_id_max=hi)
        pause_point("part-written")
        return dataclasses.replace(entry, twin=twin)


def twin_path(rel: str) -> str:
    """Path of the Arrow IPC twin of a parquet part."""
    return rel.removesuffix(".parquet") + ".arrow"


class PartWriter:
    """Writes one table of one study as part files of ``layout.part_size`` rows.

    Row groups have ``layout.row_group_size`` rows as long as every ``write`` gets a multiple
    of it (the last row group of a part may be shorter).

    Parameters
    ----------
    root
        Bank directory.
    directory
        Directory of the parts, relative to ``root``.
    token
        Unique token of this write (part names are ``part-<token>-<k>.parquet``).
    layout
        The bank's layout (with ``random_access``, data parts get Arrow IPC twins).
    tracker
        Records created files for cleanup on failure.
    data
        A data table (X, layer, obsm) rather than cell metadata.
    """

    def __init__(
        self,
        root: Path,
        directory: str,
        token: str,
        layout: Layout,
        tracker: FileTracker,
        data: bool = True,
    ) -> None:
        self._root, self._dir, self._token = root, directory, token
        self._layout, self._data, self._tracker = layout, data, tracker
        self._done: list[FileEntry] = []
        self._part: _OpenPart | None = None

    def write(self, table: pa.Table) -> None:
        """Append rows (sorted by ``cell_id``, after all rows written so far)."""
        pos = 0
        while pos < table.num_rows:
            if self._part is None:
                rel = f"{self._dir}/part-{self._token}-{len(self._done):05d}.parquet"
                twin = self._data and self._layout.random_access
                self._part = _OpenPart(
                    self._root, rel, table.schema, self._data, twin, self._tracker
                )
            take = min(table.num_rows - pos, self._layout.part_size - self._part.rows)
            self._part.write(table.slice(pos, take), self._layout.row_group_size)
            pos += take
            if self._part.rows == self._layout.part_size:
                self._done.append(self._part.close())
                self._part = None

    def close(self) -> tuple[FileEntry, ...]:
        """Finish the last part and return the entries of all parts."""
        if self._part is not None:
            self._done.append(self._part.close())
            self._part = None
        return tuple(self._done)

    def abort(self) -> None:
        """Close an unfinished part's files after a failure (its file tracker deletes them)."""
        if self._part is not None:
            self._part.close_files()
            self._part = None

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is not None:
            self.abort()


def write_table_file(root: Path, rel: str, table: pa.Table, tracker: FileTracker) -> FileEntry:
    """Write a small single-file parquet table (study row, gene annotation)."""
    path = tracker.add(root / rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    f = _HashingFile(path)
    pq.write_table(table, pa.PythonFile(f, mode="w"), compression="zstd", write_page_checksum=True)
    f.close()
    return f.entry(rel, n_rows=table.num_rows)


@contextmanager
def reading(rel: str) -> Iterator[None]:
    """Turn I/O and decoding errors into a :class:`CorruptBankError` that names the file."""
    try:
        yield
    except (OSError, pa.ArrowException) as e:
        raise CorruptBankError(
            f"{rel}: cannot be read ({e}); run `scbank verify` (DataBank.verify()) for a full "
            "report",
            (rel,),
        ) from e


def check_size(root: Path, entry: FileEntry) -> Path:
    """Return the absolute path of ``entry`` after checking it exists with the recorded size."""
    path = root / entry.path
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise CorruptBankError(f"{entry.path}: file is missing", (entry.path,)) from None
    if size != entry.bytes:
        raise CorruptBankError(
            f"{entry.path}: {size} bytes on disk, the manifest says {entry.bytes} (truncated or "
            "modified); run `scbank verify` for a full report",
            (entry.path,),
        )
    return path


def read_table_file(root: Path, entry: FileEntry, columns: list[str] | None = None) -> pa.Table:
    """Read a whole parquet file of the bank (size checked, page checksums verified)."""
    path = check_size(root, entry)
    with reading(entry.path):
        return pq.read_table(path, columns=columns, page_checksum_verification=True)


def list_columns(
    table: pa.Table | pa.RecordBatch, columns: list[str]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Offsets and flat values of list columns that share their offsets."""
    arrays = []
    for name in columns:
        col = table.column(name)
        if isinstance(col, pa.ChunkedArray):
            col = pa.concat_arrays(col.chunks) if col.num_chunks != 1 else col.chunk(0)
        arrays.append(col)
    offsets = arrays[0].offsets.to_numpy()
    return offsets, [a.values.to_numpy(zero_copy_only=False) for a in arrays]


class PartFile:
    """Reads rows of one part file, from its IPC twin if there is one, else from parquet.

    Parameters
    ----------
    root
        Bank directory.
    entry
        The part's manifest entry.
    """

    def __init__(self, root: Path, entry: FileEntry) -> None:
        self.root, self.entry = root, entry
        self._pf: pq.ParquetFile | None = None
        self._rg_starts: np.ndarray | None = None
        self._twin: _Twin | None = None
        self._cell_ids: np.ndarray | None = None

    @property
    def parquet(self) -> pq.ParquetFile:
        """The parquet file, opened on first use."""
        if self._pf is None:
            path = check_size(self.root, self.entry)
            with reading(self.entry.path):
                self._pf = pq.ParquetFile(path, page_checksum_verification=True)
                md = self._pf.metadata
                sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
            if md.num_rows != self.entry.n_rows:
                raise CorruptBankError(
                    f"{self.entry.path}: {md.num_rows} rows, the manifest says {self.entry.n_rows}",
                    (self.entry.path,),
                )
            self._rg_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        return self._pf

    def local_rows(self, cell_ids: np.ndarray) -> np.ndarray:
        """Rows of ``cell_ids`` in this file; -1 where a cell has no row here."""
        e = self.entry
        assert e.cell_id_min is not None
        assert e.cell_id_max is not None
        assert e.n_rows is not None
        if e.cell_id_max - e.cell_id_min + 1 == e.n_rows:  # every cell of the range: arithmetic
            rows = cell_ids - e.cell_id_min
            return np.where((rows >= 0) & (rows < e.n_rows), rows, -1)
        if self._cell_ids is None:
            with reading(e.path):
                self._cell_ids = self.parquet.read(columns=["cell_id"])["cell_id"].to_numpy()
        pos = np.searchsorted(self._cell_ids, cell_ids).clip(0, e.n_rows - 1)
        return np.where(self._cell_ids[pos] == cell_ids, pos, -1)

    def read_rows(
        self, rows: np.ndarray, columns: list[str]
    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
        """Read rows of list columns.

        Returns
        -------
        order
            Position in ``rows`` of each gathered row (parquet gathers in file order).
        lengths
            Entries per gathered row.
        flats
            Each column's gathered entries, concatenated.
        """
        if self.entry.twin is not None:
            if self._twin is None:
                path = check_size(self.root, self.entry.twin)
                self._twin = _Twin(path, self.entry.twin.path, self.entry.n_rows or 0)
            return np.arange(len(rows)), *self._twin.gather(rows, columns)
        order = np.argsort(rows, kind="stable")
        srows = rows[order]
        pf = self.parquet
        assert self._rg_starts is not None
        rg = np.searchsorted(self._rg_starts, srows, side="right") - 1
        wanted, first = np.unique(rg, return_index=True)
        with reading(self.entry.path):
            table = pf.read_row_groups(wanted.tolist(), columns=columns, use_threads=False)
        offsets, arrays = list_columns(table, columns)
        # Row r of row group g sits at (rows read before g) + (r - start of g).
        sizes = self._rg_starts[wanted + 1] - self._rg_starts[wanted]
        before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
        local = before[np.repeat(np.arange(len(wanted)), np.diff(np.append(first, len(srows))))]
        local = local + srows - self._rg_starts[rg]
        return order, *_gather_checked(offsets, arrays, local, self.entry.path)

    def read_row_group(self, index: int, columns: list[str]) -> pa.Table:
        """Read one parquet row group (the unit of streaming)."""
        pf = self.parquet
        with reading(self.entry.path):
            return pf.read_row_group(index, columns=columns, use_threads=False)


class _Twin:
    """A memory-mapped Arrow IPC twin, read row by row without touching other rows.

    All record batches lie in one mapping. Each list column is addressed through a numpy view
    of the whole file plus the element offset of its buffers in each record batch, so gathering
    rows from many batches is one vectorized numpy operation.
    """

    def __init__(self, path: Path, rel: str, n_rows: int) -> None:
        self._rel = rel
        with reading(rel):
            self._whole = pa.memory_map(str(path), "r").read_buffer()
            reader = pa.ipc.open_file(self._whole)
            batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        sizes = [b.num_rows for b in batches]
        if sum(sizes) != n_rows:
            raise CorruptBankError(f"{rel}: {sum(sizes)} rows, the manifest says {n_rows}", (rel,))
        self._starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self._views: dict[np.dtype, np.ndarray] = {}
        self._columns: dict[str, tuple[np.dtype, np.ndarray]] = {}
        lists = [f.name for f in reader.schema if pa.types.is_list(f.type)]
        for name in lists:
            dtype = np.dtype(reader.schema.field(name).type.value_type.to_pandas_dtype())
            bases = [self._element(b.column(name).buffers()[3], dtype) for b in batches]
            self._columns[name] = (dtype, np.array(bases, dtype=np.int64))
        # list columns of a table share their offsets: address the first one's
        offsets = [
            self._element(b.column(lists[0]).buffers()[1], np.dtype(np.int32)) for b in batches
        ]
        self._offsets = np.array(offsets, dtype=np.int64)

    def _element(self, buf: pa.Buffer | None, dtype: np.dtype) -> int:
        """Index of a buffer's first element in a ``dtype`` view of the whole file."""
        if buf is None or buf.size == 0:
            return 0  # an empty buffer is never indexed
        delta = buf.address - self._whole.address
        if delta % dtype.itemsize or not 0 <= delta < self._whole.size:
            raise CorruptBankError(f"{self._rel}: misplaced buffer in the IPC file", (self._rel,))
        return delta // dtype.itemsize

    def _view(self, dtype: np.dtype) -> np.ndarray:
        if dtype not in self._views:
            count = self._whole.size // dtype.itemsize
            self._views[dtype] = np.frombuffer(self._whole, dtype=dtype, count=count)
        return self._views[dtype]

    def gather(self, rows: np.ndarray, columns: list[str]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Entries per row and each column's concatenated entries, in the order of ``rows``."""
        batch = np.searchsorted(self._starts, rows, side="right") - 1
        try:
            pos = self._offsets[batch] + rows - self._starts[batch]
            offsets = self._view(np.dtype(np.int32))
            start = offsets[pos].astype(np.int64)
            lengths = offsets[pos + 1] - start
            ends = np.cumsum(lengths)
            within = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths)
            flats = []
            for name in columns:
                dtype, bases = self._columns[name]
                flats.append(self._view(dtype)[np.repeat(bases[batch] + start, lengths) + within])
        except (IndexError, ValueError) as e:  # offsets that point outside the file
            raise CorruptBankError(f"{self._rel}: corrupt offsets ({e})", (self._rel,)) from e
        return lengths, flats


def _gather_checked(
    offsets: np.ndarray, arrays: list[np.ndarray], rows: np.ndarray, rel: str
) -> tuple[np.ndarray, list[np.ndarray]]:
    if any(len(a) != offsets[-1] for a in arrays):
        raise CorruptBankError(f"{rel}: list columns disagree in length", (rel,))
    return gather(offsets, arrays, rows)
