"""Perturbation prediction: train, predict profiles, effects, targets and interactions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from anndata import AnnData
from scvi import REGISTRY_KEYS
from scvi.train import TrainRunner

from scformer_scvi.data._perturbation import (
    CONDITION_KEY,
    PERTURBATION_KEY,
    PerturbationCollate,
    PerturbationDataModule,
    PerturbationPairs,
    parse_perturbations,
)
from scformer_scvi.metrics import interaction_scores, top_de_genes
from scformer_scvi.module._scformer import observed_context
from scformer_scvi.train import PerturbationTrainingPlan, with_trainer_defaults


@dataclass
class _Perturbations:
    """What the registry says about perturbations and conditions of an AnnData."""

    labels: np.ndarray  # category per perturbation code
    genes: dict[str, tuple[str, ...]]  # label -> perturbed genes
    conditions: np.ndarray  # category per condition code
    control_label: str

    def is_control(self, perturbation_codes: np.ndarray, condition_codes: np.ndarray) -> np.ndarray:
        control = np.ones(perturbation_codes.size, dtype=bool)
        if self.control_label in self.labels:
            control &= self.labels[perturbation_codes] == self.control_label
        if self.control_label in self.conditions:
            control &= self.conditions[condition_codes] == self.control_label
        return control


class PerturbationMixin:
    """Perturbation prediction with a model set up with ``perturbation_key``/``condition_key``."""

    # ------------------------------------------------------------------------- registry helpers
    def _perturbation_info(self) -> _Perturbations:
        args = self.registry_["setup_args"]
        if args.get("perturbation_key") is None and args.get("condition_key") is None:
            raise ValueError(
                "This model was set up without perturbations: pass perturbation_key= (genetic) "
                "or condition_key= (e.g. stimulation) to setup_anndata."
            )
        labels = self._categories(PERTURBATION_KEY)
        control = args["control_label"]
        genes = parse_perturbations(labels, control, args["perturbation_sep"])
        if args.get("perturbation_key") is None:
            genes = {label: () for label in labels}
        return _Perturbations(labels, genes, self._categories(CONDITION_KEY), control)

    def _categories(self, registry_key: str) -> np.ndarray:
        state = self.registry_["field_registries"][registry_key]["state_registry"]
        return np.asarray(state["categorical_mapping"]).astype(str)

    def _perturbed_ids(self, genes: Sequence[str], width: int) -> np.ndarray:
        """Vocabulary ids of perturbed genes, padded to ``width`` with ``<pad>``."""
        unknown = [gene for gene in genes if gene not in self.vocab_]
        if unknown:
            raise KeyError(
                f"Perturbed genes {unknown} are not in the model's vocabulary, so the model has "
                "no token for them. Check the spelling, or add them with the vocabulary "
                "(genes of the perturbation column are added when the model is created)."
            )
        ids = np.full(width, self.vocab_.pad_id, dtype=np.int64)
        ids[: len(genes)] = self.vocab_.lookup(genes)
        return ids

    def _cell_codes(self, adata: AnnData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        manager = self.get_anndata_manager(adata, required=True)
        return tuple(
            np.asarray(manager.get_from_registry(key)).ravel().astype(np.int64)
            for key in (PERTURBATION_KEY, CONDITION_KEY, REGISTRY_KEYS.BATCH_KEY)
        )

    def _counts(self, adata: AnnData) -> sp.csr_matrix:
        manager = self.get_anndata_manager(adata, required=True)
        return sp.csr_matrix(manager.get_from_registry(REGISTRY_KEYS.X_KEY))

    def _panel_genes(self, adata: AnnData) -> list[str]:
        tokens = self.vocab_.tokens
        return [tokens[i] for i in self._tokenizer(adata).known_ids]

    # ------------------------------------------------------------------------- training
    def train_perturbation(
        self,
        max_epochs: int = 20,
        batch_size: int = 64,
        lr: float = 1e-3,
        train_size: float = 0.9,
        pair_on_labels: bool = True,
        distribution_loss: str | None = None,
        distribution_weight: float = 0.1,
        de_weight: float = 0.0,
        accelerator: str = "auto",
        devices: int | str = "auto",
        **trainer_kwargs,
    ) -> None:
        """Fine-tune to predict perturbed cells from control cells.

        Every perturbed cell (and every control cell, as an unperturbed example) is paired
        with a random control cell from the same batch and, when labels are registered and
        ``pair_on_labels``, the same cell type; the pairing is redrawn every epoch. The control
        cell, with the perturbed genes flagged (and the target condition as a token), must
        predict the perturbed cell's expression of every panel gene.

        Parameters
        ----------
        max_epochs, batch_size, lr
            Optimisation.
        train_size
            Share of the cells used for training (the rest for validation losses).
        pair_on_labels
            Pair within cell types too (when ``labels_key`` was registered).
        distribution_loss, distribution_weight
            ``"energy"`` or ``"mmd"``: also match the distribution of predicted to observed
            perturbed cells per perturbation (pairs are not true matches).
        de_weight
            Extra loss weight on each perturbation's top-20 differentially expressed genes
            (weight ``1 + de_weight``).
        accelerator, devices
            As in Lightning.
        **trainer_kwargs
            Passed to :class:`scvi.train.Trainer` (``precision="auto"`` as in
            :meth:`~scformer_scvi.SCFormer.train`).
        """
        info = self._perturbation_info()
        adata = self.adata
        perturbation_codes, condition_codes, batch_codes = self._cell_codes(adata)
        groups = batch_codes.copy()
        if pair_on_labels and self.registry_["setup_args"].get("labels_key") is not None:
            labels = np.asarray(self.adata_manager.get_from_registry(REGISTRY_KEYS.LABELS_KEY))
            groups = groups * (labels.max() + 1) + labels.ravel()
        controls = np.flatnonzero(info.is_control(perturbation_codes, condition_codes))
        rng = np.random.default_rng(0)
        order = rng.permutation(adata.n_obs)
        n_train = round(train_size * adata.n_obs)
        train_rows, validation_rows = np.sort(order[:n_train]), np.sort(order[n_train:])
        train_controls = np.intersect1d(controls, train_rows)
        collate = self._perturbation_collate(
            adata, info, perturbation_codes, condition_codes, batch_codes, de_weight
        )
        datamodule = PerturbationDataModule(
            PerturbationPairs(train_rows, groups, train_controls),
            PerturbationPairs(validation_rows, groups, train_controls)
            if validation_rows.size
            else None,
            collate,
            batch_size,
        )
        plan = PerturbationTrainingPlan(
            self.module,
            lr=lr,
            distribution_loss=distribution_loss,
            distribution_weight=distribution_weight,
        )
        if validation_rows.size:
            trainer_kwargs.setdefault("check_val_every_n_epoch", 1)
        trainer_kwargs = with_trainer_defaults(trainer_kwargs, accelerator)
        # scvi-tools appends a new run's history only to keys it already has; keep the earlier
        # history aside and give this run's total losses their own names instead.
        pretraining_history = dict(self.history_ or {})
        self.module.train()  # a trained model is left in eval mode
        # Genes whose embeddings this training informs: the panel and the training targets.
        targets = {
            g for label in info.labels[np.unique(perturbation_codes)] for g in info.genes[label]
        }
        self.perturbation_known_genes_ = sorted(set(self._panel_genes(adata)) | targets)
        self.perturbation_trained_genes_ = sorted(targets)
        self.history_, self.is_trained_ = None, False
        TrainRunner(
            self,
            training_plan=plan,
            data_splitter=datamodule,
            max_epochs=max_epochs,
            accelerator=accelerator,
            devices=devices,
            **trainer_kwargs,
        )()
        renamed = {
            "train_loss": "perturbation_train_loss",
            "validation_loss": "perturbation_validation_loss",
        }
        self.history_ = {
            **pretraining_history,
            **{renamed.get(key, key): value for key, value in self.history_.items()},
        }
        self.is_trained_ = True

    def _perturbation_collate(
        self,
        adata: AnnData,
        info: _Perturbations,
        perturbation_codes: np.ndarray,
        condition_codes: np.ndarray,
        batch_codes: np.ndarray,
        de_weight: float = 0.0,
    ) -> PerturbationCollate:
        width = max(1, max(len(genes) for genes in info.genes.values()))
        ids_by_code = np.stack(
            [self._perturbed_ids(info.genes[label], width) for label in info.labels]
        )
        tokenizer = self._tokenizer(adata)
        counts = self._counts(adata)
        gene_weights = None
        if de_weight:
            gene_weights = self._de_weights(
                counts, tokenizer, info, perturbation_codes, condition_codes, de_weight
            )
        return PerturbationCollate(
            tokenizer,
            counts,
            ids_by_code[perturbation_codes],
            condition_codes,
            batch_codes,
            gene_weights=gene_weights,
        )

    # ------------------------------------------------------------------------- prediction
    @torch.inference_mode()
    def _predict_profiles(
        self,
        adata: AnnData,
        control_rows: np.ndarray,
        perturbed_ids: np.ndarray,
        condition_code: int,
        batch_size: int | None,
    ) -> np.ndarray:
        """Predicted log1p(cp10k) of every panel gene for the given control cells."""
        tokenizer = self._tokenizer(adata)
        counts = self._counts(adata)
        _, _, batch_codes = self._cell_codes(adata)
        module = self.module
        module.eval()
        panel = torch.from_numpy(tokenizer.known_ids)
        # Genes the model knows nothing about do not enter as tokens: their untrained
        # embeddings would shift the cell embedding arbitrarily.
        informed_ids = self._informed(perturbed_ids)
        ids = torch.from_numpy(np.ascontiguousarray(perturbed_ids)).to(module.device)
        # The gene-specific shift only for genes perturbed in training: the projection, fit to
        # a few dozen perturbations, extrapolates wildly to other genes' embeddings.
        trained = self._informed(perturbed_ids, "perturbation_trained_genes_") == perturbed_ids
        informed = torch.from_numpy(trained).to(module.device)
        profiles = []
        for start in range(0, control_rows.size, batch_size or 128):
            rows = control_rows[start : start + (batch_size or 128)]
            forced = np.broadcast_to(informed_ids, (rows.size, informed_ids.size))
            tensors = tokenizer(counts[rows], forced_ids=forced).to_tensors()  # deterministic
            tensors["batch"] = torch.from_numpy(batch_codes[rows].reshape(-1, 1))
            tensors["condition"] = torch.full((rows.size, 1), condition_code)
            tensors = {k: v.to(module.device) for k, v in tensors.items()}
            encoded = module.inference(**module._get_inference_input(tensors))
            shift = module.perturbation_shift(
                encoded["condition_index"],
                ids.expand(rows.size, -1),
                informed.expand(rows.size, -1),
            )
            params = module.gene_query(
                encoded["z"],
                encoded["batch_index"],
                panel.to(module.device).expand(rows.size, -1),
                shift,
                ids.expand(rows.size, -1),
            )
            prediction = module.mvc_head.predict(params, observed_context(tensors, None))
            profiles.append(prediction.float().cpu().numpy())
        return np.concatenate(profiles)

    def _controls(
        self,
        adata: AnnData,
        control_indices: Sequence[int] | None,
        n_cells: int | None,
        seed: int,
    ) -> np.ndarray:
        info = self._perturbation_info()
        if control_indices is not None:
            rows = np.asarray(control_indices)
        else:
            perturbation_codes, condition_codes, _ = self._cell_codes(adata)
            rows = np.flatnonzero(info.is_control(perturbation_codes, condition_codes))
        if rows.size == 0:
            raise ValueError("No control cells to perturb: pass control_indices=.")
        if n_cells is not None and n_cells < rows.size:
            rows = np.sort(np.random.default_rng(seed).choice(rows, n_cells, replace=False))
        return rows

    def _resolve(self, perturbation: str) -> tuple[tuple[str, ...], int]:
        """Perturbed genes and condition code of a perturbation label."""
        info = self._perturbation_info()
        args = self.registry_["setup_args"]
        control_code = np.flatnonzero(info.conditions == info.control_label)
        condition = int(control_code[0]) if control_code.size else 0
        if args.get("condition_key") is not None and perturbation in info.conditions:
            return (), int(np.flatnonzero(info.conditions == perturbation)[0])
        if args.get("perturbation_key") is None:
            raise KeyError(
                f"{perturbation!r} is not a registered condition ({list(info.conditions)})."
            )
        genes = parse_perturbations([perturbation], info.control_label, args["perturbation_sep"])
        return genes[perturbation], condition

    def predict_perturbation(
        self,
        perturbations: Sequence[str],
        adata: AnnData | None = None,
        control_indices: Sequence[int] | None = None,
        n_cells: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> AnnData:
        """Predicted expression profiles of control cells under each perturbation.

        Parameters
        ----------
        perturbations
            Genes (``"STAT1"``), combinations (``"JAK2+STAT1"``), registered conditions
            (``"stim"``) or the control label (unperturbed prediction).
        adata
            Cells providing the controls; ``None`` uses the model's AnnData.
        control_indices
            Rows of the control cells; ``None`` uses all cells labelled control.
        n_cells
            Use this many control cells (a seeded random subset).
        batch_size
            Cells per forward pass.
        seed
            Seed of the control subset.

        Returns
        -------
        One row per (perturbation, control cell), one column per panel gene, values on the
        ``log1p(cp10k)`` scale; ``obs["perturbation"]`` and ``obs["control_cell"]``.
        Deterministic: the same inputs give the same result.

        Notes
        -----
        A perturbed gene that was neither in the training panel nor perturbed in training has
        an untrained embedding and does not enter the encoder. The decoder's gene-specific part
        is used only for genes perturbed in training (fit to a few dozen perturbations, it
        extrapolates poorly); any other gene gets the components shared by all perturbations
        (learned with ``perturbation_gene_dropout``), i.e. the typical perturbation effect,
        plus, when it is on the panel, the learned effect on its own expression.
        """
        adata = self._validate_anndata(adata)
        controls = self._controls(adata, control_indices, n_cells, seed)
        genes = self._panel_genes(adata)
        blocks, labels = [], []
        width = max(1, max(len(self._resolve(p)[0]) for p in perturbations))
        for perturbation in perturbations:
            perturbed, condition = self._resolve(perturbation)
            ids = self._perturbed_ids(perturbed, width)
            blocks.append(self._predict_profiles(adata, controls, ids, condition, batch_size))
            labels += [perturbation] * controls.size
        obs = pd.DataFrame(
            {
                "perturbation": pd.Categorical(
                    labels, categories=list(dict.fromkeys(perturbations))
                ),
                "control_cell": np.tile(adata.obs_names[controls], len(perturbations)),
            }
        )
        obs.index = [
            f"{label}:{cell}" for label, cell in zip(labels, obs["control_cell"], strict=True)
        ]
        predicted = AnnData(
            np.concatenate(blocks).astype(np.float32),
            obs=obs,
            var=pd.DataFrame(index=pd.Index(genes, name="gene")),
        )
        predicted.uns["scale"] = "log1p(cp10k)"
        return predicted

    def get_perturbation_effect(
        self,
        perturbations: Sequence[str],
        adata: AnnData | None = None,
        control_indices: Sequence[int] | None = None,
        n_cells: int | None = None,
        batch_size: int | None = None,
        seed: int = 0,
    ) -> pd.DataFrame:
        """Mean predicted change vs control, per perturbation (rows) and gene (columns).

        The change is the mean prediction under the perturbation minus the mean prediction for
        the same control cells left unperturbed, on the ``log1p(cp10k)`` scale.
        """
        control = self._perturbation_info().control_label
        predicted = self.predict_perturbation(
            [control, *perturbations], adata, control_indices, n_cells, batch_size, seed
        )
        means = (
            pd.DataFrame(predicted.X, columns=predicted.var_names)
            .groupby(predicted.obs["perturbation"].to_numpy())
            .mean()
        )
        return means.loc[list(perturbations)] - means.loc[control]

    def predict_perturbation_target(
        self,
        adata: AnnData | None = None,
        groupby: str | None = None,
        top_k: int = 5,
        candidates: Sequence[str] | None = None,
        n_cells: int | None = 500,
    ) -> pd.DataFrame:
        """Rank candidate perturbations by how well they explain observed cells (the inverse).

        For every group of cells (``obs[groupby]``, or every cell), the observed change of its
        mean ``log1p(cp10k)`` profile vs the control cells is compared with the predicted change
        of each candidate (:meth:`get_perturbation_effect`) by Pearson correlation over genes.

        Parameters
        ----------
        adata
            Cells to explain (with their control cells); ``None`` uses the model's AnnData.
        groupby
            obs column defining the groups; ``None`` explains each cell on its own.
        top_k
            Candidates reported per group.
        candidates
            Perturbations to rank; ``None`` uses every registered perturbation.
        n_cells
            Control cells used to predict each candidate's effect.

        Returns
        -------
        Long table: ``group``, ``rank`` (1 = best), ``perturbation``, ``score``.
        """
        adata = self._validate_anndata(adata)
        info = self._perturbation_info()
        if candidates is None:
            candidates = [label for label in info.labels if label != info.control_label]
        effects = self.get_perturbation_effect(candidates, adata, n_cells=n_cells)
        observed = self._observed_log_expression(adata)
        perturbation_codes, condition_codes, _ = self._cell_codes(adata)
        control_mean = observed[info.is_control(perturbation_codes, condition_codes)].mean(0)
        groups = adata.obs_names.to_numpy() if groupby is None else adata.obs[groupby].astype(str)
        deltas = pd.DataFrame(observed).groupby(np.asarray(groups)).mean() - control_mean
        scores = _row_correlations(deltas.to_numpy(), effects.to_numpy())
        order = np.argsort(-scores, axis=1)[:, :top_k]
        rows = [
            (group, rank + 1, effects.index[order[i, rank]], scores[i, order[i, rank]])
            for i, group in enumerate(deltas.index)
            for rank in range(order.shape[1])
        ]
        return pd.DataFrame(rows, columns=["group", "rank", "perturbation", "score"])

    def get_genetic_interaction(
        self,
        combinations: Sequence[str],
        adata: AnnData | None = None,
        n_cells: int | None = None,
        batch_size: int | None = None,
    ) -> pd.DataFrame:
        """Predicted non-additivity of double perturbations (see :func:`interaction_scores`).

        For each ``"A+B"``, the predicted change of the combination is compared with the sum of
        the predicted single changes of A and B.

        Returns
        -------
        One row per combination: ``non_additivity``, ``magnitude``, ``additive_correlation``.
        """
        sep = self.registry_["setup_args"]["perturbation_sep"]
        pairs = {combo: combo.split(sep) for combo in combinations}
        bad = [combo for combo, genes in pairs.items() if len(genes) != 2]
        if bad:
            raise ValueError(f"Interactions need exactly two genes joined by {sep!r}: {bad}.")
        singles = sorted({gene for genes in pairs.values() for gene in genes})
        effects = self.get_perturbation_effect(
            [*combinations, *singles], adata, n_cells=n_cells, batch_size=batch_size
        )
        rows = {
            combo: interaction_scores(
                effects.loc[combo].to_numpy(), effects.loc[a].to_numpy(), effects.loc[b].to_numpy()
            )
            for combo, (a, b) in pairs.items()
        }
        return pd.DataFrame.from_dict(rows, orient="index")

    # ------------------------------------------------------------------------- helpers
    def _informed(
        self, perturbed_ids: np.ndarray, known_genes: str = "perturbation_known_genes_"
    ) -> np.ndarray:
        """``perturbed_ids`` with genes outside the attribute ``known_genes`` set to ``<pad>``.

        By default, the genes the model knows nothing about: a gene neither measured in the
        training panel nor perturbed in training has an untrained embedding, which would add
        an arbitrary shift, so it does not enter the encoder as a token. Unchanged when the
        model has no such attribute (not trained for perturbations).
        """
        known = getattr(self, known_genes, None)
        if known is None:
            return np.ascontiguousarray(perturbed_ids)
        informed = np.isin(perturbed_ids, self.vocab_.lookup(known))
        return np.where(informed, perturbed_ids, self.vocab_.pad_id)

    def _observed_log_expression(self, adata: AnnData) -> np.ndarray:
        """Observed log1p(cp10k) of the panel genes (library over the vocabulary's genes)."""
        tokenizer = self._tokenizer(adata)
        counts = self._counts(adata)[:, tokenizer.known_columns]
        library = np.asarray(counts.sum(axis=1)).ravel().clip(min=1)
        return np.log1p(counts.toarray() / library[:, None] * 1e4)

    def _de_weights(
        self,
        counts: sp.csr_matrix,
        tokenizer,
        info: _Perturbations,
        perturbation_codes: np.ndarray,
        condition_codes: np.ndarray,
        de_weight: float,
    ) -> np.ndarray:
        """Per-cell gene weights: ``1 + de_weight`` on the top-20 DE genes of its perturbation."""
        panel = counts[:, tokenizer.known_columns]
        library = np.asarray(panel.sum(axis=1)).ravel().clip(min=1)
        log_expression = np.log1p(panel.toarray() / library[:, None] * 1e4)
        control = info.is_control(perturbation_codes, condition_codes)
        control_mean = log_expression[control].mean(0)
        weights_by_code = np.ones((len(info.labels), panel.shape[1]), dtype=np.float32)
        for code in np.unique(perturbation_codes[~control]):
            members = (perturbation_codes == code) & ~control
            delta = log_expression[members].mean(0) - control_mean
            weights_by_code[code, top_de_genes(delta)] += de_weight
        return weights_by_code[perturbation_codes]


def _row_correlations(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pearson correlation of every row of ``a`` with every row of ``b``."""
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    a /= np.linalg.norm(a, axis=1, keepdims=True).clip(min=1e-12)
    b /= np.linalg.norm(b, axis=1, keepdims=True).clip(min=1e-12)
    return a @ b.T
