# Helpers of the h5ad tests (test-h5ad-*.R): Python (reticulate) checks the files from the other side
# (deep comparison of two AnnData objects), a difference list of two Seurat objects, and the test
# objects (read once, on first use).

py_run <- function(code) reticulate::py_run_string(code, local = FALSE, convert = FALSE)
py_main <- function() reticulate::import_main(convert = FALSE)
py_val <- function(x) reticulate::py_to_r(x)
ad_mod <- function() reticulate::import("anndata", convert = FALSE)

# A deep comparison of two AnnData objects, in Python (returns a list of differences).
.h5t_py <- "
import numpy as np, pandas as pd, scipy.sparse as sp

def _h5t_arr(a, b, path, errs):
    if sp.issparse(a) or sp.issparse(b):
        if not (sp.issparse(a) and sp.issparse(b)):
            errs.append(f'{path}: sparse vs dense'); return
        if a.shape != b.shape or (a != b).nnz:
            errs.append(f'{path}: values differ')
        return
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        errs.append(f'{path}: shape {a.shape} vs {b.shape}'); return
    if a.dtype.kind in 'fc' or b.dtype.kind in 'fc':
        ok = np.array_equal(a.astype(float), b.astype(float), equal_nan=True)
    else:
        ok = np.array_equal(a.astype(object) if a.dtype.kind in 'OUS' else a, b.astype(object) if b.dtype.kind in 'OUS' else b)
    if not ok:
        errs.append(f'{path}: values differ')

def _h5t_df(a, b, path, errs):
    if list(a.index) != list(b.index): errs.append(f'{path}: index differs')
    if list(a.columns) != list(b.columns):
        errs.append(f'{path}: columns {list(a.columns)} vs {list(b.columns)}'); return
    for c in a.columns:
        x, y = a[c], b[c]
        if str(x.dtype) != str(y.dtype): errs.append(f'{path}[{c}]: dtype {x.dtype} vs {y.dtype}')
        if isinstance(x.dtype, pd.CategoricalDtype) and isinstance(y.dtype, pd.CategoricalDtype):
            if list(x.cat.categories) != list(y.cat.categories) or x.cat.ordered != y.cat.ordered:
                errs.append(f'{path}[{c}]: categories or order differ')
        nx, ny = x.isna().to_numpy(), y.isna().to_numpy()
        if not (nx == ny).all() or not (x[~nx].astype(object).to_numpy() == y[~ny].astype(object).to_numpy()).all():
            errs.append(f'{path}[{c}]: values differ')

def _h5t_eq(a, b, path, errs):
    if isinstance(a, pd.DataFrame) or isinstance(b, pd.DataFrame):
        if not (isinstance(a, pd.DataFrame) and isinstance(b, pd.DataFrame)):
            errs.append(f'{path}: DataFrame vs other'); return
        return _h5t_df(a, b, path, errs)
    if hasattr(a, 'keys') or hasattr(b, 'keys'):
        if not (hasattr(a, 'keys') and hasattr(b, 'keys')):
            errs.append(f'{path}: dict vs other'); return
        ka, kb = set(a.keys()), set(b.keys())
        if ka != kb: errs.append(f'{path}: keys {sorted(ka ^ kb)} differ')
        for k in sorted(ka & kb): _h5t_eq(a[k], b[k], f'{path}/{k}', errs)
        return
    if isinstance(a, str) or isinstance(b, str):
        if str(a) != str(b): errs.append(f'{path}: {a!r} vs {b!r}')
        return
    _h5t_arr(a, b, path, errs)

def h5t_compare(a, b):
    errs = []
    if a.shape != b.shape: return [f'shape {a.shape} vs {b.shape}']
    _h5t_df(a.obs, b.obs, 'obs', errs)
    _h5t_df(a.var, b.var, 'var', errs)
    if (a.X is None) != (b.X is None): errs.append('X present in one only')
    elif a.X is not None: _h5t_arr(a.X, b.X, 'X', errs)
    for attr in ('layers', 'obsm', 'varm', 'obsp', 'uns'):
        _h5t_eq(dict(getattr(a, attr)), dict(getattr(b, attr)), attr, errs)
    return errs

def h5t_col(s):
    na = [bool(m) for m in s.isna().to_numpy()]
    if isinstance(s.dtype, pd.CategoricalDtype):
        return {'kind': 'cat', 'na': na, 'values': ['' if m else str(v) for v, m in zip(s.astype(object), na)],
                'levels': [str(c) for c in s.cat.categories], 'ordered': bool(s.cat.ordered)}
    if s.dtype.kind in 'biuf' or str(s.dtype) in ('Int8', 'Int16', 'Int32', 'Int64', 'UInt8', 'boolean', 'Float32', 'Float64'):
        return {'kind': 'num', 'na': na, 'values': s.to_numpy(dtype='float64', na_value=np.nan).tolist()}
    return {'kind': 'str', 'na': na, 'values': ['' if m else str(v) for v, m in zip(s.astype(object), na)]}

