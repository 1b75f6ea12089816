# The functions Python calls through rpy2 (rpy2.R): rds_to_parts(), parts_to_rds(), convert_file().
# Their Python side is tested in tests/io/test_seurat_rds.py and tests/test_cli.py.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

test_that("rds_to_parts gives the bridge's parts with names as one character array each", {
  f <- shared_data("pbmc_3tech.rds")
  obj <- readRDS(f)
  p <- rds_to_parts(f)
  expect_identical(as.vector(p$cells), colnames(obj))
  expect_identical(length(dim(p$cells)), 1L)
  expect_identical(as.vector(p$features), rownames(obj))
  expect_identical(as.vector(p$X$sparse$x), layer_data(obj, "counts")@x)
  expect_error(rds_to_parts(f, assay = "ADT"), "Assays that exist: RNA")
  bad <- withr::local_tempfile(fileext = ".rds")
  saveRDS(list(a = 1), bad)
  expect_error(rds_to_parts(bad), "holds a list, not a Seurat object")
})

test_that("convert_file converts .rds <-> .h5ad by extension and returns the notes", {
  dir <- withr::local_tempdir()
  src <- shared_data("pbmc_3tech.rds")
  h5 <- file.path(dir, "p.h5ad")
  notes <- convert_file(src, h5)
  expect_true(file.exists(h5))
  expect_match(notes, "data layer is identical to counts", all = FALSE)
  rds <- file.path(dir, "p.rds")
  convert_file(h5, rds)
  obj <- readRDS(src)
  expect_identical(layer_data(readRDS(rds), "counts"), layer_data(obj, "counts"))
  expect_error(convert_file(src, file.path(dir, "p.csv")), "give one .rds and one .h5ad file")
  expect_error(convert_file(src, h5), "already exists; use overwrite = TRUE")
  # parts_to_rds: parts of a file read back (R orientation) make the same object
  out <- file.path(dir, "q.rds")
  parts_to_rds(pybridge:::.h5ad_to_parts(h5), out)
  expect_identical(layer_data(readRDS(out), "counts"), layer_data(obj, "counts"))
})
