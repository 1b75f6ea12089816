# Files written by other software (h5ad-load.R, h5ad-elements.R): every file in ../shared/data/foreign
# (anndata 0.7.8 and 0.11.4, anndataR, zellkonverter's examples, anndata with lzf) and scanpy's
# own pbmc68k_reduced (anndata <= 0.6 layout) read with the values anndata reads, and write back
# to files anndata reads equal. Edge files (NaN X, one gene, one cell, no X, 0 cells) read or are
# refused with a clear message.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

foreign <- function(name) shared_data(file.path("foreign", name))
pbmc68k <- function() {
  sc <- reticulate::import("scanpy", convert = FALSE)
  file.path(dirname(py_val(sc$datasets$`__file__`)), "10x_pbmc68k_reduced.h5ad")
}

test_that("every foreign file reads with anndata's values and writes back to a file anndata reads equal", {
  files <- c(file.path(shared_data("foreign"), list.files(shared_data("foreign"), "\\.h5ad$")), pbmc68k())
  expect_length(files, 7L)
  for (f in files) {
    label <- basename(f)
    key_warnings <- character(0)  # e.g. anndataR's layers 'csc_counts', 'dense_X' as assays
    obj <- withCallingHandlers(ReadH5AD(f, verbose = FALSE), warning = function(w) {
      if (grepl("^Keys should|^Key .* taken", conditionMessage(w))) key_warnings <<- c(key_warnings, conditionMessage(w))
    })
    expect_identical(key_warnings, character(0), label = paste(label, "Seurat's key warnings"))
    keys <- c(unlist(lapply(Assays(obj), function(a) Key(obj[[a]]))), unlist(lapply(Reductions(obj), function(r) Key(obj[[r]]))))
    expect_true(all(grepl("^[a-zA-Z][a-zA-Z0-9]*_$", keys)) && !anyDuplicated(keys), label = paste(label, "keys", toString(keys)))
    a <- suppressWarnings(ad_mod()$read_h5ad(f))
    xl <- expect_like_anndata(obj, a, label)
    out <- withr::local_tempfile(fileext = ".h5ad")
    WriteH5AD(obj, out, layer = xl, verbose = FALSE)
    expect_written_back(ad_mod()$read_h5ad(out), a, label, xl)
  }
})

test_that("assay keys made from AnnData names are what SeuratObject 4 and 5 accept, unique", {
  expect_identical(pybridge:::.seurat_key("csc_counts"), "csccounts_")
  expect_identical(pybridge:::.seurat_key("dense_X", c("rna_", "densex_")), "densex1_")
  expect_identical(pybridge:::.seurat_key("10x-ADT"), "x10xadt_")
  expect_identical(pybridge:::.seurat_key("__"), "x_")
})

test_that("lzf files (anndata's other compression) read; their categoricals, nullable columns and names are kept", {
  obj <- ReadH5AD(foreign("ad0.12_rich_lzf.h5ad"), verbose = FALSE)
  md <- obj@meta.data  # (Seurat's `$` drops the ordered class: read meta.data itself)
  expect_true(is.ordered(md$stage))
  expect_identical(nlevels(md$many_levels), 200L)
  expect_true(anyNA(md$cat_nan) && anyNA(md$flag_na) && anyNA(md$n_genes_na))
  expect_true(is.integer(md$n_genes_na) && is.logical(md$flag_na))
  if (is_seurat5()) {  # AnnData's other layers are layers of the Assay5
    expect_setequal(Assays(obj), c("RNA", "raw", "protein"))
    expect_true(all(c("logdata", "spliced", "unspliced") %in% SeuratObject::Layers(obj[["RNA"]])))
  } else {
    expect_setequal(Assays(obj), c("RNA", "logdata", "spliced", "unspliced", "raw", "protein"))
  }
  expect_identical(rownames(obj[["protein"]]), c("CD3", "CD19", "CD56"))
  report <- unlist(Misc(obj, "pybridge.report"))
  expect_match(report, "varp\\['gene_corr'\\].*not carried", all = FALSE)  # varp: reported
})

test_that("anndata <= 0.6 (scanpy's pbmc68k_reduced): compound tables, uns/<col>_categories, raw.X, uns graphs", {
  f <- pbmc68k()
  obj <- ReadH5AD(f, verbose = FALSE)
  a <- suppressWarnings(ad_mod()$read_h5ad(f))
  expect_identical(levels(obj$bulk_labels), unlist(py_val(py_item(a$obs, "bulk_labels")$cat$categories$tolist())))
  expect_identical(levels(obj$louvain), as.character(0:10))
  expect_false(any(c("louvain_categories", "bulk_labels_categories") %in% names(Misc(obj))))
  expect_setequal(Graphs(obj), c("connectivities", "distances"))  # moved from uns['neighbors'], as anndata does
  expect_identical(dim(Embeddings(obj, "pca")), c(700L, 50L))
  expect_match(unlist(Misc(obj, "pybridge.report")), "raw.X became the 'counts' layer", all = FALSE)
})

