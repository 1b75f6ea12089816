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
    unknown, sim, t = prof.is_unknown(xq, pred)
    assert t <= prof.threshold and np.all(unknown == (sim < t))
    assert unknown[yq < 3].mean() <= 0.10 and unknown[yq == 3].mean() >= 0.95
    assert sim[yq < 3].mean() > sim[yq == 3].mean()
    # a global shift of the query (another platform) is absorbed by its own standardisation
    unknown2, _, _ = prof.is_unknown(sp.csr_matrix(xq.toarray() * 1.7 + 0.4), pred)
    assert unknown2[yq < 3].mean() <= 0.10 and unknown2[yq == 3].mean() >= 0.95
    back = ReferenceProfiles.from_dict(prof.to_dict())
    np.testing.assert_allclose(back.score(xq, pred), prof.score(xq, pred), rtol=1e-5)


def test_query_threshold_follows_a_shift_of_the_whole_query_down_never_up():
    rng = np.random.default_rng(1)
    xr, yr = _toy(rng, 100, [np.r_[np.full(5, 3.0), np.zeros(15)], np.r_[np.zeros(5), np.full(5, 3.0), np.zeros(10)]])
    prof = ReferenceProfiles(0.05).fit(xr, yr, ["a", "b"])
    assert prof.threshold < prof.median
    s = np.linspace(-0.2, 0.2, 101) + prof.median  # median = the reference's: no shift
    assert prof.query_threshold(s) == prof.threshold
    assert np.isclose(prof.query_threshold(s - 0.1), prof.threshold - 0.1)  # a lower query: lower threshold
    assert prof.query_threshold(s + 0.1) == prof.threshold  # never raised
    rule = prof.rule(prof.query_threshold(s - 0.1))
    assert rule["rule"] == "similarity" and np.isclose(rule["threshold"], prof.threshold - 0.1)
    assert rule["reference_threshold"] == prof.threshold and rule["reference_median"] == prof.median
    old = ReferenceProfiles.from_dict({k: v for k, v in prof.to_dict().items() if k != "median"})
    assert old.median is None and old.query_threshold(s - 0.1) == prof.threshold  # saved before the shift
