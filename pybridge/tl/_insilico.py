"""In-silico gene deletion with a trained encoder.

Theodoris et al. 2023, "Transfer learning enables predictions in network biology", Nature
618:616 (Geneformer's ``InSilicoPerturber``). With an encoder (scVI, TOSICA, or any object with
``.genes`` / ``.embed``; :mod:`pybridge.tl._encoders`), each gene is set to zero in the perturbed
cells, the cells are re-encoded, and the shift of their embedding -- away from where they were and
towards the mean embedding of the goal cells of the same type -- is compared with deleting random
genes of matched mean expression.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._core import check_counts, check_obs_level, clean_uns, get_matrix, is_verbose, logger, progress, shared_genes
from .._device import resolve_device
from ._perturbation_utils import cell_types, condition_labels, one_perturbed


def insilico_deletion(
    adata,
    condition_key: str,
    control: str,
    *,
    model,
    genes: str | Sequence[str],
    perturbed: str | None = None,
    goal: str | None = None,
    cell_type_key: str | None = None,
    groups: str | Sequence[str] | None = None,
    layer: str | None = None,
    n_random: int = 50,
    max_cells: int | None = 500,
    min_cells: int = 5,
    batch_size: int = 4096,
    device: str = "auto",
    random_state: int = 0,
    key_added: str = "insilico",
    verbose: bool | None = None,
) -> pd.DataFrame:
    """Delete genes in silico and measure the move of the cells' embedding towards a goal state.

    Parameters
    ----------
    adata
        :class:`~anndata.AnnData`, cells x genes, raw counts in ``X`` or ``layer`` (the encoder
        re-encodes counts).
    condition_key
        Column of ``obs`` with the condition (e.g. ``"stim"``).
    control
        The control level of ``condition_key``; the default ``goal``.
    model
        The encoder: a directory saved by :func:`pybridge.tl.integrate_scvi` (``save_path=``) or
        scvi-tools ``model.save()``, a pybridge TOSICA directory, a loaded scvi-tools model, or an
        object with ``.genes`` and ``.embed(adata)`` (:func:`pybridge.tl._encoders.load_encoder`).
    genes
        Genes to delete (set to zero), each scored separately.
    perturbed
        The level whose cells are perturbed in silico (default: the single level other than
        ``control``).
    goal
        Level of ``condition_key`` whose mean embedding (per group) is the goal state (default:
        ``control``).
    cell_type_key
        Column of ``obs`` with cell types: deletions and the goal are per type (``None``: one
        group ``"all"``).
    groups
        Cell types to score (default: all).
    layer
        Layer holding the counts (``None``: ``X``).
    n_random
        Random genes of matched mean expression deleted per tested gene (the null).
    max_cells
        At most this many perturbed cells per group (random subsample; ``None``: all).
    min_cells
        Groups with fewer perturbed or goal cells are skipped (reported in ``status``).
    batch_size
        Cells per encoder forward pass.
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` for the encoder.
    random_state
        Seed of the cell subsample and the random genes.
    key_added
        ``uns[key_added]`` = ``{"params", "table", "goal_shift"}`` (``goal_shift``: genes x groups).
    verbose
        Progress over the groups and notes (``None``: ``pybridge.settings.verbosity``).

    Returns
    -------
    pandas.DataFrame
        One row per (gene, group): ``gene, group, n_cells`` (perturbed cells expressing the gene),
        ``mean_expression`` (log-normalised), ``cosine_shift`` (mean ``1 - cos(z, z_deleted)``),
        ``goal_shift`` (mean change of the cosine similarity to the goal mean embedding; > 0 =
        towards the goal), ``goal_distance_change`` (mean reduction of the Euclidean distance to
        the goal mean), the same for the matched random genes (``*_null_mean``),
        ``goal_shift_z``, ``goal_shift_rank`` (1 = beats every random gene), ``n_null``,
        empirical one-sided ``cosine_shift_pval`` and ``goal_shift_pval`` (``(1 + #null >=
        observed) / (1 + n_null)``), ``status``.

    Raises
    ------
    KeyError
        ``condition_key`` / ``cell_type_key`` / ``layer`` missing (lists what exists).
    ValueError
        ``control`` / ``perturbed`` / ``goal`` / ``groups`` not levels (lists them); no ``model``
        or ``genes``; genes not in the data or not among the model's genes (names them); data and
        model sharing too few genes; ``X`` / ``layer`` not raw counts.
    FileNotFoundError
        ``model`` names a directory that does not exist.
    """
    t0 = time.perf_counter()
    cond = condition_labels(adata, condition_key)
    check_obs_level(adata, condition_key, control, what="control")
    control = str(control)
    types = cell_types(adata, cell_type_key)
    dev = resolve_device(device)
    pert = one_perturbed(adata, condition_key, cond, control, perturbed)
    goal_level = control if goal is None else str(goal)
    check_obs_level(adata, condition_key, goal_level, what="goal")
    if model is None:
        raise ValueError(
            "in-silico deletion needs model=: a directory saved by pybridge.tl.integrate_scvi(save_path=...) "
            "or by scvi-tools' save(), a pybridge TOSICA directory, or a loaded scvi-tools encoder."
        )
    if genes is None or (not isinstance(genes, str) and len(genes) == 0):
        raise ValueError("in-silico deletion needs genes=: the genes to delete (e.g. ['ISG15', 'MX1']).")
    genes = [genes] if isinstance(genes, str) else [str(g) for g in genes]
    have = set(map(str, adata.var_names))
    missing = [g for g in genes if g not in have]
    if missing:
        raise ValueError(f"genes to delete not in the data: {', '.join(missing)} "
                         f"({len(genes) - len(missing)} of {len(genes)} present).")
    from ._encoders import load_encoder

    encoder = load_encoder(model, device=dev, batch_size=batch_size)
    seed = int(random_state)
    table, extra = _insilico(adata, layer, encoder, cond, types, cell_type_key, pert, goal_level, genes,
                             groups=groups, n_random=n_random, max_cells=max_cells, min_cells=int(min_cells),
                             seed=seed, verbose=verbose)
    params = dict(method="insilico", condition_key=condition_key, control=control, perturbed=pert,
                  goal=goal_level, cell_type_key=cell_type_key, layer=layer, genes=genes, n_random=n_random,
                  max_cells=max_cells, random_state=seed, device=dev, encoder=encoder.describe(),
                  seconds=round(time.perf_counter() - t0, 3))
    adata.uns[key_added] = {"params": clean_uns(params), "table": table, **extra}
    if is_verbose(verbose):
        logger.info("insilico: %d rows in %.1f s", table.shape[0], params["seconds"])
    return table


def _cos_rows(a, b):
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(axis=1) / np.maximum(na * nb, 1e-12)


def _insilico(adata, layer, encoder, cond, types, cell_type_key, pert, goal, genes, *, groups, n_random, max_cells,
              min_cells, seed, verbose=None):
    counts = get_matrix(adata, layer)
    check_counts(counts, name="X" if layer is None else f"layer {layer!r}",
                 hint="in-silico deletion re-encodes raw counts: pass layer= naming the counts layer "
                      "(Seurat: the 'counts' slot)")
    data_genes = np.asarray(adata.var_names).astype(str)
    mg = list(encoder.genes)
    not_model = [g for g in genes if g not in set(mg)]
    if not_model:
        raise ValueError(f"genes to delete not among the encoder's {len(mg)} genes: {', '.join(not_model)}. "
                         "Deleting them cannot change the embedding; retrain the encoder with them or drop them.")
    shared = shared_genes(data_genes, mg, min_shared=max(1, int(math.ceil(0.5 * len(mg)))),
                          what="data and encoder")
    if len(shared) < len(mg):
        logger.warning("%d of the encoder's %d genes are not in the data; they are set to zero",
                       len(mg) - len(shared), len(mg))
    col_of = {g: i for i, g in enumerate(data_genes)}
    mcol = {g: j for j, g in enumerate(mg)}

    all_types = sorted(set(types.tolist()) - {"nan"})
    if groups is None:
        use_groups = all_types
    else:
        use_groups = [groups] if isinstance(groups, str) else [str(g) for g in groups]
        bad = [g for g in use_groups if g not in all_types]
        if bad:
            raise ValueError(f"groups not in obs[{cell_type_key!r}]: {', '.join(bad)}. "
                             f"Values that exist: {', '.join(all_types)}.")
    rng = np.random.default_rng(seed)
    sel_p, sel_g, plan = [], [], []
    for grp in use_groups:
        ip = np.flatnonzero((types == grp) & (cond == pert))
        ig = np.flatnonzero((types == grp) & (cond == goal))
        if max_cells is not None and ip.size > max_cells:
            ip = np.sort(rng.choice(ip, int(max_cells), replace=False))
        plan.append((grp, ip, ig))
        sel_p.append(ip)
        sel_g.append(ig)
    cells = np.unique(np.concatenate(sel_p + sel_g + [np.zeros(0, int)]))
    # model input: counts of the selected cells in the model's gene order (missing genes = 0)
    xc = sp.csr_matrix(counts[cells]) if sp.issparse(counts) else sp.csr_matrix(np.asarray(counts[cells]))
    src = np.array([col_of[g] for g in shared])
    dst = np.array([mcol[g] for g in shared])
    xm = np.zeros((cells.size, len(mg)), dtype=np.float32)
    xm[:, dst] = xc[:, src].toarray()
    import anndata as ad

    bound = ad.AnnData(X=sp.csr_matrix(xm), obs=adata.obs.iloc[cells].copy(),
                       var=pd.DataFrame(index=pd.Index(mg)))
    encoder.bind(bound)
    pos = {c: i for i, c in enumerate(cells)}
    # log-normalised expression for matching random genes
    tot = xm.sum(axis=1, keepdims=True)
    tot[tot == 0] = 1
    lxm = np.log1p(xm / tot * 1e4)

    rows, wide = [], {}
    tested = [mcol[g] for g in genes]
    for grp, ip, ig in progress(plan, desc="insilico: groups", verbose=verbose):
        base = dict(group=grp, n_cells=0, mean_expression=np.nan, cosine_shift=np.nan, cosine_shift_null_mean=np.nan,
                    goal_shift=np.nan, goal_shift_null_mean=np.nan, goal_shift_z=np.nan,
                    goal_distance_change=np.nan, goal_distance_change_null_mean=np.nan, goal_shift_rank=np.nan,
                    n_null=0, cosine_shift_pval=np.nan, goal_shift_pval=np.nan, status="ok")
        if ip.size < min_cells or ig.size < min_cells:
            st = (f"skipped: fewer than {min_cells} cells ({ip.size} {pert}, {ig.size} {goal})")
            rows += [dict(base, gene=g, status=st) for g in genes]
            continue
        rp = np.array([pos[c] for c in ip])
        rg = np.array([pos[c] for c in ig])
        xp = xm[rp]
        z0 = encoder.embed(xp, rp)
        zg = encoder.embed(xm[rg], rg).mean(axis=0)
        mexpr = lxm[rp].mean(axis=0)
        frac = (xp > 0).mean(axis=0)
        # matched random genes: among expressed genes not tested, the 3*n_random closest in mean
        # log-normalised expression, of which n_random drawn at random
        cand = np.setdiff1d(np.flatnonzero(frac >= max(3 / rp.size, 0.01)), tested)
        null_of = {}
        for j in tested:
            if cand.size == 0:
                null_of[j] = np.zeros(0, int)
                continue
            order = cand[np.argsort(np.abs(mexpr[cand] - mexpr[j]), kind="stable")][: 3 * n_random]
            null_of[j] = np.sort(rng.choice(order, min(n_random, order.size), replace=False))
        todo = sorted(set(tested) | set(np.concatenate(list(null_of.values()) + [np.zeros(0, int)]).tolist()))
        eff = _deletion_effects(encoder, xp, rp, z0, zg, todo)
        for g, j in zip(genes, tested, strict=True):
            e = eff[j]
            nj = [eff[k] for k in null_of[j] if eff[k]["n"] > 0]
            r = dict(base, gene=g, n_cells=e["n"], mean_expression=float(mexpr[j]))
            if e["n"] == 0:
                r["status"] = f"not expressed in the {pert} {grp} cells"
                rows.append(r)
                continue
            ncos = np.array([d["cos"] for d in nj])
            ngoal = np.array([d["goal"] for d in nj])
            ndist = np.array([d["dist"] for d in nj])
            r.update(cosine_shift=e["cos"], goal_shift=e["goal"], goal_distance_change=e["dist"], n_null=len(nj))
            if len(nj):
                sd = ngoal.std(ddof=1) if len(nj) > 1 else np.nan
                r.update(cosine_shift_null_mean=float(ncos.mean()), goal_shift_null_mean=float(ngoal.mean()),
                         goal_distance_change_null_mean=float(ndist.mean()),
                         goal_shift_z=float((e["goal"] - ngoal.mean()) / sd) if sd and sd > 0 else np.nan,
                         goal_shift_rank=int(1 + (ngoal > e["goal"]).sum()),
                         cosine_shift_pval=float((1 + (ncos >= e["cos"]).sum()) / (1 + len(nj))),
                         goal_shift_pval=float((1 + (ngoal >= e["goal"]).sum()) / (1 + len(nj))))
            else:
                r["status"] = "no matched random genes expressed in these cells"
            rows.append(r)
            wide.setdefault(grp, {})[g] = e["goal"]
    cols = ["gene", "group", "n_cells", "mean_expression", "cosine_shift", "cosine_shift_null_mean",
            "cosine_shift_pval", "goal_shift", "goal_shift_null_mean", "goal_shift_z", "goal_shift_rank",
            "goal_shift_pval", "goal_distance_change", "goal_distance_change_null_mean", "n_null", "status"]
    table = pd.DataFrame(rows)[cols]
    goal_mat = pd.DataFrame(wide).reindex(index=genes).astype(float) if wide else pd.DataFrame(index=genes)
    goal_mat.index.name = "gene"
    return table, {"goal_shift": goal_mat}


def _deletion_effects(encoder, xp, rp, z0, zg, todo, chunk_rows: int = 16384):
    """Per gene column j in ``todo``: re-encode the cells expressing j with j set to zero."""
    cos0 = _cos_rows(z0, zg[None, :])
    d0 = np.linalg.norm(z0 - zg, axis=1)
    out = {}
    buf_x, buf_r, buf_meta = [], [], []
    nbuf = 0

    def flush():
        nonlocal buf_x, buf_r, buf_meta, nbuf
        if not buf_x:
            return
        z = encoder.embed(np.concatenate(buf_x), np.concatenate(buf_r))
        s = 0
        for j, w in buf_meta:
            zj = z[s:s + w.size]
            s += w.size
            cos_shift = 1 - _cos_rows(z0[w], zj)
            goal = _cos_rows(zj, zg[None, :]) - cos0[w]
            dist = d0[w] - np.linalg.norm(zj - zg, axis=1)
            out[j] = dict(n=int(w.size), cos=float(cos_shift.mean()), goal=float(goal.mean()),
                          dist=float(dist.mean()))
        buf_x, buf_r, buf_meta, nbuf = [], [], [], 0

    for j in todo:
        w = np.flatnonzero(xp[:, j] > 0)
        if w.size == 0:
            out[j] = dict(n=0, cos=np.nan, goal=np.nan, dist=np.nan)
            continue
        xj = xp[w].copy()
        xj[:, j] = 0
        buf_x.append(xj)
        buf_r.append(rp[w])
        buf_meta.append((j, w))
        nbuf += w.size
        if nbuf >= chunk_rows:
            flush()
    flush()
    return out
