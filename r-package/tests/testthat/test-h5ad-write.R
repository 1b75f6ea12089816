# WriteH5AD (h5ad-write.R, h5ad-hdf5.R; libhdf5 through the package's C routines, no Python):
# anndata and scanpy read what R writes with the values of the source, compressed files are as
# small as anndata's, .rds -> h5ad -> .rds keeps every value, writes are atomic. Python
# (reticulate) only checks the files from the other side (helper-h5ad.R).
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

kang <- h5t_kang()
small <- h5t_small()

test_that("files WriteH5AD writes open in anndata with X, layers, obs types, obsm, obsp, uns equal to the source", {
  f <- withr::local_tempfile(fileext = ".h5ad")
  before <- small
  expect_invisible(WriteH5AD(small, f, verbose = FALSE))
  expect_identical(small, before)
  ad <- ad_mod()$read_h5ad(f)
  # exactly the AnnData that as.AnnData() builds in memory (the same mapping), except that a
  # character column with NA is a categorical on disk (as anndata's own write_h5ad stores it)
  # and scale.data is stored over its own features only (sparse: densified, the same values)
  mem <- as.AnnData(small, verbose = FALSE)
  diffs <- h5t_compare(ad, mem)
  # (character columns with repeated values are categoricals on disk, as anndata's write_h5ad
  # stores them: the same content, and far smaller)
  expect_identical(diffs, c("obs[chr]: dtype category vs object", "obs[chr_na]: dtype category vs string",
                            "layers/scale.data: sparse vs dense"))
  expect_identical(strip(as.matrix(pybridge:::.py_matrix(py_item(ad$layers, "scale.data")))),
                   strip(pybridge:::.py_matrix(py_item(mem$layers, "scale.data"))))

  # ... and, checked against the Seurat object directly:
  expect_identical(unlist(py_val(ad$obs_names$tolist())), colnames(small))
  expect_identical(unlist(py_val(ad$var_names$tolist())), rownames(small))
  X <- pybridge:::.py_matrix(ad$X)
  expect_identical(strip(X), strip(Matrix::t(layer_data(small, "counts"))))
  expect_equal(strip(pybridge:::.py_matrix(py_item(ad$layers, "data"))), strip(Matrix::t(layer_data(small, "data"))))
  sd <- pybridge:::.py_matrix(py_item(ad$layers, "scale.data"))
  sfe <- rownames(layer_data(small, "scale.data"))
  expect_identical(strip(as.matrix(sd[, match(sfe, rownames(small))])), strip(t(layer_data(small, "scale.data"))))
  expect_identical(length(sd@x), length(layer_data(small, "scale.data")))  # stored: its own features only
  expect_true(all(sd[, -match(sfe, rownames(small))] == 0))

  types <- h5t_dtypes(ad$obs)
  expect_identical(types[c("stim", "ord", "chr", "int_na", "lgl_na", "dbl_na", "nFeature_RNA", "chr_na")],
                   c(stim = "category", ord = "category", chr = "category", int_na = "Int32", lgl_na = "boolean",
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
  expect_equal(strip(pybridge:::.py_matrix(ad$X)), strip(Matrix::t(layer_data(small, "data"))), tolerance = 1e-6)
})

test_that(".rds -> h5ad -> .rds keeps counts, metadata, reductions and graphs (every shared .rds)", {
  every <- c("kang_ifnb_processed", "pbmc_3tech", "lymphnode_reference", "lymphnode_visium", "papalexi_eccite")
  for (name in if (test_fast()) "kang_ifnb_processed" else every) {  # the fast tier: the processed one
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

test_that("compression = 'gzip' / 'lzf': anndata reads the values; sizes within 1.2x of anndata's own write", {
  skip_slow("compresses 6 files of 2,000 cells, 3 of them through anndata")
  dir <- withr::local_tempdir()
  f <- function(x) file.path(dir, x)
  for (comp in c("none", "gzip", "lzf")) WriteH5AD(kang, f(paste0(comp, ".h5ad")), compression = comp, verbose = FALSE)
  h5py <- reticulate::import("h5py", convert = FALSE)
  h <- h5py$File(f("gzip.h5ad"), "r")
  expect_identical(py_val(h$`__getitem__`("X/data")$compression), "gzip")
  expect_identical(py_val(h$`__getitem__`("X/data")$compression_opts), 4L)  # anndata's level
  h$close()
  h <- h5py$File(f("lzf.h5ad"), "r")
  expect_identical(py_val(h$`__getitem__`("layers/scale.data/data")$compression), "lzf")
  h$close()
  # anndata reads the three files equal; its own gzip / lzf writes of that content are the references
  ref <- ad_mod()$read_h5ad(f("none.h5ad"))
  for (comp in c("gzip", "lzf")) {
    expect_identical(h5t_compare(ad_mod()$read_h5ad(f(paste0(comp, ".h5ad"))), ref), character(0), label = comp)
    ref$write_h5ad(f(paste0("anndata_", comp, ".h5ad")), compression = comp)
    ratio <- file.size(f(paste0(comp, ".h5ad"))) / file.size(f(paste0("anndata_", comp, ".h5ad")))
    expect_lte(ratio, 1.2, label = paste(comp, "size / anndata's"))
  }
  # scale.data over its own 2,000 features: the uncompressed file is far below the padded
  # 13,215-feature dense layer alone (2,000 x 13,215 float64 = 201.6 MiB)
  expect_lt(file.size(f("none.h5ad")), 2000 * 13215 * 8 / 2)
  expect_lt(file.size(f("gzip.h5ad")), file.size(f("lzf.h5ad")))
  # ... and R reads the compressed files back to the object
  back <- ReadH5AD(f("lzf.h5ad"), verbose = FALSE)
  expect_identical(seurat_diff(kang, back), character(0))
  expect_identical(seurat_diff(kang, ReadH5AD(f("gzip.h5ad"), verbose = FALSE)), character(0))
  expect_error(WriteH5AD(small, f("x.h5ad"), compression = "zstd"), "`compression` must be \"none\", \"gzip\" or \"lzf\"")
})
