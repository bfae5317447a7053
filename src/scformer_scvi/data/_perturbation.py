"""Perturbation labels, control-perturbed cell pairs and their minibatches."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ._binning import quantile_bins
from ._tokenizer import Tokenizer

PERTURBATION_KEY = "perturbation"
CONDITION_KEY = "condition"


def parse_perturbations(
    labels: Sequence[str], control_label: str = "control", sep: str = "+"
) -> dict[str, tuple[str, ...]]:
    """Map every perturbation label to its perturbed genes (``()`` for the control).

    Parameters
    ----------
    labels
        Distinct labels, each the control label or genes joined by ``sep`` (``"JAK2+STAT1"``).
    control_label
        Label of unperturbed cells.
    sep
        Separator of combined perturbations.

    Raises
    ------
    ValueError
        For a missing or empty label, or an empty gene in a combination (``"A+"``).
    """
    parsed = {}
    for label in labels:
        if label is None or (isinstance(label, float) and np.isnan(label)):
            raise ValueError(
                "A perturbation label is missing (NaN). Label every cell: the control label "
                f"({control_label!r}) or perturbed genes joined by {sep!r}."
            )
        label = str(label)
        if label == control_label:
            parsed[label] = ()
            continue
        genes = tuple(gene.strip() for gene in label.split(sep))
        if not label.strip() or any(not gene for gene in genes):
            raise ValueError(
                f"Perturbation label {label!r} is empty or has an empty gene. Use the control "
                f"label {control_label!r} or gene names joined by {sep!r}, e.g. 'JAK2{sep}STAT1'."
            )
        parsed[label] = tuple(dict.fromkeys(genes))
    return parsed


def validate_perturbation_column(
    column: pd.Series, key: str, control_label: str, sep: str
) -> dict[str, tuple[str, ...]]:
    """Parse ``obs[key]`` and check that some cells are controls."""
    parsed = parse_perturbations(pd.unique(column.astype(object)), control_label, sep)
    if control_label not in parsed:
        raise ValueError(
            f"No cell of obs[{key!r}] has the control label {control_label!r} (labels: "
            f"{sorted(parsed)[:8]}...). Pass control_label= naming the unperturbed cells."
        )
    return parsed


class PerturbationPairs(Dataset):
    """Target cells, each paired at every access with a random control of its covariate group.

    The pairing is redrawn every time a cell is fetched (from torch's generator, so it is
    reproducible under ``scvi.settings.seed``): control and perturbed cells are never the same
    cell, so no fixed pairing is "true".

    Parameters
    ----------
    targets
        Rows of the target cells.
    groups
        Covariate group of every row (e.g. batch x cell type codes).
    controls
        Rows of the control cells.
    """

    def __init__(self, targets: np.ndarray, groups: np.ndarray, controls: np.ndarray) -> None:
        self.targets = np.asarray(targets)
        self.groups = np.asarray(groups)
        self.controls_by_group = {
            group: controls[self.groups[controls] == group] for group in np.unique(groups)
        }
        empty = sorted({g for g in self.groups[self.targets] if not len(self.controls_by_group[g])})
        if empty:
            raise ValueError(
                f"{len(empty)} covariate groups have perturbed cells but no control cells, so "
                "they cannot be paired. Remove those cells or pair on fewer covariates."
            )

    def __len__(self) -> int:
        return self.targets.size

    def __getitem__(self, positions: list[int]) -> dict[str, np.ndarray]:
        targets = self.targets[np.asarray(positions)]
        controls = np.empty_like(targets)
        for group in np.unique(self.groups[targets]):
            members = self.groups[targets] == group
            pool = self.controls_by_group[group]
            draws = torch.randint(0, pool.size, (int(members.sum()),)).numpy()
            controls[members] = pool[draws]
        return {"targets": targets, "controls": controls}


class PerturbationCollate:
    """Minibatch tensors: control cells as tokens (perturbed genes flagged), targets as profiles.

    Parameters
    ----------
    tokenizer
        Tokenizer of the panel genes.
    counts
        Raw counts of all cells (CSR), columns as the tokenizer expects.
    perturbation_ids
        ``(n_cells, k)`` vocabulary ids of each cell's perturbed genes (``<pad>`` = none).
    condition_codes, batch_codes
        Condition and batch code of every cell.
    gene_weights
        ``(n_cells, n_panel_genes)`` loss weight of every gene for each target cell, or None.
    stochastic
        Random gene subsampling of long control cells (training).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        counts: sp.csr_matrix,
        perturbation_ids: np.ndarray,
        condition_codes: np.ndarray,
        batch_codes: np.ndarray,
        gene_weights: np.ndarray | None = None,
        stochastic: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.gene_weights = gene_weights
        self.counts = sp.csr_matrix(counts)
        self.perturbation_ids = perturbation_ids
        self.condition_codes = condition_codes
        self.batch_codes = batch_codes
        self.stochastic = stochastic

    def __call__(self, pairs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        """Tokenize the controls with the targets' perturbations; targets become profiles."""
        controls, targets = pairs["controls"], pairs["targets"]
        rng = None
        if self.stochastic:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        perturbed = self.perturbation_ids[targets]
        tokens = self.tokenizer(self.counts[controls], rng, forced_ids=perturbed)
        target_counts = self.counts[targets][:, self.tokenizer.known_columns]
        bins = quantile_bins(target_counts, self.tokenizer.n_bins)
        target_bins = sp.csr_matrix(
            (bins, target_counts.indices, target_counts.indptr), shape=target_counts.shape
        )
        tensors = tokens.to_tensors()
        if self.gene_weights is not None:
            tensors["gene_weights"] = torch.from_numpy(self.gene_weights[targets])
        return {
            **tensors,
            "perturbation_ids": torch.from_numpy(np.ascontiguousarray(perturbed)),
            "condition": torch.from_numpy(self.condition_codes[targets].reshape(-1, 1)),
            "batch": torch.from_numpy(self.batch_codes[controls].reshape(-1, 1)),
            # one row per cell (a view), so every tensor of the minibatch starts with its cells
            "panel_ids": torch.from_numpy(self.tokenizer.known_ids).expand(targets.size, -1),
            "target_counts": torch.from_numpy(target_counts.toarray().astype(np.float32)),
            "target_bins": torch.from_numpy(target_bins.toarray().astype(np.int64)),
            "target_library_size": torch.from_numpy(
                np.asarray(target_counts.sum(axis=1), dtype=np.float32).ravel()
            ),
        }


class PerturbationDataModule(LightningDataModule):
    """Train/validation minibatches of control -> perturbed pairs.

    Parameters
    ----------
    pairs_train, pairs_validation
        The paired datasets (validation may be None).
    collate
        Builds the tensors.
    batch_size
        Pairs per minibatch.
    """

    def __init__(
        self,
        pairs_train: PerturbationPairs,
        pairs_validation: PerturbationPairs | None,
        collate: PerturbationCollate,
        batch_size: int,
    ) -> None:
        super().__init__()
        self.pairs_train, self.pairs_validation = pairs_train, pairs_validation
        self.collate = collate
        self.batch_size = batch_size
        self.train_idx = pairs_train.targets
        self.val_idx = pairs_validation.targets if pairs_validation is not None else np.array([])
        self.test_idx = np.array([], dtype=np.int64)

    def _loader(self, pairs: PerturbationPairs, shuffle: bool) -> DataLoader:
        base = RandomSampler(pairs) if shuffle else SequentialSampler(pairs)
        sampler = BatchSampler(base, batch_size=self.batch_size, drop_last=False)
        return DataLoader(pairs, sampler=sampler, batch_size=None, collate_fn=self.collate)

    def train_dataloader(self) -> DataLoader:
        """Shuffled pairs, redrawn every epoch."""
        return self._loader(self.pairs_train, shuffle=True)

    def val_dataloader(self) -> DataLoader | None:
        """Validation pairs (empty list when there is no validation split)."""
        if self.pairs_validation is None:
            return []
        return self._loader(self.pairs_validation, shuffle=False)
