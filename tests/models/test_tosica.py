"""pybridge.models.TOSICA (model: fit / predict / embed / save / load) and its torch module."""

import anndata as ad
import numpy as np
import pytest

from pybridge.models import TOSICA

from conftest import shared_path


@pytest.mark.slow
def test_save_load_round_trip_and_encoder_api(tmp_path):
    a = ad.read_h5ad(shared_path("pbmc_3tech.h5ad"))
    ref, query = a[a.obs["donor"] == "3pv2"].copy(), a[a.obs["donor"] == "5p"].copy()
    m = TOSICA(max_gene_sets=50).fit(ref, "cell_type", max_epochs=2, device="cpu")
    path = m.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        m.save(tmp_path / "m")
    m2 = TOSICA.load(path, device="cpu")
    p1, p2 = m.predict(query), m2.predict(query)
    np.testing.assert_array_equal(p1.probabilities.to_numpy(), p2.probabilities.to_numpy())
    np.testing.assert_array_equal(p1.attention.to_numpy(), p2.attention.to_numpy())
    assert m2.classes == m.classes and m2.token_names == m.token_names and m2.labels_key == "cell_type"
    # encoder API for in-silico deletion: genes + embed(adata) -> cells x token_dim
    z = m2.embed(query)
    assert z.shape == (query.n_obs, m2.config["token_dim"]) and np.isfinite(z).all()
    assert m2.genes == list(query.var_names)
    zq = m2.embed(query[:, m2.genes[::-1]].copy())  # gene order does not matter
    np.testing.assert_allclose(zq, z, rtol=1e-4, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="not a saved TOSICA model"):
        TOSICA.load(tmp_path)


def test_class_token_only_last_layer_equals_full_layer():
    """The last layer is evaluated for the class token alone: same output as the full layer."""
    import torch

    from pybridge.models._tosica_module import EncoderLayer, TOSICAModule

    torch.manual_seed(0)
    layer = EncoderLayer(16, 4, dropout=0.0).eval()
    x = torch.randn(3, 7, 16)
    full, w_full = layer(x, need_weights=True)
    cls, w_cls = layer(x, cls_only=True, need_weights=True)
    torch.testing.assert_close(cls[:, 0], full[:, 0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_cls[:, 0], w_full[:, 0], rtol=1e-5, atol=1e-6)
    # a 2-layer module runs; attention rows are distributions over tokens (minus the class token)
    m = TOSICAModule(10, [[0, 1, 2], [3, 4], list(range(10))], 3, token_dim=16, n_heads=4, n_layers=2).eval()
    out = m(torch.rand(5, 10), need_attention=True)
    assert out["logits"].shape == (5, 3) and out["embedding"].shape == (5, 16)
    a = out["attention"]
    assert a.shape == (5, 3) and bool((a >= 0).all()) and bool((a.sum(1) <= 1 + 1e-6).all())
