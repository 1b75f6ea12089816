"""The loops over cells of the TOSICA-style annotator (:class:`pybridge.models.TOSICA` calls these).

- :func:`train_network`: the transformer, AdamW with a cosine learning-rate decay, a
  class-balanced and label-smoothed cross-entropy (one pass over the reference per epoch, with
  periodic progress lines);
- :func:`fit_linear_head`: the linear head next to the gene-set tokens, an L2-regularised
  multinomial logistic regression (scikit-learn) on the same standardised genes;
- :func:`forward_all` / :func:`query_probabilities`: batched inference, the query standardised
  as the model's ``input_scaling`` says (``"auto"``: :func:`reference_likeness` decides).
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from .._core import progress
from .._device import torch_device
from ._tosica_data import composition_weights, gene_stats

# input_scaling="auto": a query whose shift (reference_likeness) is below this is treated as
# one study with the reference (measured: pbmc 3'v2->5' -0.02, Kang CTRL->STIM 0.00; pbmc_3tech
# <-> kang_ifnb 0.08-0.11)
AUTO_SHIFT = 0.05
MIN_QUERY_CELLS = 50  # fewer query cells: their own gene statistics are too noisy, use the reference's


def class_weights(y: np.ndarray, n_classes: int, mode: str | None) -> np.ndarray:
    """``"balanced"``: ``1/sqrt(class frequency)`` (normalised to mean 1 per cell) so rare types
    count; ``None``: all 1."""
    counts = np.bincount(y, minlength=n_classes).astype(float)
    if mode == "balanced":
        w = 1.0 / np.sqrt(np.maximum(counts, 1))
        return w / (w * counts).sum() * counts.sum()
    if mode is None:
        return np.ones(n_classes)
    raise ValueError(f"class_weight must be 'balanced' or None, got {mode!r}.")


def train_network(module, x: sp.csr_matrix, y: np.ndarray, *, n_classes: int, max_epochs: int, batch_size: int,
                  learning_rate: float, weight_decay: float, class_weight: str | None, label_smoothing: float,
                  device, rng: np.random.Generator, verbose: bool | None = None) -> list[dict]:
    """Train ``module`` (in place) on log-normalised ``x`` (cells x genes) and class indices ``y``.

    Returns the per-epoch history (``epoch``, ``loss``, ``accuracy`` on the training cells).
    """
    import torch

    w = class_weights(y, n_classes, class_weight)
    loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(w, dtype=torch.float32, device=device),
                                        label_smoothing=float(label_smoothing))
    params = [p for p in module.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=weight_decay)
    n = x.shape[0]
    bs = int(min(batch_size, n))
    total = max(1, math.ceil(n / bs) * int(max_epochs))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)) * 0.99 + 0.01)
    yt = torch.as_tensor(y, dtype=torch.long)
    history = []
    module.train()
    for epoch in progress(range(int(max_epochs)), total=int(max_epochs), desc="TOSICA training (epochs)",
                          verbose=verbose):
        perm = rng.permutation(n)
        tot_loss = tot_ok = 0.0
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            if idx.size < 2 and n > 1:  # a 1-cell step is noise
                continue
            xb = torch.from_numpy(x[idx].toarray()).to(device)
            yb = yt[idx].to(device)
            out = module(xb)
            loss = loss_fn(out["logits"], yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot_loss += float(loss.detach()) * idx.size
            tot_ok += float((out["logits"].argmax(1) == yb).sum())
        history.append({"epoch": epoch + 1, "loss": tot_loss / n, "accuracy": tot_ok / n})
    module.eval()
    return history


def fit_linear_head(module, x: sp.csr_matrix, y: np.ndarray, *, n_classes: int, C: float, random_state: int) -> None:
    """Fit ``module.linear`` as scikit-learn's L2 logistic regression (multinomial, ``C``) on the
    reference standardised as the module does it (reference mean / sd, clipped to +-10)."""
    import torch
    from sklearn.linear_model import LogisticRegression

    mean = module.gene_mean.detach().cpu().numpy()
    inv = module.gene_inv_sd.detach().cpu().numpy()
    xs = np.clip((x.toarray() - mean) * inv, -10.0, 10.0)
    clf = LogisticRegression(C=float(C), max_iter=1000, random_state=int(random_state)).fit(xs, y)
    coef = np.zeros((n_classes, xs.shape[1]), dtype=np.float32)
    bias = np.zeros(n_classes, dtype=np.float32)
    seen = clf.classes_.astype(int)
    if len(seen) == 2:  # scikit-learn stores one row for two classes: logits (-z/2, z/2)
        coef[seen[1]], bias[seen[1]] = clf.coef_[0] / 2, clf.intercept_[0] / 2
        coef[seen[0]], bias[seen[0]] = -clf.coef_[0] / 2, -clf.intercept_[0] / 2
    else:
        coef[seen], bias[seen] = clf.coef_, clf.intercept_
    with torch.no_grad():
        module.linear.weight.copy_(torch.from_numpy(coef))
        module.linear.bias.copy_(torch.from_numpy(bias))


def forward_all(model, x: sp.csr_matrix, *, batch_size: int, attention: bool, stats=None):
    """Class probabilities (both heads averaged), embedding and attention for all cells."""
    import torch

    dev = torch_device(model.device)
    model.module.eval()
    probs, emb, att = [], [], []
    st = None if stats is None else tuple(torch.as_tensor(a, device=dev) for a in stats)
    with torch.inference_mode():
        for s in range(0, x.shape[0], batch_size):
            out = model.module(torch.from_numpy(x[s:s + batch_size].toarray()).to(dev),
                               need_attention=attention, stats=st)
            p = out["logits"].float().softmax(dim=1)
            if "linear_logits" in out:
                p = (p + out["linear_logits"].float().softmax(dim=1)) / 2
            probs.append(p.cpu().numpy())
            emb.append(out["embedding"].float().cpu().numpy())
            if attention:
                att.append(out["attention"].float().cpu().numpy())
    k, d = len(model.classes), model.config["token_dim"]
    return (np.concatenate(probs) if probs else np.zeros((0, k), np.float32),
            np.concatenate(emb) if emb else np.zeros((0, d), np.float32),
            (np.concatenate(att) if att else np.zeros((0, len(model.token_names)), np.float32))
            if attention else None)


def reference_likeness(model, x: sp.csr_matrix, predicted: np.ndarray) -> float:
    """How much less the query resembles the reference profiles than held-out reference cells
    do: the median correlation of held-out reference cells with their type's mean profile minus
    the query's median correlation with its predicted type's profile, both standardised with the
    reference's statistics (about 0 within a study, 0.08-0.12 between pbmc_3tech and
    kang_ifnb; positive = the query is shifted)."""
    from ._novelty import _center_rows, _zscore

    prof = model.profiles
    if prof is None or prof.median is None or x.shape[0] == 0:
        return float("nan")
    mean = model.module.gene_mean.detach().cpu().numpy()
    inv = model.module.gene_inv_sd.detach().cpu().numpy()
    z = _center_rows(_zscore(x, mean, inv))
    sim = (z * _center_rows(prof.centroids)[predicted]).sum(axis=1)
    return float(prof.median - np.median(sim))


def query_probabilities(model, x: sp.csr_matrix, *, batch_size: int, attention: bool):
    """Class probabilities (and embedding, attention) with the model's ``input_scaling``.

    Sets ``model.scaling_used`` (dict: the scaling applied and, for ``"auto"``, the query's
    shift from :func:`reference_likeness`).
    """
    scaling = model.config.get("input_scaling", "reference")
    model.scaling_used = dict(input_scaling=scaling, applied="reference")
    if scaling == "reference" or x.shape[0] < MIN_QUERY_CELLS or model.profiles is None:
        return forward_all(model, x, batch_size=batch_size, attention=attention)
    own = gene_stats(x)
    if scaling == "query":
        model.scaling_used["applied"] = "query"
        return forward_all(model, x, batch_size=batch_size, attention=attention, stats=own)
    # balanced: the query's own statistics, its cells weighted to the reference's composition
    # (first-pass classes from the reference- and query-scaled predictions)
    ref = forward_all(model, x, batch_size=batch_size, attention=attention and scaling == "auto")
    p0 = ref[0] + forward_all(model, x, batch_size=batch_size, attention=False, stats=own)[0]
    first = p0.argmax(axis=1)
    w = composition_weights(first, model.profiles.fractions)
    bal = forward_all(model, x, batch_size=batch_size, attention=attention, stats=gene_stats(x, w))
    model.scaling_used["applied"] = "balanced"
    if scaling == "auto":
        shift = reference_likeness(model, x, first)
        model.scaling_used["shift"] = shift
        if shift < AUTO_SHIFT:  # a query like the reference (one study): both scalings, averaged
            model.scaling_used["applied"] = "reference+balanced"
            return ((ref[0] + bal[0]) / 2, (ref[1] + bal[1]) / 2,
                    None if not attention else (ref[2] + bal[2]) / 2)
    return bal
