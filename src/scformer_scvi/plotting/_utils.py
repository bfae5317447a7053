"""What every figure function does last."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt


def finish(fig: plt.Figure, title: str | None, path: str | Path | None) -> plt.Figure:
    """Add the title, tighten the layout and save the figure if a path is given."""
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    return fig
