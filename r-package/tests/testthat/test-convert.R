# as.AnnData / as.Seurat (convert.R): every value survives, bad input gives clear errors.
# Seurat 5 layers (joined, split) are tested in test-layers.R.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

py_eval <- function(code) reticulate::py_run_string(code, local = FALSE, convert = TRUE)
py_keys <- function(x) unlist(reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(x$keys())))

kang <- readRDS(shared_data("kang_ifnb_processed.rds"))

test_that("a processed Seurat object round-trips with every value kept", {
  before <- kang
  ad <- as.AnnData(kang, verbose = FALSE)
  expect_identical(kang, before) # the user's object is untouched
  # AnnData side: X is the counts (a zero-copy read-only view), obs types are right
  m <- layer_data(kang, "counts")
  X <- ad$X
  expect_equal(reticulate::py_to_r(X$nnz), length(m@x))
  expect_equal(reticulate::py_to_r(X$indptr$tolist()), m@p) # the dgCMatrix arrays themselves
  expect_equal(reticulate::py_to_r(X$sum()), sum(m@x))
  expect_false(reticulate::py_to_r(X$data$flags$writeable))
  cats <- reticulate::py_to_r(ad$obs$seurat_annotations$cat$categories$tolist())
  expect_identical(unlist(cats), levels(kang$seurat_annotations))
  expect_equal(py_keys(ad$obsm), c("X_pca", "X_umap"))
  expect_identical(py_keys(ad$layers), c("data", "scale.data"))
  expect_equal(py_keys(ad$obsp), c("RNA_nn", "RNA_snn"))
  report <- unlist(reticulate::py_to_r(reticulate::py_get_item(ad$uns, "pybridge")$get("report")$tolist()))
  expect_match(report, "command log \\(7 commands\\) not carried", all = FALSE)
  hv <- reticulate::py_to_r(ad$var$highly_variable$sum())
  expect_equal(hv, length(VariableFeatures(kang)))

  back <- as.Seurat(ad, verbose = FALSE)
  for (l in c("counts", "data", "scale.data")) {
    expect_identical(layer_data(back, l), layer_data(kang, l), label = l)
  }
  expect_identical(back@meta.data, kang@meta.data)
  expect_identical(levels(back$seurat_annotations), levels(kang$seurat_annotations))
  for (r in c("pca", "umap")) {
    expect_identical(c(Embeddings(back, r)), c(Embeddings(kang, r)))
    expect_identical(dimnames(Embeddings(back, r)), dimnames(Embeddings(kang, r)))
    expect_identical(Key(back[[r]]), Key(kang[[r]]))
  }
  expect_identical(Loadings(back, "pca"), Loadings(kang, "pca"))
  expect_identical(Stdev(back, "pca"), Stdev(kang, "pca"))
  for (g in c("RNA_nn", "RNA_snn")) {
    expect_identical(as(back[[g]], "dgCMatrix"), as(kang[[g]], "dgCMatrix"))
  }
  expect_identical(Idents(back), Idents(kang))
  expect_identical(VariableFeatures(back), VariableFeatures(kang))
  expect_identical(features_df(back), features_df(kang))
  # downstream Seurat code works on the result
  expect_s3_class(DimPlot(back, reduction = "umap"), "ggplot")
})

test_that("a two-assay object (RNA + GDO guides) carries both assays", {
  pap <- readRDS(shared_data("papalexi_eccite.rds"))
  ad <- as.AnnData(pap, verbose = FALSE)
  gdo <- reticulate::py_get_item(ad$obsm, "GDO")
  expect_equal(unlist(reticulate::py_to_r(gdo$columns$tolist())), rownames(pap[["GDO"]]))
  expect_equal(reticulate::py_to_r(gdo$to_numpy()$sum()), sum(layer_data(pap, "counts", assay = "GDO")))
  back <- as.Seurat(ad, verbose = FALSE)
  expect_setequal(Assays(back), c("RNA", "GDO"))
  expect_identical(layer_data(back, "counts", assay = "RNA"), layer_data(pap, "counts", assay = "RNA"))
  g1 <- layer_data(back, "counts", assay = "GDO")
  expect_equal(as.matrix(g1), as.matrix(layer_data(pap, "counts", assay = "GDO")))
  expect_identical(back@meta.data, pap@meta.data)
  # the guide assay as the main assay, on request
  adg <- as.AnnData(pap, assay = "GDO", verbose = FALSE)
  expect_equal(unlist(reticulate::py_to_r(adg$shape)), c(ncol(pap), nrow(pap[["GDO"]])))
})

