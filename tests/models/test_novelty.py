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
    assert t.shape == (3,) and np.all(t <= prof.class_thresholds) and np.all(unknown == (sim < t[pred]))
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
    assert np.all(prof.query_threshold(s) == prof.threshold)  # no predicted classes: the pooled rule
    assert np.allclose(prof.query_threshold(s - 0.1), prof.threshold - 0.1)  # a lower query: lower threshold
    assert np.all(prof.query_threshold(s + 0.1) == prof.threshold)  # never raised
    old = ReferenceProfiles.from_dict({k: v for k, v in prof.to_dict().items() if k != "median"})
    assert old.median is None and np.all(old.query_threshold(s - 0.1) == prof.threshold)  # saved before the shift


def test_per_class_thresholds_and_shifts_with_a_pooled_fallback_for_small_classes():
    """Each class: its own held-out 5% quantile and its own query shift; a class with fewer
    than ``min_cells`` reference cells (or query cells predicted as it) falls back to the pooled
    threshold (shift)."""
    rng = np.random.default_rng(2)
    g = 30
    centers = [np.r_[np.full(10, 3.0), np.zeros(g - 10)], np.r_[np.zeros(10), np.full(10, 3.0), np.zeros(10)],
               np.r_[np.zeros(20), np.full(10, 3.0)]]
    xa, _ = _toy(rng, 200, centers[:1], noise=0.2)  # a tight class
    xb, _ = _toy(rng, 200, centers[1:2], noise=1.0)  # a loose class: a lower threshold
    xc, _ = _toy(rng, 20, centers[2:], noise=0.3)  # 20 cells < min_cells: pooled
    xr = sp.vstack([xa, xb, xc]).tocsr()
    yr = np.repeat([0, 1, 2], [200, 200, 20])
    prof = ReferenceProfiles(0.05, min_cells=30).fit(xr, yr, ["a", "b", "c"])
    ct = prof.class_thresholds
    assert ct[1] < ct[0] and ct[2] == prof.threshold and prof.class_medians[2] == prof.median
    assert prof.threshold != ct[0] and prof.threshold != ct[1]
    # the query: class a's cells scored 0.1 below the reference's median of a, class b's as the reference
    pred = np.repeat([0, 1, 2], [100, 100, 5])
    s = np.r_[np.full(100, prof.class_medians[0] - 0.1), np.full(100, prof.class_medians[1]), np.full(5, 0.0)]
    t = prof.query_threshold(s, pred)
    whole = min(0.0, float(np.median(s)) - prof.median)
    assert np.isclose(t[0], ct[0] - 0.1) and np.isclose(t[1], ct[1])  # per-class shift, never raised
    assert np.isclose(t[2], prof.threshold + whole)  # few cells: pooled threshold, whole query's shift
    rule = prof.rule(t)
    assert rule["rule"] == "similarity" and rule["per_class"] and rule["min_cells"] == 30
    assert rule["thresholds"] == {c: float(v) for c, v in zip("abc", t)} and rule["threshold"] == float(t.min())
    assert rule["reference_thresholds"]["b"] == float(ct[1]) and rule["reference_threshold"] == prof.threshold
    back = ReferenceProfiles.from_dict(prof.to_dict())
    np.testing.assert_allclose(back.query_threshold(s, pred), t)
    legacy = ReferenceProfiles.from_dict({k: v for k, v in prof.to_dict().items()
                                          if k not in ("class_thresholds", "class_medians", "class_counts")})
    assert not legacy.rule(legacy.query_threshold(s, pred))["per_class"]  # saved before: the pooled rule
    assert np.allclose(legacy.query_threshold(s, pred), prof.threshold + whole)
