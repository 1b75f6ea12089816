"""pybridge.models._novelty.ReferenceProfiles: the calibrated "Unknown" score."""

import numpy as np
import scipy.sparse as sp

from pybridge.models._novelty import ReferenceProfiles


def _toy(rng, n_per, centers, noise=0.3):
    x = np.vstack([rng.normal(c, noise, size=(n_per, len(c))) for c in centers])
    y = np.repeat(np.arange(len(centers)), n_per)
    return sp.csr_matrix(np.clip(x, 0, None).astype(np.float32)), y


def test_threshold_is_the_leave_one_out_quantile_and_rejects_a_novel_type():
    rng = np.random.default_rng(0)
    g = 40
    centers = [np.r_[np.full(10, 3.0), np.zeros(g - 10)], np.r_[np.zeros(10), np.full(10, 3.0), np.zeros(g - 20)],
               np.r_[np.zeros(20), np.full(10, 3.0), np.zeros(g - 30)]]
    novel = np.r_[np.zeros(30), np.full(10, 3.0)]
    xr, yr = _toy(rng, 200, centers)
    prof = ReferenceProfiles(0.05).fit(xr, yr, ["a", "b", "c"])
    assert prof.centroids.shape == (3, g) and np.allclose(prof.fractions, 1 / 3)
    # known types (held-out reference calibration at 5%) mostly kept, the novel type rejected
    xq, yq = _toy(rng, 200, centers + [novel])
    pred = np.where(yq == 3, 0, yq)  # the novel cells get some known label
    unknown, sim = prof.is_unknown(xq, pred)
    assert unknown[yq < 3].mean() <= 0.10 and unknown[yq == 3].mean() >= 0.95
    assert sim[yq < 3].mean() > sim[yq == 3].mean()
    # a global shift of the query (another platform) is absorbed by its own standardisation
    unknown2, _ = prof.is_unknown(sp.csr_matrix(xq.toarray() * 1.7 + 0.4), pred)
    assert unknown2[yq < 3].mean() <= 0.10 and unknown2[yq == 3].mean() >= 0.95
    back = ReferenceProfiles.from_dict(prof.to_dict())
    np.testing.assert_allclose(back.score(xq, pred), prof.score(xq, pred), rtol=1e-5)
