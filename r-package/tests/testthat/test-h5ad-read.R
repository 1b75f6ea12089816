# ReadH5AD (h5ad-read.R, h5ad-elements.R; hdf5r, no Python): files anndata wrote read with the values
# anndata reads, every encoding, and bad files give errors naming the file and the element.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
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
    expect_identical(strip(layer_data(obj, "counts")), strip(Matrix::t(X)), label = name)
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
  expect_identical(strip(layer_data(obj, "counts")), strip(Matrix::t(pybridge:::.py_matrix(a$X$tocsr()))))
  expect_equal(strip(as.matrix(layer_data(obj, "data"))), strip(t(py_val(py_item(a$layers, "data")))))
  genes <- unlist(py_val(a$var_names$tolist()))
  expect_identical(rownames(obj), gsub("_", "-", genes))
  expect_identical(obj[["RNA"]]@misc$pybridge_original_features, genes)
  expect_identical(VariableFeatures(obj), gsub("_", "-", genes[1:5]))
  expect_identical(features_df(obj)$gene_ids, sprintf("ENSG%05d", 0:11))
  # reductions, loadings, graphs, obsm data frame -> assay, raw -> assay, uns -> Misc
  expect_identical(strip(Embeddings(obj, "pca")), strip(py_val(py_item(a$obsm, "X_pca"))))
  expect_identical(strip(Loadings(obj, "pca")), strip(py_val(py_item(a$varm, "PCs"))))
  expect_identical(strip(Embeddings(obj, "umap")), strip(py_val(py_item(a$obsm, "X_umap"))))
  expect_identical(strip(as(obj[["connectivities"]], "dgCMatrix")),
                   strip(pybridge:::.py_matrix(py_item(a$obsp, "connectivities"))))
  expect_setequal(Assays(obj), c("RNA", "adt", "raw"))
  expect_identical(strip(as.matrix(layer_data(obj, "counts", assay = "adt"))), rbind(as.numeric(i), rep(1, n)))
  expect_identical(strip(layer_data(obj, "counts", assay = "raw")), strip(layer_data(obj, "counts")[1:8, ]))
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
  obj[["RNA"]][["highly_variable"]] <- NULL
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
  expect_error(ReadH5AD(trunc), "trunc\\.h5ad.*could not be opened as an HDF5 \\(\\.h5ad\\) file \\(truncated")  # (libhdf5 1.14 does not say "truncated file")

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
