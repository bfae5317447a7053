"""DataBank: the public handle of a bank (create/open, append/remove, read, stream, verify)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd

from . import _jsonl, _manifest
from ._errors import InvalidInputError, ScBankError
from ._ingest import Source, chunks, ingest, layer_table, obsm_table
from ._lock import WriterLock
from ._manifest import FileTracker, Layout, Manifest, TableEntry
from ._reader import Reader
from ._rows import normalize_index
from ._stream import iter_batches
from ._tables import PartWriter, dense_table
from ._validate import check_name
from ._verify import VerifyReport, verify
from ._view import BankView, LazyMatrix, TableMapping, lazy_anndata, study_view
from ._vocab import GeneVocab, write_vocab

#: Directories holding generation-owned files (what vacuum() may collect).
_DATA_DIRS = ("vocab", "studies", "annotation", "cellmeta", "tables")

_Op = Callable[[Manifest, FileTracker, str], Manifest]


class DataBank:
    """An on-disk, append-only store of single-cell studies (see ``FORMAT.md``).

    Create one with :meth:`create` or open one with :meth:`open`. A handle reads one
    generation: appends by other handles or processes become visible only after opening the
    bank again. Every write takes the bank's writer lock, starts from the newest generation,
    writes new files and commits a new generation by an atomic swap of ``manifest.json``.

    Reading follows AnnData: ``bank.obs``, ``bank.var``, ``bank.X[rows]`` (CSR, float32, in the
    union gene space), ``bank.layers[name][rows]``, ``bank.obsm[name][rows]``, ``bank[rows]``
    (a lazy :class:`BankView`), ``bank.study(study_id)`` and ``bank.to_anndata()``.
    """

    def __init__(self, root: Path, manifest: Manifest, mode: str, lock_timeout: float) -> None:
        self._root, self._mode, self._lock_timeout = root, mode, lock_timeout
        self._reader = Reader(root, manifest)

    # --- lifecycle ---------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        row_group_size: int = 128,
        part_size: int = 65536,
        random_access: bool = True,
        lock_timeout: float = 10.0,
    ) -> DataBank:
        """Create an empty bank (generation 1) and open it for appending.

        Parameters
        ----------
        path
            A new or empty directory (by convention named ``*.scb``).
        row_group_size
            Cells per parquet row group: the unit of streaming and shuffling.
        part_size
            Cells per part file; a multiple of ``row_group_size``.
        random_access
            Also write an uncompressed Arrow IPC twin of each data part, memory-mapped for
            fast random row reads (about 3x the disk space of the zstd parquet). Without it,
            random reads decode a whole row group per row.
        lock_timeout
            Seconds a write waits for another writer.

        Returns
        -------
        DataBank
            The new bank, in mode ``"a"``.
        """
        root = Path(path)
        if root.exists() and any(root.iterdir()):
            raise ScBankError(f"{root} exists and is not empty; create a bank in a new directory")
        if row_group_size < 1 or part_size < row_group_size or part_size % row_group_size:
            raise ValueError("part_size must be a positive multiple of row_group_size")
        root.mkdir(parents=True, exist_ok=True)
        layout = Layout(row_group_size, part_size, random_access)
        with WriterLock(root, lock_timeout):
            tracker, token = FileTracker(root), _manifest.new_token()
            now = _manifest.utc_now()
            manifest = Manifest(
                generation=1,
                created_at=now,
                layout=layout,
                next_cell_id=0,
                vocab=write_vocab(root, GeneVocab(), token, tracker),
                studies=(),
                history=({"generation": 1, "time": now, "operation": "create"},),
            )
            tracker.sync_dirs()
            _manifest.commit(root, manifest)
        return cls(root, manifest, "a", lock_timeout)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        mode: str = "r",
        generation: int | None = None,
        lock_timeout: float = 10.0,
    ) -> DataBank:
        """Open a bank.

        Parameters
        ----------
        path
            The bank directory.
        mode
            ``"r"`` (read) or ``"a"`` (read and write).
        generation
            Open this earlier generation (read-only) instead of the current one.
        lock_timeout
            Seconds a write waits for another writer before raising
            :class:`~scbank.BankLockedError`.
        """
        if mode not in ("r", "a"):
            raise ValueError(f"mode must be 'r' or 'a', got {mode!r}")
        if generation is not None and mode != "r":
            raise ValueError("earlier generations are read-only: open them with mode='r'")
        root = Path(path)
        return cls(root, _manifest.load(root, generation), mode, lock_timeout)

    def __getstate__(self) -> dict[str, Any]:
        # Pickles (e.g. to DataLoader workers) as a read-only handle on the same generation.
        return {"root": self._root, "generation": self.generation, "timeout": self._lock_timeout}

    def __setstate__(self, state: dict[str, Any]) -> None:
        manifest = _manifest.load(state["root"], state["generation"])
        self.__init__(state["root"], manifest, "r", state["timeout"])  # type: ignore[misc]

    def __repr__(self) -> str:
        ids = [s.study_id for s in self._manifest.studies]
        shown = ids[:5] + (["..."] if len(ids) > 5 else [])
        return (
            f"DataBank({str(self._root)!r}, generation={self.generation}, mode={self._mode!r}) "
            f"with n_obs x n_vars = {self.n_obs} x {self.n_vars}\n"
            f"    studies: {shown}\n    tables: {self._reader.table_names()}"
        )

    # --- properties --------------------------------------------------------------------------

    @property
    def _manifest(self) -> Manifest:
        return self._reader.manifest

    @property
    def path(self) -> Path:
        """The bank directory."""
        return self._root

    @property
    def generation(self) -> int:
        """The generation this handle reads."""
        return self._manifest.generation

    @property
    def layout(self) -> Layout:
        """Physical layout settings."""
        return self._manifest.layout

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return self._reader.n_obs

    @property
    def n_vars(self) -> int:
        """Number of genes in the union vocabulary (including genes of removed studies)."""
        return self._manifest.vocab.n_rows or 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_obs, n_vars)``."""
        return self.n_obs, self.n_vars

    @property
    def obs(self) -> pd.DataFrame:
        """Cell metadata: ``cell_id``, ``study_id``, ``obs_name``, then every obs column.

        The index is ``"<study_id>:<obs_name>"`` (unique even when barcodes repeat across
        studies). Categorical columns merge their categories across studies; columns a study
        lacks are missing values for its cells.
        """
        return self._reader.obs

    @property
    def var(self) -> pd.DataFrame:
        """The union gene space: ``gene_id`` (= column of X) and ``n_studies``, by gene name."""
        return self._reader.var

    @property
    def var_names(self) -> pd.Index:
        """Gene names, in gene id (column) order."""
        return self.var.index

    @property
    def studies(self) -> pd.DataFrame:
        """One row per study: size, cell id range, tables, HVGs, cell types, ``uns``."""
        return self._reader.studies()

    @property
    def history(self) -> pd.DataFrame:
        """Every committed generation: operation, time, details, and whether it can be opened."""
        df = pd.DataFrame(list(self._manifest.history))
        df["available"] = [
            _manifest.generation_path(self._root, g).is_file() for g in df["generation"]
        ]
        return df.set_index("generation")

    @property
    def X(self) -> LazyMatrix:
        """Lazy counts matrix: ``bank.X[rows]`` -> CSR float32 over all genes.

        Use ``bank.X.subset_genes(names)[rows]`` for chosen genes (absent genes read as 0).
        """
        return LazyMatrix(self._reader, self._manifest.main_table)

    @property
    def layers(self) -> TableMapping:
        """Lazy layers: ``bank.layers[name][rows]`` -> CSR float32 (like :attr:`X`)."""
        return TableMapping(self._reader, "layers.")

    @property
    def obsm(self) -> TableMapping:
        """Lazy obsm tables: ``bank.obsm[name][rows]`` -> ndarray (dense) or CSR (sparse)."""
        return TableMapping(self._reader, "obsm.")

    # --- reading -----------------------------------------------------------------------------

    def __getitem__(self, rows: Any) -> BankView:
        """Return a lazy view of cells (int, slice, int array or boolean mask over ``obs``)."""
        return BankView(self._reader, normalize_index(rows, self.n_obs))

    def study(self, study_id: str) -> BankView:
        """Return a lazy view of one study in its own genes, with its original obs, var and uns.

        ``bank.study(sid).to_memory()`` gives back the AnnData that was appended.
        """
        return study_view(self._reader, study_id)

    def to_anndata(self, lazy: bool = True) -> ad.AnnData:
        """Return the whole bank as an AnnData.

        Parameters
        ----------
        lazy
            If True, obs and var are in memory and X (and every layer that all studies have)
            is a :class:`LazyMatrix`, an ``anndata.abc.CSRDataset``: subsetting the AnnData
            (``adata[mask]``) reads only the selected rows, and scanpy can use obs/var.
            Operations that need the whole matrix (``sc.pp.*`` on X) need
            ``adata[subset].to_memory()`` first. If False, everything is loaded.
        """
        return lazy_anndata(self._reader) if lazy else self[:].to_memory()

    def iter_batches(
        self,
        batch_size: int = 128,
        *,
        shuffle: bool = True,
        seed: int = 0,
        epoch: int = 0,
        rank: int = 0,
        world_size: int = 1,
        worker_id: int = 0,
        num_workers: int = 1,
        columns: Sequence[str] = (),
        genes: Sequence[str] | None = None,
        layer: str | None = None,
        buffer_size: int = 8192,
        drop_last: bool = False,
    ) -> Iterator[dict[str, Any]]:
        """Stream minibatches of cells with bounded memory.

        Part files are visited in a seeded random order, in windows of 8 parts whose row
        groups are interleaved at random; rows pass through a buffer of about ``buffer_size``
        cells that is shuffled before batches are cut. The epoch's cell stream is split into
        ``world_size * num_workers`` contiguous, disjoint shards whose sizes differ by at most
        one cell; together they hold every cell exactly once. The order depends only on
        ``seed``, ``epoch``, the shard and the sizes, never on timing. Memory is bounded by
        the buffer and the footers of one window of part files, whatever the bank's size.

        Parameters
        ----------
        batch_size
            Cells per batch; a shard's last batch may be smaller (unless ``drop_last``).
        shuffle
            If False, cells come in bank order (row groups in order, no buffer shuffle).
        seed, epoch
            Seed the order; use a new ``epoch`` each epoch.
        rank, world_size
            The DDP process and the number of processes.
        worker_id, num_workers
            The dataloader worker within the process, and the number of workers.
        columns
            obs columns to return (e.g. ``("study_id", "cell_type")``); categoricals carry the
            bank-wide categories, so codes are stable across batches.
        genes
            Gene names to return, in that order (default: the whole vocabulary).
        layer
            Stream this layer instead of X.
        buffer_size
            Cells held for shuffling (memory grows with it).
        drop_last
            Drop each shard's last incomplete batch.

        Yields
        ------
        dict
            ``"X"``: CSR float32 (cells x genes), ``"obs"``: DataFrame of ``columns``,
            ``"cell_id"``: int64 global cell ids.
        """
        return iter_batches(
            self._reader,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            rank=rank,
            world_size=world_size,
            worker_id=worker_id,
            num_workers=num_workers,
            columns=columns,
            genes=genes,
            table=layer_table(layer) if layer else self._manifest.main_table,
            buffer_size=buffer_size,
            drop_last=drop_last,
        )

    def verify(self, raise_on_error: bool = True) -> VerifyReport:
        """Check every file of this generation: presence, size, MD5, schema and row counts.

        Parameters
        ----------
        raise_on_error
            Raise :class:`~scbank.CorruptBankError` (naming every bad file) on a problem;
            otherwise just return the report.
        """
        current = _manifest.load(self._root).generation == self.generation
        report = verify(self._root, self._manifest, current)
        if raise_on_error:
            report.raise_if_bad()
        return report

    def export_jsonl(self, directory: str | os.PathLike[str]) -> None:
        """Write this generation in the human-readable JSON-lines layout (see ``FORMAT.md``)."""
        _jsonl.export_jsonl(self._reader, Path(directory))

    # --- writing -----------------------------------------------------------------------------

    def _transact(self, op: _Op) -> None:
        """Run ``op`` on the newest generation under the writer lock and commit its result."""
        if self._mode != "a":
            raise ScBankError("this bank was opened read-only; use DataBank.open(path, mode='a')")
        with WriterLock(self._root, self._lock_timeout):
            latest = _manifest.load(self._root)  # another writer may have committed meanwhile
            tracker = FileTracker(self._root)
            try:
                new = op(latest, tracker, _manifest.new_token())
                tracker.sync_dirs()
            except BaseException:
                tracker.remove_all()  # nothing refers to them; a crash leaves them to vacuum()
                raise
            _manifest.commit(self._root, new)
        self._reader = Reader(self._root, new)

    def append_anndata(
        self,
        data: ad.AnnData | str | os.PathLike[str],
        study_id: str,
        *,
        layers: Sequence[str] | None = None,
        obsm: Sequence[str] | None = None,
        chunk_size: int = 8192,
        cell_type_key: str | None = None,
    ) -> None:
        """Append a study from an AnnData or an ``.h5ad`` file, streaming it in chunks.

        An ``.h5ad`` path is read lazily, ``chunk_size`` cells at a time, so memory is bounded
        by the chunk (plus obs/var). X may be CSR or dense; X and layers must hold count-like
        values (finite, non-negative) and are stored as float32.

        Parameters
        ----------
        data
            The study.
        study_id
            A new id (letters, digits, ``_ - .``).
        layers
            Layers to store (default: all; ``()`` for none).
        obsm
            obsm matrices to store (default: all 2-d numeric ones; others are skipped with a
            warning).
        chunk_size
            Cells read per chunk (rounded to a multiple of the row group size).
        cell_type_key
            obs column listing cell types for the study table (default: the first of
            ``cell_type``, ``celltype``, ``cell_ontology_class``, ``cell_type1``).

        Raises
        ------
        InvalidInputError
            For a duplicate or unsafe study id, duplicate cell or gene names, empty gene
            names, or NaN/inf/negative counts. The bank is left unchanged.
        """
        check_name(study_id, "study id")
        options = {
            "layers": layers,
            "obsm": obsm,
            "chunk_size": chunk_size,
            "cell_type_key": cell_type_key,
        }

        def op(m: Manifest, tracker: FileTracker, token: str) -> Manifest:
            if any(s.study_id == study_id for s in m.studies):
                raise InvalidInputError(
                    f"study {study_id!r} already exists (generation {m.generation}); choose "
                    "another id, or remove_study() it first"
                )
            source = Source.open(data)
            try:
                vocab = Reader(self._root, m).vocab
                entry, vocab = ingest(
                    self._root, m.layout, vocab, source, study_id, m.next_cell_id,
                    token=token, tracker=tracker, **options,
                )  # fmt: skip
            finally:
                source.close()
            grown = len(vocab) != m.vocab.n_rows
            return dataclasses.replace(
                m.next("append", study_id=study_id, n_cells=entry.n_cells),
                vocab=write_vocab(self._root, vocab, token, tracker) if grown else m.vocab,
                studies=(*m.studies, entry),
                next_cell_id=m.next_cell_id + entry.n_cells,
            )

        self._transact(op)

    def remove_study(self, study_id: str) -> None:
        """Remove a study from the next generation.

        Its files stay on disk (earlier generations still use them) until :meth:`vacuum`.
        Its genes stay in the vocabulary: gene ids are never reused.
        """

        def op(m: Manifest, tracker: FileTracker, token: str) -> Manifest:
            entry = m.study(study_id)
            return dataclasses.replace(
                m.next("remove", study_id=study_id, n_cells=entry.n_cells),
                studies=tuple(s for s in m.studies if s.study_id != study_id),
            )

        self._transact(op)

    def write_dense_table(
        self,
        name: str,
        values: np.ndarray,
        cell_ids: np.ndarray | None = None,
        *,
        overwrite: bool = False,
    ) -> None:
        """Store a dense per-cell matrix (e.g. embeddings), readable as ``bank.obsm[name]``.

        Parameters
        ----------
        name
            Table name (stored as ``obsm.<name>``).
        values
            ``(n_cells, d)`` numeric array; its dtype is kept.
        cell_ids
            Global cell ids of the rows (``bank.obs["cell_id"]``); default: all cells of the
            newest generation, in bank order. Cells left out read back as NaN.
        overwrite
            Replace an existing table of that name (the old one stays in earlier generations).
        """
        check_name(name, "table name")
        values = np.asarray(values)
        if values.ndim != 2 or values.dtype.kind not in "iuf":
            raise InvalidInputError(f"values must be a 2-d numeric array, got {values.shape}")
        table = obsm_table(name)

        def op(m: Manifest, tracker: FileTracker, token: str) -> Manifest:
            reader = Reader(self._root, m)
            if table in reader.table_names() and not overwrite:
                raise InvalidInputError(f"table {name!r} exists; pass overwrite=True to replace it")
            ids = (
                reader.locate(np.arange(reader.n_obs))[1]
                if cell_ids is None
                else np.asarray(cell_ids, dtype=np.int64)
            )
            if len(ids) != len(values) or len(np.unique(ids)) != len(ids):
                raise InvalidInputError(
                    f"need one unique cell id per row: {len(values)} rows, {len(ids)} ids "
                    f"({len(np.unique(ids))} unique); the bank has {reader.n_obs} cells"
                )
            try:
                study = reader.locate(reader.positions(ids))[0]
            except KeyError as e:
                raise InvalidInputError(str(e)) from None
            studies = []
            for s, entry in enumerate(m.studies):
                tables = {k: v for k, v in entry.tables.items() if k != table}
                sel = np.flatnonzero(study == s)
                if len(sel):
                    sel = sel[np.argsort(ids[sel])]
                    directory = f"tables/{table}/{entry.study_id}"
                    with PartWriter(self._root, directory, token, m.layout, tracker) as w:
                        for lo, hi in chunks(len(sel), 8192, m.layout.row_group_size):
                            w.write(dense_table(ids[sel[lo:hi]], values[sel[lo:hi]]))
                        parts = w.close()
                    tables[table] = TableEntry("dense", values.dtype.name, values.shape[1], parts)
                studies.append(dataclasses.replace(entry, tables=tables))
            return dataclasses.replace(
                m.next("write_dense_table", table=table, n_cells=len(ids)), studies=tuple(studies)
            )

        self._transact(op)

    def vacuum(self) -> list[str]:
        """Delete files the current generation does not use, and earlier generations' manifests.

        Earlier generations can no longer be opened afterwards (``history`` keeps their log).
        Readers still using an earlier generation will fail. Files of the current generation
        are never touched.

        Returns
        -------
        list of str
            The removed paths, relative to the bank root.
        """
        removed: list[str] = []

        def op(m: Manifest, tracker: FileTracker, token: str) -> Manifest:
            keep = {f.path for f in m.files()}
            current = _manifest.generation_path(self._root, m.generation)
            candidates = [p for d in _DATA_DIRS for p in (self._root / d).rglob("*")]
            candidates += list((self._root / _manifest.MANIFEST_DIR).iterdir())
            candidates += list(self._root.glob(".*.tmp"))
            for p in candidates:
                rel = p.relative_to(self._root).as_posix()
                if p.is_file() and rel not in keep and p != current:
                    p.unlink()
                    removed.append(rel)
            for d in sorted((p for p in candidates if p.is_dir()), reverse=True):
                if not any(d.iterdir()):
                    d.rmdir()
            return m.next("vacuum", n_files_removed=len(removed))

        self._transact(op)
        return removed

    @classmethod
    def from_jsonl(
        cls, directory: str | os.PathLike[str], path: str | os.PathLike[str]
    ) -> DataBank:
        """Build a new bank at ``path`` from a :meth:`export_jsonl` directory.

        Cell ids, gene ids, dtypes and values are kept exactly; the history starts anew.
        """
        src = Path(directory)
        meta, vocab, studies = _jsonl.read_jsonl_meta(src)
        bank = cls.create(path, **meta["layout"])

        def op(m: Manifest, tracker: FileTracker, token: str) -> Manifest:
            entries = _jsonl.import_studies(
                src, bank.path, m.layout, vocab, studies, token, tracker
            )
            return dataclasses.replace(
                m.next("import_jsonl", source=str(src)),
                vocab=write_vocab(bank.path, vocab, token, tracker),
                studies=tuple(entries),
                next_cell_id=meta["next_cell_id"],
            )

        bank._transact(op)
        return bank
