"""The Baron et al. (2016) human pancreas dataset, shipped with the package."""

from __future__ import annotations

import hashlib
from importlib.resources import as_file, files

import anndata
from anndata import AnnData

_FILE = "baron2016_human_pancreas_came.h5ad"
_MD5 = "dfb35563e6fa5525e82698d834eb0d70"


def baron_pancreas() -> AnnData:
    """Human pancreas islets (Baron et al. 2016, inDrop): 2142 cells x 20125 genes, raw counts.

    Four donors (``obs["donor"]``) and 13 annotated cell types
    (``obs["cell_ontology_class"]``); counts are integers stored as float32. The file ships
    inside the package (no download); its provenance is in ``datasets/data/PROVENANCE.md``.

    Returns
    -------
    A new in-memory AnnData (safe to modify).
    """
    resource = files("scformer_scvi.datasets") / "data" / _FILE
    with as_file(resource) as path:
        digest = hashlib.md5(path.read_bytes()).hexdigest()
        if digest != _MD5:
            raise OSError(
                f"The bundled {_FILE} is corrupted (md5 {digest}, expected {_MD5}). "
                "Reinstall scformer-scvi."
            )
        return anndata.read_h5ad(path)
