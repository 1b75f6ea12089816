# h5ad files from R (hdf5r, no Python in WriteH5AD/ReadH5AD): anndata reads what R writes, R reads
# what anndata writes, .rds -> h5ad -> .rds keeps every value, bad files give clear errors, writes
# are atomic. Python (reticulate) is used here only to check the files from the other side.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

py_run <- function(code) reticulate::py_run_string(code, local = FALSE, convert = FALSE)
py_main <- function() reticulate::import_main(convert = FALSE)
py_val <- function(x) reticulate::py_to_r(x)
ad_mod <- function() reticulate::import("anndata", convert = FALSE)

# A deep comparison of two AnnData objects, in Python (returns a list of differences).
py_run("
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

def h5t_dtypes(df):
    return {str(k): str(v) for k, v in df.dtypes.items()}
")
h5t_compare <- function(a, b) as.character(unlist(py_val(py_main()$h5t_compare(a, b))))
h5t_dtypes <- function(df) unlist(py_val(py_main()$h5t_dtypes(df)))
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
      chk(identical(GetAssayData(a, l, assay = as), GetAssayData(b, l, assay = as)), paste(as, l))
    }
    if (!as %in% counts.only) {
      chk(identical(a[[as]]@meta.features, b[[as]]@meta.features), paste(as, "meta.features"))
      chk(identical(VariableFeatures(a, assay = as), VariableFeatures(b, assay = as)), paste(as, "variable features"))
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

kang <- readRDS(shared_data("kang_ifnb_processed.rds"))
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

test_that("files WriteH5AD writes open in anndata with X, layers, obs types, obsm, obsp, uns equal to the source", {
  f <- withr::local_tempfile(fileext = ".h5ad")
  before <- small
  expect_invisible(WriteH5AD(small, f, verbose = FALSE))
  expect_identical(small, before)
  ad <- ad_mod()$read_h5ad(f)
  # exactly the AnnData that as.AnnData() builds in memory (the same mapping), except that a
  # character column with NA is a categorical on disk (as anndata's own write_h5ad stores it)
  diffs <- h5t_compare(ad, as.AnnData(small, verbose = FALSE))
  expect_identical(diffs, "obs[chr_na]: dtype category vs string")

  # ... and, checked against the Seurat object directly:
  expect_identical(unlist(py_val(ad$obs_names$tolist())), colnames(small))
  expect_identical(unlist(py_val(ad$var_names$tolist())), rownames(small))
  X <- pybridge:::.py_matrix(ad$X)
  expect_identical(strip(X), strip(Matrix::t(GetAssayData(small, "counts"))))
  expect_equal(strip(pybridge:::.py_matrix(py_item(ad$layers, "data"))), strip(Matrix::t(GetAssayData(small, "data"))))
  sd <- pybridge:::.py_matrix(py_item(ad$layers, "scale.data"))
  sfe <- rownames(GetAssayData(small, "scale.data"))
  expect_identical(strip(sd[, match(sfe, rownames(small))]), strip(t(GetAssayData(small, "scale.data"))))
  expect_true(all(sd[, -match(sfe, rownames(small))] == 0))

  types <- h5t_dtypes(ad$obs)
  expect_identical(types[c("stim", "ord", "chr", "int_na", "lgl_na", "dbl_na", "nFeature_RNA", "chr_na")],
                   c(stim = "category", ord = "category", chr = "object", int_na = "Int32", lgl_na = "boolean",
                     dbl_na = "float64", nFeature_RNA = "int32", chr_na = "category"))
  obs <- ad$obs
  for (col in c("stim", "seurat_annotations", "ord", "fac_unused")) {
    expect_identical(unlist(py_val(py_item(obs, col)$cat$categories$tolist())), levels(small[[col]][, 1]), label = col)
  }
  expect_true(py_val(py_item(obs, "ord")$cat$ordered))
  expect_false(py_val(py_item(obs, "stim")$cat$ordered))
  for (col in c("int_na", "lgl_na", "dbl_na", "chr_na", "ord")) {
    expect_identical(unlist(py_val(py_item(obs, col)$isna()$tolist())), is.na(small[[col]][, 1]), label = col)
  }
  expect_identical(as.integer(unlist(py_val(py_item(obs, "int_na")$fillna(-1L)$tolist()))),
                   unname(ifelse(is.na(small$int_na), -1L, small$int_na)))
  expect_identical(unlist(py_val(py_item(obs, "chr")$tolist())), unname(small$chr))

  expect_identical(strip(pybridge:::.py_matrix(py_item(ad$obsm, "X_pca"))), strip(Embeddings(small, "pca")))
  expect_identical(strip(pybridge:::.py_matrix(py_item(ad$obsm, "X_umap"))), strip(Embeddings(small, "umap")))
  pcs <- pybridge:::.py_matrix(py_item(ad$varm, "PCs"))
  ld <- Loadings(small, "pca")
  expect_identical(strip(pcs[match(rownames(ld), rownames(small)), ]), strip(ld))
  snn <- pybridge:::.py_matrix(py_item(ad$obsp, "RNA_snn"))
  expect_identical(strip(as(snn, "dgCMatrix")), strip(as(small[["RNA_snn"]], "dgCMatrix")))
  expect_equal(as.numeric(py_val(py_item(py_item(ad$uns, "pca"), "variance"))), Stdev(small, "pca")^2)
  params <- py_item(ad$uns, "params")
  expect_identical(py_val(py_item(params, "n")), 3L)
  expect_identical(py_val(py_item(params, "name")), "run 1")
  expect_identical(py_val(py_item(params, "flag")), TRUE)
  expect_equal(as.numeric(py_val(py_item(params, "v"))), c(1.5, 2.5))
  expect_identical(as.character(py_val(py_item(params, "s"))), c("u", "v"))
  expect_equal(strip(py_val(py_item(params, "m"))), matrix(1:6, 2))
  meta <- py_item(ad$uns, "pybridge")
  expect_identical(as.character(py_val(py_item(meta, "variable_features"))), VariableFeatures(small))
  expect_identical(py_val(py_item(py_item(py_item(meta, "reductions"), "pca"), "key")), "PC_")
})

test_that("scanpy reads the files and computes on them", {
  f <- withr::local_tempfile(fileext = ".h5ad")
  WriteH5AD(small, f, verbose = FALSE)
  sc <- reticulate::import("scanpy", convert = FALSE)
  ad <- sc$read_h5ad(f)
  sc$pp$normalize_total(ad, target_sum = 1e4)
  sc$pp$log1p(ad)
  # scanpy's log-normalisation of the counts equals Seurat's NormalizeData (same formula)
  expect_equal(strip(pybridge:::.py_matrix(ad$X)), strip(Matrix::t(GetAssayData(small, "data"))), tolerance = 1e-6)
})

test_that("h5ad files anndata wrote (every shared one) read as as.Seurat() reads them, values equal", {
  ad <- ad_mod()
  for (name in c("kang_ifnb", "pbmc_3tech", "lymphnode_reference", "lymphnode_visium", "papalexi_eccite")) {
    f <- shared_data(paste0(name, ".h5ad"))
    obj <- ReadH5AD(f, verbose = FALSE)
    a <- ad$read_h5ad(f)
    expect_identical(seurat_diff(obj, as.Seurat(a, verbose = FALSE)), character(0), label = name)
    # counts: X itself (cells x genes), names exact except Seurat's '_' -> '-'
    X <- pybridge:::.py_matrix(a$X)
    expect_identical(strip(GetAssayData(obj, "counts")), strip(Matrix::t(X)), label = name)
    expect_identical(colnames(obj), unlist(py_val(a$obs_names$tolist())))
    genes <- unlist(py_val(a$var_names$tolist()))
    expect_identical(rownames(obj), gsub("_", "-", genes, fixed = TRUE))
    if (!identical(genes, rownames(obj))) expect_identical(obj[["RNA"]]@misc$pybridge_original_features, genes)
    obs <- a$obs
    for (col in unlist(py_val(obs$columns$tolist()))) {
      v <- obj[[col]][, 1]
      s <- py_item(obs, col)
      if (py_val(s$dtype$name) == "category") {
        expect_identical(levels(v), unlist(py_val(s$cat$categories$tolist())), label = paste(name, col))
        expect_identical(as.character(v), unlist(py_val(s$astype("str")$tolist())), label = paste(name, col))
      } else {
        expect_equal(v, unlist(py_val(s$tolist())), label = paste(name, col))
      }
    }
  }
  vis <- ReadH5AD(shared_data("lymphnode_visium.h5ad"), verbose = FALSE)
  expect_identical(strip(Embeddings(vis, "spatial")), strip(cbind(as.numeric(vis$x), as.numeric(vis$y))))
})

test_that("anndata's nullable, categorical and string encodings, csc X, raw and uns read with values equal", {
  f <- withr::local_tempfile(fileext = ".h5ad")
  py_run(sprintf("
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
rng = np.random.default_rng(0)
n, g = 40, 12
X = sp.random(n, g, density=0.4, format='csc', random_state=0, dtype=np.float32)
X.data = np.round(X.data * 20) + 1
obs = pd.DataFrame({
    'nint': pd.array([None if i %% 3 == 0 else i for i in range(n)], dtype='Int32'),
    'nbool': pd.array([None if i %% 4 == 0 else i %% 2 == 0 for i in range(n)], dtype='boolean'),
    'nstr': pd.array([None if i %% 5 == 0 else f's{i}' for i in range(n)], dtype='string'),
    'ocat': pd.Categorical([['lo', 'hi', None][i %% 3] for i in range(n)], categories=['lo', 'mid', 'hi'], ordered=True),
    'numcat': pd.Categorical([i %% 3 for i in range(n)], categories=[2, 0, 1]),
    'i64': np.arange(n, dtype=np.int64) * 1000,
    'f': [np.nan if i %% 6 == 0 else i / 2 for i in range(n)],
    'b': np.arange(n) %% 2 == 0,
    'txt': [f'cell {i}' for i in range(n)],
}, index=[f'c_{i}' for i in range(n)])
var = pd.DataFrame({'gene_ids': [f'ENSG{i:05d}' for i in range(g)], 'highly_variable': np.arange(g) < 5},
                   index=[f'gene_{i}' if i %% 4 == 0 else f'G{i}' for i in range(g)])
a = ad.AnnData(X=X, obs=obs, var=var)
a.layers['data'] = np.log1p(X.toarray())
a.obsm['X_pca'] = rng.normal(size=(n, 3))
a.varm['PCs'] = rng.normal(size=(g, 3))
a.obsm['X_umap'] = rng.normal(size=(n, 2))
a.obsm['adt'] = pd.DataFrame({'CD3': np.arange(n, dtype=float), 'CD4': np.ones(n)}, index=a.obs_names)
a.obsp['connectivities'] = sp.random(n, n, density=0.1, format='csr', random_state=1)
a.uns['params'] = {'k': 15, 'alpha': 0.5, 'method': 'umap', 'flag': True, 'sizes': np.array([1, 2, 3]),
                   'names': np.array(['a', 'b'], dtype=object), 'grid': np.arange(6.0).reshape(2, 3),
                   'nested': {'x': 'y'}, 'tab': pd.DataFrame({'v': [1.5, 2.5]}, index=['r1', 'r2'])}
a.raw = a[:, :8].copy()
ad.settings.allow_write_nullable_strings = True
try:
    a.write_h5ad(r'%s', convert_strings_to_categoricals=False)
finally:
    ad.settings.allow_write_nullable_strings = False
h5t_a = a
", f))
  a <- py_main()$h5t_a
  expect_identical(py_val(reticulate::py_get_attr(a$X, "format")), "csc")
  obj <- ReadH5AD(f, verbose = FALSE)
  back <- ad_mod()$read_h5ad(f)
  expect_identical(seurat_diff(obj, as.Seurat(back, verbose = FALSE)), character(0))
  n <- 40
  i <- seq_len(n) - 1L
  md <- obj@meta.data
  expect_identical(md$nint, ifelse(i %% 3 == 0, NA_integer_, i))
  expect_identical(md$nbool, ifelse(i %% 4 == 0, NA, i %% 2 == 0))
  expect_identical(md$nstr, ifelse(i %% 5 == 0, NA_character_, paste0("s", i)))
  expect_identical(md$ocat, factor(c("lo", "hi", NA)[i %% 3 + 1], levels = c("lo", "mid", "hi"), ordered = TRUE))
  expect_identical(md$numcat, factor(as.character(i %% 3), levels = c("2", "0", "1")))
  expect_identical(md$i64, as.integer(i * 1000))
  expect_identical(md$f, ifelse(i %% 6 == 0, NA_real_, i / 2))
  expect_identical(md$b, i %% 2 == 0)
  expect_identical(md$txt, paste("cell", i))
  expect_match(unlist(Misc(obj, "pybridge.report")), "categories of 'numcat'", all = FALSE)
  # X (csc on disk) -> counts; layers data; names with '_' kept in misc
  expect_identical(strip(GetAssayData(obj, "counts")), strip(Matrix::t(pybridge:::.py_matrix(a$X$tocsr()))))
  expect_equal(strip(as.matrix(GetAssayData(obj, "data"))), strip(t(py_val(py_item(a$layers, "data")))))
  genes <- unlist(py_val(a$var_names$tolist()))
  expect_identical(rownames(obj), gsub("_", "-", genes))
  expect_identical(obj[["RNA"]]@misc$pybridge_original_features, genes)
  expect_identical(VariableFeatures(obj), gsub("_", "-", genes[1:5]))
  expect_identical(obj[["RNA"]]@meta.features$gene_ids, sprintf("ENSG%05d", 0:11))
  # reductions, loadings, graphs, obsm data frame -> assay, raw -> assay, uns -> Misc
  expect_identical(strip(Embeddings(obj, "pca")), strip(py_val(py_item(a$obsm, "X_pca"))))
  expect_identical(strip(Loadings(obj, "pca")), strip(py_val(py_item(a$varm, "PCs"))))
  expect_identical(strip(Embeddings(obj, "umap")), strip(py_val(py_item(a$obsm, "X_umap"))))
  expect_identical(strip(as(obj[["connectivities"]], "dgCMatrix")),
                   strip(pybridge:::.py_matrix(py_item(a$obsp, "connectivities"))))
  expect_setequal(Assays(obj), c("RNA", "adt", "raw"))
  expect_identical(strip(as.matrix(GetAssayData(obj, "counts", assay = "adt"))), rbind(as.numeric(i), rep(1, n)))
  expect_identical(strip(GetAssayData(obj, "counts", assay = "raw")), strip(GetAssayData(obj, "counts")[1:8, ]))
  p <- Misc(obj, "params")
  expect_identical(p$k, 15L)
  expect_identical(p$alpha, 0.5)
  expect_identical(p$method, "umap")
  expect_identical(p$flag, TRUE)
  expect_identical(as.integer(p$sizes), 1:3)
  expect_identical(p$names, c("a", "b"))
  expect_identical(p$grid, matrix(0:5, 2, byrow = TRUE) + 0)
  expect_identical(p$nested, list(x = "y"))
  expect_identical(p$tab, data.frame(v = c(1.5, 2.5), row.names = c("r1", "r2")))
  # back out and in again: nothing changes (highly_variable travels as VariableFeatures)
  obj[["RNA"]]@meta.features$highly_variable <- NULL
  f2 <- withr::local_tempfile(fileext = ".h5ad")
  WriteH5AD(obj, f2, verbose = FALSE)
  expect_identical(seurat_diff(ReadH5AD(f2, verbose = FALSE), obj, assays = "RNA", counts.only = c("adt", "raw")),
                   character(0))
})

test_that("scanpy's PCA (varm PCs + uns pca variance) keeps its stdev", {
  f <- withr::local_tempfile(fileext = ".h5ad")
  py_run(sprintf("
import numpy as np, scipy.sparse as sp, anndata as ad
b = ad.AnnData(X=sp.random(20, 6, density=0.5, format='csr', random_state=2))
b.obsm['X_pca'] = np.ones((20, 2)); b.varm['PCs'] = np.ones((6, 2)); b.uns['pca'] = {'variance': np.array([4.0, 1.0])}
b.write_h5ad(r'%s')", f))
  obj <- ReadH5AD(f, verbose = FALSE)
  expect_identical(Stdev(obj, "pca"), c(2, 1))
})

test_that(".rds -> h5ad -> .rds keeps counts, metadata, reductions and graphs (every shared .rds)", {
  for (name in c("kang_ifnb_processed", "pbmc_3tech", "lymphnode_reference", "lymphnode_visium", "papalexi_eccite")) {
    obj <- if (name == "kang_ifnb_processed") kang else readRDS(shared_data(paste0(name, ".rds")))
    f <- withr::local_tempfile(fileext = ".h5ad")
    r <- withr::local_tempfile(fileext = ".rds")
    WriteH5AD(obj, f, verbose = FALSE)
    back <- ReadH5AD(f, verbose = FALSE)
    saveRDS(back, r)
    back <- readRDS(r)
    others <- setdiff(Assays(obj), DefaultAssay(obj))  # other assays travel as counts (obsm)
    expect_identical(seurat_diff(obj, back, counts.only = others), character(0), label = name)
    expect_true(length(unlist(Misc(back, "pybridge.report"))) >= 0)
  }
})

test_that("truncated or corrupt files and unknown encodings give errors naming the file and the element", {
  dir <- withr::local_tempdir()
  good <- file.path(dir, "good.h5ad")
  pbmc <- readRDS(shared_data("pbmc_3tech.rds"))
  WriteH5AD(pbmc, good, verbose = FALSE)

  trunc <- file.path(dir, "trunc.h5ad")
  file.copy(good, trunc)
  con <- file(trunc, "r+b")
  seek(con, floor(file.size(good) / 2), rw = "write")
  truncate(con)
  close(con)
  expect_error(ReadH5AD(trunc), "trunc\\.h5ad.*could not be opened.*truncated file")

  junk <- file.path(dir, "junk.h5ad")
  writeBin(as.raw(rep(c(1, 7, 42, 255), 2000)), junk)
  expect_error(ReadH5AD(junk), "junk\\.h5ad.*could not be opened as an HDF5")
  expect_error(ReadH5AD(file.path(dir, "missing.h5ad")), "missing\\.h5ad' does not exist")

  corrupt <- file.path(dir, "corrupt.h5ad")  # bytes of the cell names' dataset overwritten
  file.copy(good, corrupt)
  h <- hdf5r::H5File$new(corrupt, "r")
  off <- h[["obs/_index"]]$get_offset()
  h$close_all()
  con <- file(corrupt, "r+b")
  seek(con, off, rw = "write")
  writeBin(as.raw(rep(0xAB, 64)), con)
  close(con)
  expect_error(ReadH5AD(corrupt), "corrupt\\.h5ad: element '/obs/_index' could not be read")

  unknown <- file.path(dir, "unknown.h5ad")
  file.copy(good, unknown)
  h <- hdf5r::H5File$new(unknown, "r+")
  pybridge:::.h5_set_attr(h[["obs/donor"]], "encoding-type", "awkward-array")
  h$close_all()
  expect_error(ReadH5AD(unknown), "unknown\\.h5ad: element '/obs/donor' has encoding-type 'awkward-array'.*does not know")

  broken <- file.path(dir, "broken.h5ad")
  file.copy(good, broken)
  h <- hdf5r::H5File$new(broken, "r+")
  h[["X"]]$link_delete("indptr")
  h$close_all()
  expect_error(ReadH5AD(broken), "broken\\.h5ad: element '/X' is a csr_matrix without indptr")
  expect_error(ReadH5AD(good, X.layer = "spliced"), "X.layer must be 'counts', 'data' or 'scale.data'")
})

test_that("writes are atomic: no partial file, an existing file replaced only with overwrite = TRUE", {
  dir <- withr::local_tempdir()
  f <- file.path(dir, "out.h5ad")
  pbmc <- readRDS(shared_data("pbmc_3tech.rds"))
  WriteH5AD(pbmc, f, verbose = FALSE)
  md5 <- tools::md5sum(f)
  expect_error(WriteH5AD(pbmc, f, verbose = FALSE), "already exists; use overwrite = TRUE")
  expect_identical(tools::md5sum(f), md5)
  # a write that fails half-way (X already written when the bad column name is met)
  bad <- pbmc
  bad@meta.data[["a/b"]] <- 1
  expect_error(WriteH5AD(bad, f, overwrite = TRUE, verbose = FALSE), "meta.data column 'a/b'.*cannot be empty or contain '/'")
  expect_identical(tools::md5sum(f), md5)
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), "out.h5ad")
  # with overwrite = TRUE a good write replaces it
  WriteH5AD(pbmc, f, layer = "data", overwrite = TRUE, verbose = FALSE)
  expect_false(identical(tools::md5sum(f), md5))
  expect_identical(list.files(dir, all.files = TRUE, no.. = TRUE), "out.h5ad")
  expect_error(WriteH5AD(pbmc, file.path(dir, "no", "such", "dir.h5ad")), "does not exist")
  expect_error(WriteH5AD(list(), file.path(dir, "x.h5ad")), "must be a Seurat object")
  expect_error(WriteH5AD(pbmc, file.path(dir, "x.h5ad"), layer = "spliced"), "Layers that exist: counts, data")
})

test_that("LoadExampleData gives the embedded datasets as Seurat objects", {
  pap <- LoadExampleData("papalexi_eccite")
  ref <- readRDS(shared_data("papalexi_eccite.rds"))
  expect_setequal(Assays(pap), c("RNA", "GDO"))
  expect_identical(GetAssayData(pap, "counts"), GetAssayData(ref, "counts"))
  g1 <- GetAssayData(pap, "counts", assay = "GDO")
  g2 <- GetAssayData(ref, "counts", assay = "GDO")
  expect_identical(rownames(g1), rownames(g2))
  expect_identical(strip(g1), strip(g2))
  expect_equal(pap$nCount_GDO, ref$nCount_GDO)
  targets <- pap[["GDO"]]@meta.features$target
  expect_identical(targets, as.character(unlist(Misc(pap, "grna_targets"))))
  expect_identical(targets[rownames(g1) %in% c("PDL1g1", "NTg1")], c("CD274", "non-targeting"))
  expect_identical(as.character(pap$top_grna_target), unname(ref$top_grna_target))

  vis <- LoadExampleData("lymphnode_visium")
  expect_identical(DefaultAssay(vis), "Spatial")
  expect_identical(strip(Embeddings(vis, "spatial")), strip(cbind(as.numeric(vis$x), as.numeric(vis$y))))
  kang0 <- LoadExampleData("kang_ifnb")
  expect_identical(dim(kang0), c(13215L, 2000L))
  expect_identical(as.numeric(Matrix::colSums(GetAssayData(kang0, "counts"))), as.numeric(kang0$nCount_RNA))
  expect_identical(levels(LoadExampleData("pbmc_3tech")$donor), c("3pv1", "3pv2", "5p"))
  expect_identical(nlevels(LoadExampleData("lymphnode_reference")$cell_type), 11L)
  expect_error(LoadExampleData("pbmc3k"), "no example dataset 'pbmc3k'. Available: kang_ifnb, pbmc_3tech")
})