def h5t_dtypes(df):
    return {str(k): str(v) for k, v in df.dtypes.items()}
"
.h5t_env <- new.env(parent = emptyenv())
h5t_init <- function() {
  if (is.null(.h5t_env$py)) {
    py_run(.h5t_py)
    .h5t_env$py <- TRUE
  }
  invisible(TRUE)
}

h5t_compare <- function(a, b) {
  h5t_init()
  as.character(unlist(py_val(py_main()$h5t_compare(a, b))))
}
h5t_dtypes <- function(df) {
  h5t_init()
  unlist(py_val(py_main()$h5t_dtypes(df)))
}
py_item <- function(x, key) reticulate::py_get_item(x, key)
strip <- function(m) {  # a matrix without dimnames (unname() on a Matrix prints a note)
  if (methods::is(m, "Matrix")) dimnames(m) <- list(NULL, NULL) else dimnames(m) <- NULL
  m
}

# Differences between two Seurat objects (empty = equal), for the assays/parts the mapping carries.
seurat_diff <- function(a, b, assays = Assays(a), counts.only = character(0)) {
  d <- character(0)
  chk <- function(ok, what) if (!isTRUE(ok)) d <<- c(d, paste(what, if (!is.logical(ok)) paste(ok, collapse = "; ")))
  chk(identical(sort(Assays(a)), sort(Assays(b))), "assays")
  chk(identical(colnames(a), colnames(b)), "cells")
  chk(identical(DefaultAssay(a), DefaultAssay(b)), "default assay")
  for (as in intersect(assays, Assays(b))) {
    chk(identical(rownames(a[[as]]), rownames(b[[as]])), paste(as, "features"))
    layers <- if (as %in% counts.only) "counts" else c("counts", "data", "scale.data")
    for (l in layers) {
      chk(identical(layer_data(a, l, assay = as), layer_data(b, l, assay = as)), paste(as, l))
    }
    if (!as %in% counts.only) {
      chk(identical(features_df(a, as), features_df(b, as)), paste(as, "meta.features"))
      # (none: SeuratObject 4 keeps logical(0) in a new assay, character(0) once set)
      chk(identical(as.character(VariableFeatures(a, assay = as)), as.character(VariableFeatures(b, assay = as))),
          paste(as, "variable features"))
      chk(identical(Key(a[[as]]), Key(b[[as]])), paste(as, "key"))
    }
  }
  chk(identical(a@meta.data, b@meta.data), "meta.data")
  chk(identical(Idents(a), Idents(b)), "idents")
  chk(identical(Reductions(a), Reductions(b)), "reductions")
  for (r in intersect(Reductions(a), Reductions(b))) {
    # values and names (RunUMAP leaves a 'scaled:center' attribute that is not data)
    chk(identical(c(Embeddings(a, r)), c(Embeddings(b, r))), paste(r, "embeddings"))
    chk(identical(dimnames(Embeddings(a, r)), dimnames(Embeddings(b, r))), paste(r, "embedding names"))
    chk(identical(Loadings(a, r), Loadings(b, r)), paste(r, "loadings"))
    chk(identical(Stdev(a, r), Stdev(b, r)), paste(r, "stdev"))
    chk(identical(Key(a[[r]]), Key(b[[r]])), paste(r, "key"))
    chk(identical(DefaultAssay(a[[r]]), DefaultAssay(b[[r]])), paste(r, "assay"))
  }
  chk(identical(Graphs(a), Graphs(b)), "graphs")
  for (g in intersect(Graphs(a), Graphs(b))) {
    chk(identical(as(a[[g]], "dgCMatrix"), as(b[[g]], "dgCMatrix")), paste(g, "graph"))
    chk(identical(DefaultAssay(a[[g]]), DefaultAssay(b[[g]])), paste(g, "graph assay"))
  }
  ma <- a@misc
  mb <- b@misc
  ma[["pybridge.report"]] <- NULL
  mb[["pybridge.report"]] <- NULL
  chk(all.equal(ma[sort(names(ma))], mb[sort(names(mb))]), "misc")
  d
}


