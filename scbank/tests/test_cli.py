"""The scbank command line, end to end."""

from __future__ import annotations

import subprocess
import sys

import anndata as ad
import numpy as np
from bank_helpers import dense, make_adata
from scbank.cli import main

from scbank import DataBank


def test_cli_end_to_end(tmp_path, write_h5ad, capsys):
    bank = tmp_path / "cli.scb"
    a = make_adata(60, seed=1, prefix="a")
    b = make_adata(40, [f"g{i}" for i in range(20, 50)], seed=2, prefix="b")
    assert main(["create", str(bank), "--row-group-size", "16", "--part-size", "32"]) == 0
    args = ["--chunk-size", "16", "--layers", "counts", "--obsm", "X_pca"]
    assert main(["append", str(bank), str(write_h5ad(a, "a")), "--study", "a", *args]) == 0
    assert main(["append", str(bank), str(write_h5ad(b, "b")), "--study", "b"]) == 0
    capsys.readouterr()

    assert main(["ls", str(bank)]) == 0
    listing = capsys.readouterr().out
    assert "a" in listing
    assert "60" in listing
    assert "40" in listing

    assert main(["info", str(bank)]) == 0
    info = capsys.readouterr().out
    assert "n_obs x n_vars = 100 x 50" in info
    assert "append" in info

    assert main(["verify", str(bank)]) == 0
    assert "all OK" in capsys.readouterr().out

    out = tmp_path / "a_back.h5ad"
    assert main(["export", str(bank), str(out), "--study", "a"]) == 0
    back = ad.read_h5ad(out)
    np.testing.assert_array_equal(dense(back.X), dense(a.X))
    assert list(back.obsm) == ["X_pca"]  # only what was asked for was stored

    assert main(["remove", str(bank), "a"]) == 0
    assert main(["export", str(bank), str(tmp_path / "all.h5ad"), "--generation", "3"]) == 0
    assert ad.read_h5ad(tmp_path / "all.h5ad").shape == (100, 50)
    assert main(["vacuum", str(bank)]) == 0
    assert DataBank.open(bank).n_obs == 40


def test_cli_errors_and_verify_failure(tmp_path, write_h5ad, capsys):
    bank = tmp_path / "e.scb"
    assert main(["create", str(bank)]) == 0
    h5ad = write_h5ad(make_adata(20), "x")
    assert main(["append", str(bank), str(h5ad), "--study", "../x"]) == 2
    assert "invalid study id" in capsys.readouterr().err
    assert main(["append", str(bank), str(h5ad), "--study", "x"]) == 0
    part = DataBank.open(bank)._manifest.study("x").tables["X"].files[0]
    (bank / part.path).write_bytes(b"garbage")
    assert main(["verify", str(bank)]) == 1
    assert part.path in capsys.readouterr().out


def test_module_entry_point_help():
    run = subprocess.run(
        [sys.executable, "-m", "scbank", "append", "--help"], capture_output=True, text=True
    )
    assert run.returncode == 0
    assert "--study" in run.stdout
    assert "chunk" in run.stdout
