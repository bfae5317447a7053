import json

from scformer_scvi.demo import run_demo


def test_demo_writes_its_outputs(tmp_path):
    metrics = run_demo(tmp_path, n_top_genes=300, max_epochs=1)
    for name in (
        "baron_scformer.h5ad",
        "metrics.json",
        "umap_scformer.png",
        "umap_pca.png",
        "scib_results.png",
        "training_history.csv",
    ):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "model" / "model.safetensors").is_file()
    written = json.loads((tmp_path / "metrics.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    for key in ("X_scFormer", "X_pca"):
        knn = written["embeddings"][key]["cross_donor_knn"]
        assert 0.0 <= knn["accuracy"] <= 1.0
        assert 0.0 <= written["embeddings"][key]["scib"]["Total"] <= 1.0