# The processed Kang object (.rds) and a 300-cell subset of it with meta.data of every kind and Misc.
h5t_kang <- function() {
  if (is.null(.h5t_env$kang)) .h5t_env$kang <- readRDS(shared_data("kang_ifnb_processed.rds"))
  .h5t_env$kang
}
h5t_small <- function() {
  if (is.null(.h5t_env$small)) {
    kang <- h5t_kang()
    set.seed(1)
    small <- subset(kang, cells = sample(colnames(kang), 300))
    small <- FindNeighbors(small, dims = 1:10, verbose = FALSE)  # subset() drops the graphs
    n <- ncol(small)
    small$chr <- rep(c("x", "y", "z"), length.out = n)
    small$chr_na <- ifelse(seq_len(n) %% 4 == 0, NA, paste0("c", seq_len(n) %% 3))
    small$int_na <- ifelse(seq_len(n) %% 5 == 0, NA_integer_, seq_len(n))
    small$lgl_na <- rep(c(TRUE, FALSE, NA), length.out = n)
    small$dbl_na <- ifelse(seq_len(n) %% 7 == 0, NA_real_, seq_len(n) / 3)
    small$ord <- factor(rep(c("lo", "hi", NA), length.out = n), levels = c("lo", "mid", "hi"), ordered = TRUE)
    small$fac_unused <- factor(rep("a", n), levels = c("b", "a", "unused"))
    Misc(small, "params") <- list(n = 3L, alpha = 0.5, name = "run 1", flag = TRUE, v = c(1.5, 2.5),
                                  s = c("u", "v"), m = matrix(1:6, 2),
                                  tab = data.frame(k = c("a", "b"), v = c(1.5, NA), stringsAsFactors = FALSE))
    .h5t_env$small <- small
  }
  .h5t_env$small
}

# ------------------------------------------------------------------ files written by other software
# An AnnData element as an R matrix (cells x k; sparse or dense in Python).
py_mat <- function(x) {
  m <- pybridge:::.py_matrix(x)
  as.matrix(m)
}
py_keys <- function(x) unlist(py_val(reticulate::import_builtins(convert = FALSE)$list(x$keys())))
py_none <- function(x) inherits(x, "python.builtin.NoneType")
py_isdf <- function(x) py_val(reticulate::import_builtins(convert = FALSE)$isinstance(x, reticulate::import("pandas", convert = FALSE)$DataFrame))

