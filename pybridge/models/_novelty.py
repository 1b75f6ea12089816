"""A calibrated "Unknown" for label transfer: is a query cell like the reference cells of the
type it was given?

:class:`ReferenceProfiles` keeps, per reference cell type, the mean profile of its cells in
standardised expression (each gene z-scored with the reference's own mean / sd, clipped to
+-10), a SingleR-like correlation view of the reference (Aran et al. 2019, Nat Immunol 20:163),
and rejection thresholds chosen on the reference itself: every reference cell is scored
against its own type's mean computed without it (leave-one-out, i.e. held-out cells), and each
type's threshold is the ``quantile`` of its cells' scores (types with fewer than ``min_cells``
cells: the quantile of all cells, pooled). A query cell is "Unknown" when the correlation of
its profile (standardised with the query's own statistics, weighted to the reference's
cell-type composition so platform and composition shifts cancel) with the mean profile of its
predicted type is below that type's threshold. Another study or platform lowers the
correlations of every type, not only a novel type's: when the median correlation of the query
cells predicted as a type is below the median of that type's held-out reference cells, its
threshold moves down by the difference (never up).

Measured on the pairs of benchmarks/bench_annotate.py (tosica defaults, seed 0, tag perclass),
share of the query's cells called "Unknown" with all types in the reference / with B left
out of the reference, among cells of the types it has and among the B cells; the pooled
threshold (one for all types, whole-query shift) before in brackets:
pbmc 3' v2 -> 5' 3.0% / 3.9% and 87% (1.9% / 1.4% and 89%); Kang CTRL -> STIM 3.5% / 2.7% and
70% (2.5% / 2.6% and 18%); pbmc_3tech -> kang_ifnb 5.9% / 4.3% and 83% (6.5% / 7.1% and 94%);
kang_ifnb -> pbmc_3tech 2.6% / 2.3% and 72% (2.8% / 2.2% and 69%).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._tosica_data import composition_weights, gene_stats

_CLIP = 10.0


def _zscore(x: sp.csr_matrix, mean: np.ndarray, inv: np.ndarray) -> np.ndarray:
    return np.clip((x.toarray() - mean) * inv, -_CLIP, _CLIP).astype(np.float32)


def _center_rows(a: np.ndarray) -> np.ndarray:
    a = a - a.mean(axis=1, keepdims=True)
    return a / np.sqrt((a * a).sum(axis=1, keepdims=True) + 1e-12)


class ReferenceProfiles:
    """Per-type mean standardised profiles of a reference and calibrated per-type rejection thresholds.

    Rule (``unknown_threshold="auto"``): every reference cell is scored (Pearson correlation of
    its standardised profile) against its own type's mean computed without it (held-out,
    leave-one-out). Each type ``c`` gets its own threshold ``t_c``, the ``quantile`` of the
    held-out scores of its cells, and its own median ``m_c``; a type with fewer than
    ``min_cells`` cells uses the pooled quantile / median of all held-out reference cells
    (``t``, ``m``). A query cell predicted as ``c`` is "Unknown" when its correlation with the
    mean profile of ``c`` is below ``t_c + min(0, q_c - m_c)``, where ``q_c`` is the median
    correlation of the query cells predicted as ``c`` (a shift of a whole type in another
    study or platform is not novelty; the threshold is never raised). When fewer than
    ``min_cells`` query cells are predicted as ``c`` (or ``c`` uses the pooled threshold), the
    shift is the whole query's, ``min(0, q - m)``.

    Parameters
    ----------
    quantile
        Share of each type's reference cells (scored leave-one-out) that its threshold would
        reject; the expected share of a query's cells of known types called "Unknown" within a
        study. In (0, 1).
    min_cells
        Fewest held-out reference cells of a type (and query cells predicted as it) for its own
        threshold (and shift); fewer: the pooled threshold (shift).

    Attributes
    ----------
    classes : list[str]
    centroids : ndarray (classes x genes, float32)
    threshold : float
        Pooled threshold: the ``quantile`` of all held-out reference cells' correlations.
    median : float
        Median correlation of all held-out reference cells.
    class_thresholds, class_medians : ndarray (classes, float64) or None
        Per-type threshold / median before the query's shift (pooled values where a type has
        fewer than ``min_cells`` cells); ``None`` for models saved before per-type thresholds
        (then the pooled rule applies).
    class_counts : ndarray (classes, int64)
        Reference cells per type.

    References
    ----------
    Correlation with reference type profiles as in SingleR (Aran et al. 2019, Nat Immunol
    20:163); per-type rejection thresholds from held-out reference cells.
    """

    def __init__(self, quantile: float = 0.05, min_cells: int = 30):
        self.quantile = float(quantile)
        self.min_cells = int(min_cells)
        self.classes: list[str] = []
        self.centroids = np.zeros((0, 0), np.float32)
        self.fractions = np.zeros(0)
        self.threshold = -1.0
        self.median: float | None = None
        self.class_thresholds: np.ndarray | None = None
        self.class_medians: np.ndarray | None = None
        self.class_counts = np.zeros(0, np.int64)

    def fit(self, x: sp.csr_matrix, labels: np.ndarray, classes: list[str]) -> "ReferenceProfiles":
        """``x``: log-normalised reference (cells x genes); ``labels``: class index per cell."""
        mean, inv = gene_stats(x)
        z = _zscore(x, mean, inv)
        k = len(classes)
        n = np.bincount(labels, minlength=k).astype(np.float64)
        sums = np.zeros((k, z.shape[1]))
        np.add.at(sums, labels, z)
        self.classes = list(classes)
        self.centroids = (sums / np.maximum(n, 1)[:, None]).astype(np.float32)
        self.fractions = n / n.sum()
        self.class_counts = n.astype(np.int64)
        loo = (sums[labels] - z) / np.maximum(n[labels] - 1, 1)[:, None]
        own = (_center_rows(z) * _center_rows(loo)).sum(axis=1)
        single = n[labels] < 2  # no held-out mean for a one-cell type: not used to calibrate
        self.threshold = float(np.quantile(own[~single], self.quantile)) if (~single).any() else -1.0
        self.median = float(np.median(own[~single])) if (~single).any() else None
        self.class_thresholds = np.full(k, self.threshold)
        self.class_medians = np.full(k, np.nan if self.median is None else self.median)
        for c in np.flatnonzero(n >= max(self.min_cells, 2)):
            self.class_thresholds[c] = np.quantile(own[labels == c], self.quantile)
            self.class_medians[c] = np.median(own[labels == c])
        return self

    def score(self, x: sp.csr_matrix, predicted: np.ndarray) -> np.ndarray:
        """Correlation of each query cell (log-normalised, the reference's genes) with the mean
        profile of its predicted class, after standardising the query with its own statistics
        weighted to the reference's composition."""
        w = composition_weights(predicted, self.fractions)
        mean, inv = gene_stats(x, w)
        z = _center_rows(_zscore(x, mean, inv))
        return (z * _center_rows(self.centroids)[predicted]).sum(axis=1)

    def query_threshold(self, scores: np.ndarray, predicted: np.ndarray | None = None) -> np.ndarray:
        """Per-class thresholds (classes, float64) for a query with these ``scores`` of cells
        predicted as ``predicted`` (class indices): each class's threshold lowered by as much
        as the median score of its query cells is below its reference median (the whole
        query's shift for pooled classes or classes with fewer than ``min_cells`` query
        cells); never raised. Without ``predicted`` or per-class thresholds: the pooled
        threshold with the whole query's shift, for every class."""
        k = len(self.classes)
        if self.median is None or len(scores) == 0:
            return np.full(k, self.threshold)
        shift = min(0.0, float(np.median(scores)) - self.median)
        if self.class_thresholds is None or predicted is None:
            return np.full(k, self.threshold + shift)
        out = self.class_thresholds + shift
        m = np.bincount(predicted, minlength=k)
        own = (self.class_counts >= max(self.min_cells, 2)) & (m >= self.min_cells)
        for c in np.flatnonzero(own):
            q = float(np.median(scores[predicted == c]))
            out[c] = self.class_thresholds[c] + min(0.0, q - self.class_medians[c])
        return out

    def is_unknown(self, x: sp.csr_matrix, predicted: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(bool per cell: below its predicted class's threshold, the correlations, the
        per-class thresholds applied (classes, float64))."""
        s = self.score(x, predicted)
        t = self.query_threshold(s, predicted)
        return s < t[predicted], s, t

    def rule(self, applied: np.ndarray) -> dict:
        """The ``unknown_rule`` record of a prediction that used per-class thresholds ``applied``:
        ``threshold`` (the lowest applied threshold: a cell below it is "Unknown" whatever its
        class), ``thresholds`` (class -> applied threshold), ``reference_thresholds`` (class ->
        threshold before the shift), the pooled ``reference_threshold`` / ``reference_median``,
        ``quantile`` and ``min_cells``."""
        applied = np.asarray(applied, dtype=np.float64)
        ref = self.class_thresholds if self.class_thresholds is not None else np.full(len(self.classes), self.threshold)
        return dict(rule="similarity", per_class=self.class_thresholds is not None,
                    threshold=float(applied.min()) if applied.size else float(self.threshold),
                    thresholds={c: float(v) for c, v in zip(self.classes, applied)},
                    reference_thresholds={c: float(v) for c, v in zip(self.classes, ref)},
                    quantile=self.quantile, min_cells=self.min_cells,
                    reference_threshold=self.threshold, reference_median=self.median)

    def to_dict(self) -> dict:
        return dict(quantile=self.quantile, min_cells=self.min_cells, classes=self.classes,
                    threshold=self.threshold, median=self.median, fractions=self.fractions.tolist(),
                    centroids=self.centroids.tolist(), class_counts=self.class_counts.tolist(),
                    class_thresholds=None if self.class_thresholds is None else self.class_thresholds.tolist(),
                    class_medians=None if self.class_medians is None else self.class_medians.tolist())

    @classmethod
    def from_dict(cls, d: dict) -> "ReferenceProfiles":
        self = cls(d["quantile"], d.get("min_cells", 30))
        self.classes, self.threshold = list(d["classes"]), float(d["threshold"])
        self.median = None if d.get("median") is None else float(d["median"])
        self.fractions = np.asarray(d["fractions"], dtype=np.float64)
        self.centroids = np.asarray(d["centroids"], dtype=np.float32)
        if d.get("class_thresholds") is not None:  # saved before per-class thresholds: pooled rule
            self.class_thresholds = np.asarray(d["class_thresholds"], dtype=np.float64)
            self.class_medians = np.asarray(d["class_medians"], dtype=np.float64)
            self.class_counts = np.asarray(d["class_counts"], dtype=np.int64)
        return self
