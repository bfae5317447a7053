import numpy as np
import torch

from scformer_scvi.nn import count_classes


def test_count_classes_exact_then_log_buckets():
    counts = torch.tensor([0, 1, 5, 20, 21, 40, 41, 80, 1000, 10**7])
    classes = count_classes(counts.float(), cap=20, n_buckets=10)
    assert classes[:4].tolist() == [0, 1, 5, 20]
    assert (classes[4:] >= 21).all()
    assert (np.diff(classes.numpy()) >= 0).all()  # monotone
    assert classes[-1] == 20 + 10  # beyond 1024 * cap: the last bucket
    assert classes[5] < classes[7]  # 40 and 80 are a doubling apart