# The Seurat object ReadH5AD made from a file, checked value by value against anndata's reading `a`
# of the same file: cells, features, X and layers (in their Seurat layer or assay), obs columns,
# obsm (reductions, or assays for tables), obsp (graphs), raw. Returns the X layer used.
expect_like_anndata <- function(obj, a, label) {
  cells <- unlist(py_val(a$obs_names$tolist()))
  genes <- unlist(py_val(a$var_names$tolist()))
  expect_identical(colnames(obj), cells, label = paste(label, "cells"))
  expect_identical(rownames(obj), make.unique(gsub("_", "-", genes, fixed = TRUE)), label = paste(label, "features"))
  report <- unlist(Misc(obj, "pybridge.report"))
  layers <- py_keys(a$layers)
  has_counts_layer <- "counts" %in% layers
  X <- if (!py_none(a$X)) py_mat(a$X)
  xl <- if (is.null(X)) "counts" else if (!has_counts_layer && all(is.finite(X)) && all(X >= 0) && all(X == round(X))) "counts" else "data"
  if (!is.null(X)) {
    expect_equal(strip(as.matrix(layer_data(obj, xl))), strip(t(X)), label = paste(label, "X"))
  } else {
    expect_identical(sum(layer_data(obj, "counts") != 0), 0L, label = paste(label, "no X: empty counts"))
  }
  for (l in layers) {
    v <- py_mat(py_item(a$layers, l))
    to <- if (l == "logcounts") "data" else l
    if (to %in% c("counts", "data")) {
      if (to != xl) expect_equal(strip(as.matrix(layer_data(obj, to))), strip(t(v)), label = paste(label, "layer", l))
    } else {
      # another layer: a layer of the Assay5 under SeuratObject 5, its own assay under 4
      got <- if (is_seurat5()) layer_data(obj, l) else layer_data(obj, "counts", assay = make.names(l))
      expect_equal(strip(as.matrix(got)), strip(t(v)), label = paste(label, "layer", l))
    }
  }
  obs <- a$obs
  for (col in unlist(py_val(obs$columns$tolist()))) {
    v <- obj[[col]][, 1]
    h5t_init()
    s <- py_val(py_main()$h5t_col(py_item(obs, col)))
    na <- unlist(s$na)
    expect_identical(is.na(v), na, label = paste(label, col, "NA"))
    if (s$kind == "cat") {
      expect_identical(levels(v), as.character(unlist(s$levels)), label = paste(label, col))
      expect_identical(as.character(v)[!na], unlist(s$values)[!na], label = paste(label, col))
      expect_identical(is.ordered(v), s$ordered, label = paste(label, col, "ordered"))
    } else if (s$kind == "num") {
      expect_equal(as.numeric(v)[!na], as.numeric(unlist(s$values))[!na], label = paste(label, col))
    } else {
      expect_identical(as.character(v)[!na], unlist(s$values)[!na], label = paste(label, col))
    }
  }
  # names the layout gives way to (reductions renamed <name>_obsm): assays, and under SeuratObject 5
  # AnnData's other layers too (they become Assay5 layers there, the names are chosen first)
  taken <- c(Assays(obj), if (is_seurat5()) py_keys(a$layers))
  for (k in py_keys(a$obsm)) {
    e <- py_item(a$obsm, k)
    name <- sub("^X_", "", k)
    if (py_isdf(e)) {
      m <- as.matrix(py_val(e$to_numpy()))
      if (name %in% Reductions(obj)) {  # zellkonverter's data-frame embeddings
        expect_equal(strip(Embeddings(obj, name)), strip(m), label = paste(label, "obsm", k))
      } else if (make.names(k) %in% Assays(obj)) {
        expect_equal(strip(as.matrix(layer_data(obj, "counts", assay = make.names(k)))), strip(t(m)), label = paste(label, "obsm", k))
      }
      next
    }
    if (name %in% taken) name <- paste0(name, "_obsm")
    expect_true(name %in% Reductions(obj), label = paste(label, "reduction", name))
    expect_equal(strip(Embeddings(obj, name)), strip(py_mat(e)), label = paste(label, "obsm", k))
  }
  for (k in py_keys(a$obsp)) {
    name <- if (k %in% c(taken, Reductions(obj)) && !k %in% Graphs(obj)) paste0(k, "_obsp") else k
    expect_equal(strip(as.matrix(obj[[name]])), strip(py_mat(py_item(a$obsp, k))), label = paste(label, "obsp", k))
  }
  if (!py_none(a$raw)) {
    rawX <- py_mat(a$raw$X)
    rg <- unlist(py_val(a$raw$var_names$tolist()))
    if (identical(rg, genes) && !has_counts_layer && xl != "counts") {
      expect_equal(strip(as.matrix(layer_data(obj, "counts"))), strip(t(rawX)), label = paste(label, "raw"))
    } else {
      expect_equal(strip(as.matrix(layer_data(obj, "counts", assay = "raw"))), strip(t(rawX)), label = paste(label, "raw"))
    }
  }
  xl
}

# A file WriteH5AD wrote back, read by anndata (`b`), against anndata's reading of the original
# (`a`): X, obs values, var names, the reductions (obsm X_*), obsp.
expect_written_back <- function(b, a, label, xl) {
  expect_identical(unlist(py_val(b$obs_names$tolist())), unlist(py_val(a$obs_names$tolist())), label = paste(label, "cells"))
  expect_identical(unlist(py_val(b$var_names$tolist())), unlist(py_val(a$var_names$tolist())), label = paste(label, "genes"))
  if (!py_none(a$X)) {
    expect_equal(strip(py_mat(b$X)), strip(py_mat(a$X)), label = paste(label, "X"))
  } else {
    expect_true(py_none(b$X), label = paste(label, "no X"))
  }
  for (col in unlist(py_val(a$obs$columns$tolist()))) {
    x <- py_item(a$obs, col)
    y <- py_item(b$obs, col)
    expect_identical(unlist(py_val(y$isna()$tolist())), unlist(py_val(x$isna()$tolist())), label = paste(label, col, "NA"))
    if (py_val(x$dtype$kind) %in% c("i", "u", "f")) {
      expect_equal(unlist(py_val(y$astype("float64")$tolist())), unlist(py_val(x$astype("float64")$tolist())), label = paste(label, col))
    } else {
      expect_identical(unlist(py_val(y$astype("str")$tolist())), unlist(py_val(x$astype("str")$tolist())), label = paste(label, col))
    }
  }
  for (k in grep("^X_", py_keys(a$obsm), value = TRUE)) {
    expect_equal(strip(py_mat(py_item(b$obsm, k))), strip(py_mat(py_item(a$obsm, k))), label = paste(label, "obsm", k))
  }
  for (k in intersect(py_keys(a$obsp), py_keys(b$obsp))) {
    expect_equal(strip(py_mat(py_item(b$obsp, k))), strip(py_mat(py_item(a$obsp, k))), label = paste(label, "obsp", k))
  }
}
