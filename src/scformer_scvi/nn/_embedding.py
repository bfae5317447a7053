"""Token embeddings: which gene a token is, and how much of it the cell expresses."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

ValueEncoding = Literal["binned", "continuous", "count_classes", "scaling"]
VALUE_ENCODINGS: tuple[str, ...] = ("binned", "continuous", "count_classes", "scaling")


def count_classes(counts: torch.Tensor, cap: int, n_buckets: int) -> torch.Tensor:
    """Map raw counts to classes: exact up to ``cap``, then ``n_buckets`` log-spaced buckets.

    Counts ``0 .. cap`` are their own class; a count ``c > cap`` falls in bucket
    ``floor(log2(c / cap) * n_buckets / 10)`` (ten doublings beyond the cap, i.e. up to
    ``1024 * cap``, spread over ``n_buckets``; larger counts share the last bucket), so the
    class index is ``cap + 1 + bucket``. There are ``cap + 1 + n_buckets`` classes.
    """
    counts = counts.clamp(min=0)
    above = counts > cap
    doublings = torch.log2(counts.clamp(min=cap + 1) / cap)
    bucket = (doublings * n_buckets / 10).floor().clamp(max=n_buckets - 1).long()
    return torch.where(above, cap + 1 + bucket, counts.round().long())


class TokenEmbedding(nn.Module):
    """Embed gene tokens and their values, one of four value encodings.

    - ``"binned"``: ``norm(gene[g] + bin_emb[bin])``, one embedding per per-cell quantile bin;
    - ``"continuous"``: ``norm(gene[g] + mlp(log1p(cp10k)))``;
    - ``"count_classes"``: ``norm(gene[g] + class_emb[count_class(count)])``, "gene name + raw
      count" tokens (see :func:`count_classes`);
    - ``"scaling"``: ``norm(gene[g] * log1p(cp10k))``. Non-expressed genes then embed to the
      same vector, so zero genes carry no identity with this encoding.

    A token whose value is hidden (masked value prediction) gets a learned mask embedding
    (a mask bin or class, a mask vector, or a learned scale for ``"scaling"``) instead of its
    value. Value embeddings start small (std 0.05 vs 1 for genes) so that an untrained model
    sees mostly which genes a cell expresses: with sparse UMI counts most values tie at 1 and
    the value distribution of a cell mostly reflects its sequencing depth.

    Parameters
    ----------
    n_tokens
        Vocabulary size (special tokens included).
    d_model
        Embedding width.
    pad_id
        Id of ``<pad>``; its gene embedding stays zero.
    value_encoding
        One of ``"binned"``, ``"continuous"``, ``"count_classes"``, ``"scaling"``.
    n_bins
        Value bins (``"binned"``).
    count_cap, n_count_buckets
        Exact classes ``0..count_cap`` and log buckets above (``"count_classes"``).
    """

    def __init__(
        self,
        n_tokens: int,
        d_model: int,
        pad_id: int,
        value_encoding: ValueEncoding = "binned",
        n_bins: int = 51,
        count_cap: int = 20,
        n_count_buckets: int = 12,
    ) -> None:
        super().__init__()
        if value_encoding not in VALUE_ENCODINGS:
            raise ValueError(
                f"value_encoding must be one of {VALUE_ENCODINGS}, got {value_encoding!r}."
            )
        self.value_encoding = value_encoding
        self.count_cap = count_cap
        self.n_count_buckets = n_count_buckets
        self.gene = nn.Embedding(n_tokens, d_model, padding_idx=pad_id)
        self.norm = nn.LayerNorm(d_model)
        if value_encoding in ("binned", "count_classes"):
            n_classes = n_bins if value_encoding == "binned" else count_cap + 1 + n_count_buckets
            self.value = nn.Embedding(n_classes + 1, d_model)  # last row: masked value
            nn.init.normal_(self.value.weight, std=0.05)
            self.mask_class = n_classes
        elif value_encoding == "continuous":
            self.value = nn.Sequential(
                nn.Linear(1, d_model), nn.GELU(), nn.Linear(d_model, d_model)
            )
            self.mask_vector = nn.Parameter(torch.randn(d_model) * 0.05)
            with torch.no_grad():
                self.value[-1].weight.mul_(0.05)
                self.value[-1].bias.zero_()
        else:
            self.mask_scale = nn.Parameter(torch.ones(()))

    def forward(
        self,
        gene_ids: torch.Tensor,
        bins: torch.Tensor,
        counts: torch.Tensor,
        log_expression: torch.Tensor,
        value_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Embed ``(batch, seq_len)`` tokens.

        Parameters
        ----------
        gene_ids, bins, counts, log_expression
            Token ids, per-cell quantile bins, raw counts and ``log1p(cp10k)`` values.
        value_mask
            ``True`` where the value is hidden.
        """
        gene = self.gene(gene_ids)
        hidden = (
            value_mask if value_mask is not None else torch.zeros_like(gene_ids, dtype=torch.bool)
        )
        if self.value_encoding == "scaling":
            scale = torch.where(hidden, self.mask_scale.to(log_expression.dtype), log_expression)
            return self.norm(gene * scale.unsqueeze(-1))
        if self.value_encoding == "continuous":
            value = self.value(log_expression.unsqueeze(-1))
            value = torch.where(hidden.unsqueeze(-1), self.mask_vector.to(value.dtype), value)
        else:
            classes = (
                bins
                if self.value_encoding == "binned"
                else count_classes(counts, self.count_cap, self.n_count_buckets)
            )
            value = self.value(classes.masked_fill(hidden, self.mask_class))
        return self.norm(gene + value)


def log_cp10k(counts: torch.Tensor, library_size: torch.Tensor) -> torch.Tensor:
    """``log1p(counts / library_size * 1e4)``, the usual normalised expression, per token."""
    return torch.log1p(counts / library_size.clamp(min=1.0).unsqueeze(-1) * 1e4)
