"""TOSICA-style cell-type annotation model: train on a labelled reference, predict a query.

The model class (data, training, prediction, save/load) around the torch network in
:mod:`._tosica_module` (split like scvi-tools' model / module); loops over cells in
:mod:`._tosica_loops`, data helpers in :mod:`._tosica_data`, "Unknown" in :mod:`._novelty`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import check_obs_key, logger, shared_genes
from .._device import resolve_device, torch_device
from ._novelty import ReferenceProfiles
from ._tosica_loops import forward_all, query_probabilities
from ._tosica_data import (align_genes, auto_batch_size, build_tokens, counts_matrix, gene_stats,  # noqa: F401
                           lognorm_over, reference_fingerprint, top_variable)

SCALINGS = ("auto", "reference", "query", "balanced")


@dataclass
class TOSICAPrediction:
    """Result of :meth:`TOSICA.predict` (all indexed by the query's cell names).

    Attributes
    ----------
    labels
        Categorical Series: the predicted class, or ``"Unknown"`` (see ``unknown_threshold``).
    probability
        Float Series: the highest class probability (of the predicted class), in [0, 1].
    probabilities
        DataFrame cells x classes: the class probabilities.
    attention
        DataFrame cells x tokens (gene sets, then unannotated/learned tokens): the class
        token's attention over each token in the last layer (mean over heads), or ``None``.
    similarity
        Float Series: correlation of the cell with the reference profile of its predicted
        class (the calibrated "Unknown" score; "Unknown" below the model's threshold).
    """

    labels: pd.Series
    probability: pd.Series
    probabilities: pd.DataFrame
    attention: pd.DataFrame | None
    similarity: pd.Series | None = None


class TOSICA:
    """Gene-set-token transformer for cell-type annotation (TOSICA-style).

    Method: TOSICA, Chen J. et al. (2023) "Transformer for one stop interpretable cell type
    annotation", Nat Commun 14:223. Each token is a gene set (e.g. a GO biological process)
    embedded by a masked linear layer from its genes only (one ``token_dim`` vector per set,
    plus TOSICA's "unannotated" token over the genes in no chosen set); a class token
    attends over the gene-set tokens through transformer encoder layers and a linear head
    predicts the cell type. The class token's attention over gene sets explains each
    prediction.

    Differences from the published code, chosen for speed on CPU and robustness across
    batches/conditions (measured on pbmc 3'v2 -> 5' and Kang CTRL -> STIM): AdamW with a
    cosine schedule at batch size up to 256 (not SGD at 8); one encoder layer by default,
    whose output is evaluated for the class token only (identical result, ~n_tokens x less
    attention work); gene-set weights start at zero (genes silent in the reference keep a
    zero weight instead of a random one, like a regularised linear model); log-normalised
    inputs are standardised with the reference's per-gene mean/sd and clipped to
    ``+-clip``; whole gene-set tokens are dropped at random during training
    (``token_dropout``); gene sets are chosen per label (round robin over the labels' most
    specific sets) under TOSICA's cap of 300; a class-balanced, label-smoothed loss.

    Across studies (measured in benchmarks/bench_annotate.py on pbmc_3tech <-> kang_ifnb): the
    query is standardised with its own per-gene statistics, its cells weighted to the reference's
    cell-type composition (``"balanced"``), when it is shifted from the reference
    (``input_scaling="auto"``; within a study the predictions with the reference's and the balanced
    statistics are averaged), and a linear head over all genes (an L2 logistic regression,
    ``linear_C``) is averaged with the transformer's probabilities. A cell is "Unknown" when it does
    not resemble the reference cells of its predicted type (correlation with their mean standardised
    profile below that type's threshold set on its held-out reference cells, :mod:`._novelty`).

    Normalisation: counts over the model's genes are scaled to ``target_sum`` (1e4) per cell
    and ``log1p``-transformed, identically for reference and query (and any later query); the
    inputs must be raw counts.

    Encoder API (used by in-silico deletion, :func:`pybridge.tl.score_perturbation`): ``genes``
    (the model's input genes, in input order); ``embed(adata) -> np.ndarray`` (cells x ``token_dim``,
    float32: the class token after the final LayerNorm, the classification head's input, from the
    counts of ``adata``, genes matched by name, missing genes = 0); ``TOSICA.load(dir)``, ``.to(device)``.

    Parameters
    ----------
    gene_sets
        ``None`` (embedded human GO-BP, ``pybridge.datasets.path("GO_BP_human")``), a GMT path,
        or ``{name: genes}``. ``False``: no gene sets (learned tokens only).
    min_set_size, max_set_size
        Keep gene sets with this many genes among the model's genes (TOSICA: max 300).
    max_gene_sets
        At most this many gene-set tokens (TOSICA: 300). ``None``: all that pass.
    rank_gene_sets
        How to choose sets under the cap: ``"label"`` (variance of the set score explained by
        the reference labels, default), ``"variance"``, ``"coverage"`` or ``"none"`` (see
        :func:`pybridge._core.select_gene_sets`).
    max_overlap
        Skip a set whose Jaccard index with an already chosen set exceeds this.
    n_unannotated
        Tokens built from the genes in no chosen set (TOSICA: 1); 0 for none.
    n_learned_tokens
        Number of tokens over random gene subsets (1.5% of genes each, TOSICA's mask ratio)
        used when no gene set is usable (a warning says so and ``fallback`` is True).
    token_dim, n_heads, n_layers, dropout
        Transformer size (token vector length, attention heads, encoder layers, dropout).
    token_dropout
        Probability of hiding each gene-set token from the class token during training.
    input_dropout
        Dropout on the (standardised) gene inputs during training.
    target_sum
        Per-cell total after normalisation.
    scale, clip
        Standardise each gene with the reference mean/sd, then clip to ``[-clip, clip]``.
    input_scaling
        Statistics that standardise a query: ``"reference"`` (the reference's), ``"query"`` (the
        query's own), ``"balanced"`` (the query's own, its cells weighted to the reference's composition
        by a first-pass prediction) or ``"auto"`` (``"balanced"`` when the query is shifted from the
        reference, else the mean of the ``"reference"`` and ``"balanced"`` predictions;
        :func:`._tosica_loops.reference_likeness`). Training and :meth:`embed` use the reference's.
    linear_C
        Inverse L2 strength of the linear head over all genes (scikit-learn
        ``LogisticRegression(C=...)``); ``None``: no linear head.
    unknown_quantile
        Share of each type's held-out reference cells its "Unknown" threshold would reject.

    Attributes
    ----------
    genes : list[str]
        Input genes (after :meth:`fit`).
    classes : list[str]
        Labels the model predicts.
    token_names : list[str]
        Gene-set names, then ``UNANNOTATED_*`` / ``LEARNED_TOKEN_*`` tokens.
    token_genes : list[list[str]]
        Genes of each token.
    fallback : bool
        True when no gene set was usable and learned tokens were used instead.
    history : list[dict]
        Per-epoch training loss and accuracy.
    reference : dict
        What the model was trained on (labels column, classes, cell count, a hash of cell
        names and labels).
    """

    def __init__(self, gene_sets=None, *, min_set_size: int = 5, max_set_size: int = 300,
                 max_gene_sets: int | None = 300, rank_gene_sets: str = "label", max_overlap: float = 0.8,
                 n_unannotated: int = 1, n_learned_tokens: int = 64, token_dim: int = 48, n_heads: int = 4,
                 n_layers: int = 1, dropout: float = 0.1, token_dropout: float = 0.5, input_dropout: float = 0.0,
                 target_sum: float = 1e4, scale: bool = True, clip: float = 2.0, input_scaling: str = "auto",
                 linear_C: float | None = 0.1, unknown_quantile: float = 0.05):
        if input_scaling not in SCALINGS:
            raise ValueError(f"input_scaling must be one of {', '.join(SCALINGS)}, got {input_scaling!r}.")
        self.gene_sets = gene_sets
        self.config = dict(
            min_set_size=int(min_set_size), max_set_size=int(max_set_size),
            max_gene_sets=None if max_gene_sets is None else int(max_gene_sets),
            rank_gene_sets=str(rank_gene_sets), max_overlap=float(max_overlap),
            n_unannotated=int(n_unannotated), n_learned_tokens=int(n_learned_tokens),
            token_dim=int(token_dim), n_heads=int(n_heads), n_layers=int(n_layers), dropout=float(dropout),
            target_sum=float(target_sum), scale=bool(scale), input_dropout=float(input_dropout),
            token_dropout=float(token_dropout), clip=float(clip), input_scaling=str(input_scaling),
            linear_C=None if linear_C is None else float(linear_C), unknown_quantile=float(unknown_quantile),
        )
        self.module = None
        self.genes: list[str] | None = None
        self.classes: list[str] | None = None
        self.token_names: list[str] = []
        self.token_genes: list[list[str]] = []
        self.fallback = False
        self.gene_set_source = ""
        self.labels_key: str | None = None
        self.reference: dict = {}
        self.profiles: ReferenceProfiles | None = None
        self.history: list[dict] = []
        self.train_info: dict = {}
        self.scaling_used: dict = {}
        self.device = "cpu"

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        if self.module is None:
            return "TOSICA (not trained)"
        return (f"TOSICA: {len(self.genes)} genes, {len(self.token_names)} tokens "
                f"({'learned' if self.fallback else 'gene sets'}), {len(self.classes)} classes, "
                f"{self.config['n_layers']} layer(s) x {self.config['token_dim']} dims, device {self.device}")

    def _check_trained(self):
        if self.module is None:
            raise RuntimeError("the model is not trained: call fit(reference, labels_key) or TOSICA.load(dir).")

    def to(self, device: str = "auto") -> "TOSICA":
        """Move the network to ``device`` (``"auto"``, ``"cpu"``, ``"cuda"``); returns self."""
        self.device = resolve_device(device)
        if self.module is not None:
            self.module.to(torch_device(self.device))
        return self

    def _inputs(self, adata, layer, *, name: str) -> sp.csr_matrix:
        """Log-normalised CSR of ``adata`` over ``self.genes`` (missing genes are zero)."""
        have = list(map(str, adata.var_names))
        n = len(self.genes)
        present = shared_genes(have, self.genes, min_shared=max(1, math.ceil(0.5 * n)),
                               what=f"{name} and the model")
        if len(present) < n:
            frac = 1 - len(present) / n
            (logger.warning if frac > 0.1 else logger.info)(
                "%s lacks %d of the model's %d genes (%.0f%%); they are set to 0.",
                name, n - len(present), n, 100 * frac)
        return lognorm_over(adata, layer, self.genes, name=name, target_sum=self.config["target_sum"])

    def _build_tokens(self, genes, xn, labels, rng):
        self.token_names, self.token_genes, self.fallback, self.gene_set_source, self.gene_set_table = build_tokens(
            self.gene_sets, genes, xn, labels, rng, self.config)

    def _make_module(self):
        from ._tosica_module import TOSICAModule

        cfg = self.config
        pos = {g: i for i, g in enumerate(self.genes)}
        token_idx = [[pos[g] for g in m] for m in self.token_genes]
        return TOSICAModule(len(self.genes), token_idx, len(self.classes), token_dim=cfg["token_dim"],
                            n_heads=cfg["n_heads"], n_layers=cfg["n_layers"], dropout=cfg["dropout"],
                            input_dropout=cfg.get("input_dropout", 0.0), token_dropout=cfg.get("token_dropout", 0.0),
                            clip=cfg.get("clip", 10.0), linear_head=cfg.get("linear_C") is not None)

    # ------------------------------------------------------------------ training
    def fit(self, adata, labels_key: str, *, layer: str | None = None, genes=None,
            n_top_genes: int | None = None, max_epochs: int = 20,
            batch_size: int | None = None, learning_rate: float = 1e-3, weight_decay: float = 0.01,
            class_weight: str | None = "balanced", label_smoothing: float = 0.1, device: str = "auto",
            random_state: int = 0, verbose: bool | None = None) -> "TOSICA":
        """Train on a labelled reference.

        Parameters
        ----------
        adata
            Reference AnnData with raw counts in ``X`` (or ``layers[layer]``), cells x genes.
        labels_key
            Column of ``adata.obs`` with the cell types; cells with a missing label are left out.
        layer
            Layer with counts (``None``: ``X``).
        genes
            Input genes (e.g. those shared with the query); ``None``: all of ``adata``'s genes.
        n_top_genes
            Keep only this many highly variable genes of ``genes`` (Seurat flavour, on the
            log-normalised reference; :func:`pybridge.pp.variable_genes`); ``None``: all ``genes``.
        max_epochs, learning_rate, weight_decay
            AdamW with a cosine learning-rate decay over ``max_epochs`` passes.
        batch_size
            Cells per step. ``None``: 256, or fewer for references under 4,096 cells so that
            an epoch has at least 16 steps (at least 32 cells per step).
        class_weight
            ``"balanced"``: cross-entropy weighted by ``1/sqrt(class frequency)`` so rare types
            count; ``None``: unweighted.
        label_smoothing
            Cross-entropy label smoothing.
        device
            ``"auto"``, ``"cpu"`` or ``"cuda"``.
        random_state
            Seed for initialisation, batching and dropout.
        verbose
            Progress lines per epoch (``None``: follow ``pybridge.settings.verbosity``).

        Returns
        -------
        self

        Raises
        ------
        KeyError
            If ``labels_key`` is not in ``obs`` (lists the columns).
        ValueError
            If the data are not counts, fewer than 2 classes are labelled, or ``genes`` are not
            in ``adata``.
        """
        import torch

        from ._tosica_loops import fit_linear_head, train_network

        check_obs_key(adata, labels_key, what="labels_key")
        t0 = time.perf_counter()
        rng = np.random.default_rng(random_state)
        torch.manual_seed(random_state)
        have = list(map(str, adata.var_names))
        genes = have if genes is None else list(map(str, genes))
        missing = set(genes) - set(have)
        if missing:
            raise ValueError(f"{len(missing)} of the requested genes are not in the reference "
                             f"(e.g. {', '.join(sorted(missing)[:3])}).")
        if len(set(genes)) != len(genes):
            raise ValueError("genes must be unique (the reference has duplicated gene names?).")
        lab = adata.obs[labels_key]
        keep = np.flatnonzero(~lab.isna().to_numpy())
        if len(keep) < adata.n_obs:
            logger.info("leaving out %d reference cells with no %s", adata.n_obs - len(keep), labels_key)
        lab = lab.iloc[keep].astype(str).to_numpy()
        classes = sorted(set(lab))
        if len(classes) < 2:
            raise ValueError(f"obs[{labels_key!r}] has {len(classes)} labelled class(es); at least 2 are needed.")
        self.classes, self.labels_key = classes, labels_key
        self.reference = reference_fingerprint(adata, labels_key)
        x = lognorm_over(adata, layer, genes, name="reference", target_sum=self.config["target_sum"])[keep]
        if n_top_genes is not None and n_top_genes < len(genes):
            genes = [genes[i] for i in top_variable(x, int(n_top_genes))]
            # normalisation is over the model's genes: redo it on the kept genes
            x = lognorm_over(adata, layer, genes, name="reference", target_sum=self.config["target_sum"])[keep]
            logger.info("kept %d highly variable genes", len(genes))
        self.genes = genes
        y = np.searchsorted(np.array(classes), lab)

        self._build_tokens(genes, x, lab, rng)
        self.module = self._make_module()
        if self.config["scale"]:
            mean, inv = gene_stats(x)
            self.module.gene_mean.copy_(torch.as_tensor(mean))
            self.module.gene_inv_sd.copy_(torch.as_tensor(inv))
        self.device = resolve_device(device)
        dev = torch_device(self.device)
        self.module.to(dev)
        n = x.shape[0]
        bs = auto_batch_size(n) if batch_size is None else int(min(batch_size, n))
        t_loop = time.perf_counter()
        self.history = train_network(self.module, x, y, n_classes=len(classes), max_epochs=int(max_epochs),
                                     batch_size=bs, learning_rate=learning_rate, weight_decay=weight_decay,
                                     class_weight=class_weight, label_smoothing=label_smoothing, device=dev,
                                     rng=rng, verbose=verbose)
        loop = time.perf_counter() - t_loop
        if self.config.get("linear_C") is not None:
            fit_linear_head(self.module, x, y, n_classes=len(classes), C=self.config["linear_C"],
                            random_state=random_state)
            self.module.to(dev)
        self.profiles = ReferenceProfiles(self.config["unknown_quantile"]).fit(x, y, classes)
        secs = time.perf_counter() - t0
        self.train_info = dict(
            n_cells=int(n), n_genes=len(genes), n_tokens=len(self.token_names),
            n_gene_set_tokens=0 if self.fallback else sum(not t.startswith("UNANNOTATED_") for t in self.token_names),
            max_epochs=int(max_epochs), batch_size=bs, learning_rate=float(learning_rate),
            weight_decay=float(weight_decay), class_weight=class_weight or "none",
            label_smoothing=float(label_smoothing), random_state=int(random_state), device=self.device,
            seconds=float(secs), setup_seconds=float(secs - loop),
            cells_per_second=float(n * int(max_epochs) / max(loop, 1e-9)),
            final_loss=self.history[-1]["loss"] if self.history else float("nan"),
            final_train_accuracy=self.history[-1]["accuracy"] if self.history else float("nan"),
            unknown_threshold=self.profiles.threshold,
        )
        logger.info("TOSICA trained on %d cells x %d genes, %d tokens, %d epochs in %.1fs (train acc %.3f)",
                    n, len(genes), len(self.token_names), max_epochs, secs,
                    self.train_info["final_train_accuracy"])
        return self

    # ------------------------------------------------------------------ inference
    def _forward_all(self, x: sp.csr_matrix, *, batch_size: int, attention: bool, stats=None):
        return forward_all(self, x, batch_size=batch_size, attention=attention, stats=stats)

    def predict(self, adata, *, layer: str | None = None, unknown_threshold: float | str = "auto",
                batch_size: int = 1024, attention: bool = True) -> TOSICAPrediction:
        """Predict cell types of a query.

        Parameters
        ----------
        adata
            Query AnnData, raw counts in ``X`` (or ``layers[layer]``); genes matched by name to
            :attr:`genes` (missing genes are 0; an error when fewer than half are present).
        unknown_threshold
            ``"auto"``: a cell is ``"Unknown"`` when its correlation with the reference profile
            of its predicted type is below that type's threshold calibrated on its held-out
            reference cells (:class:`pybridge.models._novelty.ReferenceProfiles`); a number: when its
            highest class probability is below it (0: never).
        batch_size
            Cells per forward pass.
        attention
            Also return the class-token attention over tokens.

        Returns
        -------
        :class:`TOSICAPrediction`
        """
        self._check_trained()
        x = self._inputs(adata, layer, name="query")
        p, _, att = query_probabilities(self, x, batch_size=batch_size, attention=attention)
        idx = pd.Index(map(str, adata.obs_names))
        best = p.argmax(axis=1) if p.shape[0] else np.zeros(0, int)
        prob = p.max(axis=1) if p.shape[0] else np.zeros(0)
        if unknown_threshold == "auto" and self.profiles is not None and p.shape[0]:
            unknown, sim, _ = self.profiles.is_unknown(x, best)
        else:  # a probability threshold (models saved before calibration: 0.5)
            unknown, sim = prob < (0.5 if unknown_threshold == "auto" else float(unknown_threshold)), None
        lab = np.array(self.classes, dtype=object)[best]
        lab[unknown] = "Unknown"
        cats = list(self.classes) + (["Unknown"] if "Unknown" not in self.classes else [])
        return TOSICAPrediction(
            labels=pd.Series(pd.Categorical(lab, categories=cats), index=idx),
            probability=pd.Series(prob.astype(np.float64), index=idx),
            probabilities=pd.DataFrame(p.astype(np.float64), index=idx, columns=list(self.classes)),
            attention=None if att is None else pd.DataFrame(att, index=idx, columns=list(self.token_names)),
            similarity=None if sim is None else pd.Series(np.asarray(sim, dtype=np.float64), index=idx),
        )

    def embed(self, adata, *, layer: str | None = None, batch_size: int = 1024) -> np.ndarray:
        """Class-token embedding (cells x ``token_dim``, float32): the input of the head.

        ``adata`` holds counts (genes matched by name to :attr:`genes`, missing genes 0); it is
        normalised as in training and standardised with the reference's statistics (so a
        gene set to zero in every cell, as in in-silico deletion, stays visible).
        """
        self._check_trained()
        x = self._inputs(adata, layer, name="data")
        return self._forward_all(x, batch_size=batch_size, attention=False)[1]

    # ------------------------------------------------------------------ persistence
    def save(self, path, *, overwrite: bool = False) -> Path:
        """Save to directory ``path`` (``tosica.json`` + ``tosica_weights.pt``, written
        atomically); returns it.

        Raises
        ------
        FileExistsError
            If ``path`` already holds a model and ``overwrite`` is False.
        """
        from ._tosica_io import save

        self._check_trained()
        return save(self, Path(path), overwrite=overwrite)

    @classmethod
    def load(cls, path, *, device: str = "auto") -> "TOSICA":
        """Load a model saved by :meth:`save`.

        Raises
        ------
        FileNotFoundError
            If ``path`` holds no ``tosica.json`` / ``tosica_weights.pt``.
        ValueError
            If it was written by a newer pybridge.
        """
        from ._tosica_io import load

        return load(cls, Path(path)).to(device)
