from itertools import pairwise

import pytest

from scformer_scvi.train import warmup_cosine


def test_warmup_then_cosine():
    values = [warmup_cosine(step, 10, 110, 0.1) for step in range(110)]
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert all(a < b for a, b in pairwise(values[:10]))
    assert all(a >= b for a, b in pairwise(values[9:]))
    assert values[60] == pytest.approx(0.1 + 0.9 * 0.5)
    assert warmup_cosine(500, 10, 110, 0.1) == pytest.approx(0.1)
