import os
import runpy
from pathlib import Path

import matplotlib
import pytest

TUTORIALS = sorted((Path(__file__).resolve().parents[1] / "tutorials").glob("*.py"))


@pytest.mark.parametrize("path", TUTORIALS, ids=[p.stem for p in TUTORIALS])
def test_tutorial_runs_top_to_bottom(path, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.setenv("SCFORMER_TUTORIAL_FAST", "1")
    monkeypatch.chdir(tmp_path)
    runpy.run_path(str(path), run_name="__main__")
    assert os.listdir(tmp_path)  # the tutorial saved its model