test_that("anndata 0.7 (categories in __categories) and name clashes between assays, reductions and graphs", {
  obj <- ReadH5AD(foreign("anndata_v0.7.8.h5ad"), verbose = FALSE)
  expect_true(is.ordered(obj[["cat_ordered"]][, 1]) && !is.ordered(obj[["obs_cat"]][, 1]))
  # layers, obsm and obsp all have 'array' and 'sparse': the assays keep the names
  if (is_seurat5()) {  # the layers are layers of the Assay5
    expect_setequal(Assays(obj), c("RNA", "raw"))
    expect_true(all(c("array", "sparse") %in% SeuratObject::Layers(obj[["RNA"]])))
  } else {
    expect_setequal(Assays(obj), c("RNA", "array", "sparse", "raw"))
  }
  expect_setequal(Reductions(obj), c("array_obsm", "sparse_obsm"))
  expect_setequal(Graphs(obj), c("array_obsp", "sparse_obsp"))
  expect_match(unlist(Misc(obj, "pybridge.report")), "obsp\\['array'\\] became 'array_obsp'", all = FALSE)
})

test_that("files zellkonverter writes: uns X_name, logcounts -> data layer, data-frame embeddings -> reductions", {
  # zellkonverter's SCE2AnnData (theislab/zellkonverter R/SCE2AnnData.R) writes X = the first
  # assay, the other assays as layers by SingleCellExperiment name, uns['X_name'] = X's assay
  # name, and reducedDims with column names as data frames in obsm ('PCA', 'UMAP').
  f <- withr::local_tempfile(fileext = ".h5ad")
  py_run(sprintf("
import numpy as np, pandas as pd, scipy.sparse as sp, anndata as ad
rng = np.random.default_rng(3)
X = sp.random(60, 25, density=0.3, format='csr', random_state=3, dtype=np.float64); X.data = np.round(X.data * 9) + 1
cells = [f'c{i}' for i in range(60)]
z = ad.AnnData(X=X, obs=pd.DataFrame({'sizeFactor': rng.uniform(0.5, 2, 60)}, index=cells),
               var=pd.DataFrame(index=[f'g{i}' for i in range(25)]))
z.layers['logcounts'] = sp.csr_matrix(np.log1p(X.toarray()))
z.obsm['PCA'] = pd.DataFrame(rng.normal(size=(60, 4)), index=cells, columns=[f'PC{i+1}' for i in range(4)])
z.obsm['UMAP'] = pd.DataFrame(rng.normal(size=(60, 2)), index=cells, columns=['UMAP1', 'UMAP2'])
z.uns['X_name'] = 'counts'
z.write_h5ad(r'%s')
h5t_z = z", f))
  z <- py_main()$h5t_z
  obj <- ReadH5AD(f, verbose = FALSE)
  expect_identical(Assays(obj), "RNA")
  expect_equal(strip(as.matrix(layer_data(obj, "counts"))), strip(t(py_mat(z$X))))
  expect_equal(strip(as.matrix(layer_data(obj, "data"))), strip(t(py_mat(py_item(z$layers, "logcounts")))))
  expect_setequal(Reductions(obj), c("PCA", "UMAP"))
  expect_equal(strip(Embeddings(obj, "PCA")), strip(as.matrix(py_val(py_item(z$obsm, "PCA")$to_numpy()))))
  expect_null(Misc(obj, "X_name"))
  expect_match(unlist(Misc(obj, "pybridge.report")), "layers\\['logcounts'\\] became the 'data' layer", all = FALSE)
})

test_that("edge files: NaN X, one gene, one cell and no X read; 0 cells or 0 genes are refused with a clear message", {
  dir <- withr::local_tempdir()
  py_run(sprintf("
import numpy as np, pandas as pd, anndata as ad
d = r'%s'
x = np.arange(12, dtype=float).reshape(4, 3) / 7; x[1, 2] = np.nan
ad.AnnData(X=x).write_h5ad(d + '/nan.h5ad')
ad.AnnData(X=np.array([[1.0], [0.0], [3.0]])).write_h5ad(d + '/one_gene.h5ad')
ad.AnnData(X=np.array([[1.0, 0.0, 2.0, 5.0]])).write_h5ad(d + '/one_cell.h5ad')
ad.AnnData(X=np.zeros((0, 3))).write_h5ad(d + '/no_cells.h5ad')
ad.AnnData(X=np.zeros((3, 0))).write_h5ad(d + '/no_genes.h5ad')
", dir))
  nan <- ReadH5AD(file.path(dir, "nan.h5ad"), verbose = FALSE)
  expect_true(is.nan(layer_data(nan, "data")[3, 2]))  # not counts: the data layer
  expect_identical(dim(ReadH5AD(file.path(dir, "one_gene.h5ad"), verbose = FALSE)), c(1L, 3L))
  one <- ReadH5AD(file.path(dir, "one_cell.h5ad"), verbose = FALSE)
  expect_identical(dim(one), c(4L, 1L))
  expect_identical(as.numeric(layer_data(one, "counts")), c(1, 0, 2, 5))
  expect_error(ReadH5AD(file.path(dir, "no_cells.h5ad")), "0 cells \\(n_obs = 0\\); a Seurat object needs at least one cell")
  expect_error(ReadH5AD(file.path(dir, "no_genes.h5ad")), "0 features \\(n_vars = 0\\)")
  # no X and no layers (anndata 0.11.4's archive): an all-zero counts layer, noted; written back without X
  f <- foreign("anndata_v0.11.4.h5ad")
  obj <- ReadH5AD(f, verbose = FALSE)
  expect_equal(as.integer(dim(obj)), c(20L, 10L))
  expect_match(unlist(Misc(obj, "pybridge.report")), "no X and no layers", all = FALSE)
  out <- file.path(dir, "back.h5ad")
  WriteH5AD(obj, out, verbose = FALSE)
  b <- ad_mod()$read_h5ad(out)
  expect_true(py_none(b$X))
  expect_false("pybridge.X_absent" %in% py_keys(b$uns))
})