test_that("Python -> R -> Python keeps values, nullable types and '_' in names", {
  py_eval("
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
rng = np.random.default_rng(0)
X = sp.random(30, 8, density=0.4, format='csr', random_state=0)
X.data = np.round(X.data * 10) + 1
a = ad.AnnData(X=X, obs=pd.DataFrame({
    'grp': pd.Categorical(['a', 'b', None] * 10, categories=['z', 'a', 'b'], ordered=True),
    'flag': pd.array([True, None, False] * 10, dtype='boolean'),
    'n': pd.array([1, None, 3] * 10, dtype='Int32'),
    'label': pd.array(['x', None, 'é ü'] * 10, dtype='string'),
    'score': np.linspace(0, 1, 30)}, index=[f'cell_{i}' for i in range(30)]),
    var=pd.DataFrame(index=['GENE_A', 'GENE-B', 'HLA_DRA', 'MT-CO1', 'g5', 'g6', 'g7', 'g8']))
a.obsm['X_emb'] = rng.normal(size=(30, 3))
a.obsp['conn'] = sp.random(30, 30, density=0.1, format='csr', random_state=2)
a.uns['params'] = {'k': 5, 'method': 'test', 'table': pd.DataFrame({'x': [1.5, 2.5]}, index=['r1', 'r2'])}
")
  a <- reticulate::py_eval("a", convert = FALSE)
  obj <- as.Seurat(a, verbose = FALSE)
  expect_true(all(c("GENE-A", "HLA-DRA") %in% rownames(obj)))
  expect_identical(levels(obj$grp), c("z", "a", "b"))
  expect_true(is.ordered(obj@meta.data$grp))
  expect_identical(obj$flag[1:3], c(cell_0 = TRUE, cell_1 = NA, cell_2 = FALSE))
  expect_identical(unname(obj$n[1:3]), c(1L, NA, 3L))
  expect_identical(unname(obj$label[1:3]), c("x", NA, "\u00e9 \u00fc"))
  expect_s3_class(obj@misc$params$table, "data.frame")
  b <- as.AnnData(obj, verbose = FALSE)
  py <- reticulate::import_main(convert = FALSE)
  py$b <- b
  res <- py_eval("
import numpy as np
res = {}
res['X'] = bool((b.X != a.X).nnz == 0)
res['names'] = list(b.var_names) == list(a.var_names) and list(b.obs_names) == list(a.obs_names)
for c in a.obs.columns:
    x, y = a.obs[c], b.obs[c]
    same_na = bool((x.isna().to_numpy() == y.isna().to_numpy()).all())
    keep = ~x.isna().to_numpy()
    res['obs_' + c] = same_na and bool((x[keep].astype(object).to_numpy() == y[keep].astype(object).to_numpy()).all()) and str(x.dtype) == str(y.dtype)
res['emb'] = bool(np.array_equal(b.obsm['X_emb'], a.obsm['X_emb']))
res['conn'] = bool((b.obsp['conn'] != a.obsp['conn']).nnz == 0)
res['uns'] = b.uns['params']['k'] == 5 and b.uns['params']['table'].loc['r2', 'x'] == 2.5
")
  ok <- reticulate::py_to_r(reticulate::py_eval("res", convert = FALSE))
  for (k in names(ok)) expect_true(ok[[k]], label = k)
})

test_that("bad input gives clear errors and leaves the object untouched", {
  expect_error(as.AnnData(list(1)), "needs a Seurat object")
  expect_error(as.AnnData(kang, assay = "ADT"), "assay 'ADT' is not in the object. Assays that exist: RNA")
  expect_error(as.AnnData(kang, layer = "spliced"), "Layers that exist: counts, data, scale.data")
  py_eval("
import anndata as ad, numpy as np, pandas as pd
dup = ad.AnnData(np.ones((2, 2)), obs=pd.DataFrame(index=['c', 'c']), var=pd.DataFrame(index=['g1', 'g2']))
nofeat = ad.AnnData(np.ones((2, 0)), obs=pd.DataFrame(index=['c1', 'c2']))
")
  expect_error(suppressWarnings(as.Seurat(reticulate::py_eval("dup", convert = FALSE), verbose = FALSE)),
               "cell names \\(obs_names\\) are duplicated")
  expect_error(as.Seurat(reticulate::py_eval("nofeat", convert = FALSE), verbose = FALSE), "no features")
})

test_that("a missing Python environment is reported with the fix", {
  rscript <- file.path(R.home("bin"), "Rscript")
  out <- suppressWarnings(system2(rscript, c("-e", shQuote(paste(
    "library(pybridge); cat('AVAILABLE', pybridge_available(), '\\n');",
    "tryCatch(as.AnnData(SeuratObject::pbmc_small), error = function(e) cat('ERR', conditionMessage(e), '\\n'))"
  ))), stdout = TRUE, stderr = TRUE, env = c("PYBRIDGE_PYTHON=/nonexistent/python", "RETICULATE_PYTHON=")))
  out <- paste(out, collapse = "\n")
  expect_match(out, "AVAILABLE FALSE")
  expect_match(out, "install_pybridge\\(\\)")
})
