# Multi-assay objects (h5ad-mudata.R): WriteH5AD(".h5mu") writes one MuData modality per assay,
# sparse and of any size, which mudata reads with the values of the source and ReadH5AD reads back
# to the same object; an .h5ad keeps only small other assays (obsm tables) and says how to keep
# the others.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

md_mod <- function() reticulate::import("mudata", convert = FALSE)

test_that(".h5mu: every assay a modality that mudata reads equal; ReadH5AD gives the object back; size as mudata's", {
  obj <- readRDS(shared_data("papalexi_eccite.rds"))  # RNA (299 features) + GDO (110 guides)
  set.seed(2)
  obj <- subset(obj, cells = sample(colnames(obj), 3000))
  obj <- FindVariableFeatures(NormalizeData(obj, verbose = FALSE), verbose = FALSE)
  obj <- RunPCA(ScaleData(obj, verbose = FALSE), npcs = 10, verbose = FALSE)
  obj <- FindNeighbors(obj, dims = 1:10, verbose = FALSE)
  obj <- NormalizeData(obj, assay = "GDO", normalization.method = "CLR", verbose = FALSE)
  # a second large assay (a copy of RNA: the h5ad's obsm tables cannot hold it)
  big <- layer_data(obj, "counts")
  rownames(big) <- paste0("copy-", rownames(big))
  big <- rbind(big, Matrix::Matrix(0, 1200, ncol(big), sparse = TRUE,
                                   dimnames = list(paste0("extra-", 1:1200), colnames(big))))
  obj[["RNA2"]] <- CreateAssayObject(counts = big)
  dir <- withr::local_tempdir()
  f <- file.path(dir, "obj.h5mu")
  WriteH5AD(obj, f, compression = "gzip", verbose = FALSE)
  expect_identical(readBin(f, "raw", 6L), charToRaw("MuData"))  # mudata's signature
  m <- md_mod()$read_h5mu(f)
  expect_identical(unlist(py_val(reticulate::import_builtins(convert = FALSE)$list(m$mod$keys()))), c("RNA", "GDO", "RNA2"))
  for (a in c("RNA", "GDO", "RNA2")) {
    ad <- py_item(m$mod, a)
    expect_identical(unlist(py_val(ad$var_names$tolist())), rownames(obj[[a]]), label = a)
    expect_equal(strip(pybridge:::.py_matrix(ad$X)), strip(Matrix::t(layer_data(obj, "counts", assay = a))), label = a)
  }
  gdo <- py_item(m$mod, "GDO")
  expect_equal(strip(pybridge:::.py_matrix(py_item(gdo$layers, "data"))), strip(Matrix::t(layer_data(obj, "data", assay = "GDO"))))
  rna <- py_item(m$mod, "RNA")
  expect_equal(strip(pybridge:::.py_matrix(py_item(rna$obsm, "X_pca"))), strip(Embeddings(obj, "pca")))
  expect_identical(unlist(py_val(m$obs$index$tolist())), colnames(obj))
  expect_identical(as.character(py_val(py_item(m$obs, "top_grna")$astype("str")$tolist())), as.character(obj$top_grna))

  back <- ReadH5AD(f, verbose = FALSE)
  expect_identical(seurat_diff(obj, back), character(0))
  expect_identical(DefaultAssay(back), "RNA")

  # size: mudata's own gzip write of the same content is the reference
  ref <- file.path(dir, "mudata.h5mu")
  suppressWarnings(m$write_h5mu(ref, compression = "gzip"))
  expect_lte(file.size(f) / file.size(ref), 1.2)
  # a file mudata wrote reads in R with the same assays and values
  back2 <- suppressWarnings(ReadH5AD(ref, verbose = FALSE))
  for (a in c("RNA", "GDO", "RNA2")) {
    expect_identical(layer_data(back2, "counts", assay = a), layer_data(obj, "counts", assay = a), label = a)
  }

  # an .h5ad keeps the small assay (GDO, as an obsm table) and names the way to keep the big one
  h <- file.path(dir, "obj.h5ad")
  expect_message(WriteH5AD(obj, h, verbose = TRUE), "assay 'RNA2' \\(1499 features\\) not written.*write an \\.h5mu file")
  b <- ReadH5AD(h, verbose = FALSE)
  expect_setequal(Assays(b), c("RNA", "GDO"))
  expect_identical(layer_data(b, "counts", assay = "GDO"), layer_data(obj, "counts", assay = "GDO"))
})
