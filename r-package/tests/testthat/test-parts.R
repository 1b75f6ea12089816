# The typed parts that cross between R and Python (parts.R; pybridge/io/_parts.py): random
# objects round-trip, NA factor levels are carried the same way in memory and in files.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

# A generator of random Seurat objects (the R half of the property-based tests).
random_seurat <- function(seed) {
  set.seed(seed)
  n <- sample(c(1L, 2L, 7L, 25L), 1)
  g <- sample(c(1L, 3L, 12L), 1)
  m <- Matrix::rsparsematrix(g, n, density = 0.5, rand.x = function(k) as.numeric(sample(1:20, k, TRUE)))
  feats <- make.unique(sample(c("CD3E", "HLA-DRA", "MT-ND1", "g\u00e9ne", "a.b", "X1"), g, TRUE))
  cells <- paste0(sample(c("cell", "c\u00e9ll", "AAAC-1", "x_y"), n, TRUE), "_", seq_len(n))
  dimnames(m) <- list(feats, cells)
  # SeuratObject 5.0 cannot create a one-feature or one-cell Assay5: such objects get a v3 Assay
  old <- options(Seurat.object.assay.version = if (n == 1L || g == 1L) "v3" else getOption("Seurat.object.assay.version"))
  on.exit(options(old))
  obj <- suppressWarnings(CreateSeuratObject(m))
  md <- list(
    fct = factor(sample(c("a", "b", NA, ""), n, TRUE), levels = c("", "a", "b", "unused")),
    ord = factor(sample(c("lo", "hi"), n, TRUE), levels = c("lo", "hi"), ordered = TRUE),
    lgl = sample(c(TRUE, FALSE, NA), n, TRUE),
    int = sample(c(-3L, 0L, 2147483647L, NA), n, TRUE),
    dbl = sample(c(-1.5, 0, 1e300, NA, Inf), n, TRUE),
    chr = sample(c("", "x", "\u00fc\u00df", NA), n, TRUE)
  )
  keep <- sample(names(md), sample(0:6, 1))
  for (k in keep) obj[[paste0(k, sample(c("", "_1", ".\u00e9"), 1))]] <- md[[k]]
  obj
}

test_that("random objects round-trip (types, NA, unicode, one cell, empty strings)", {
  for (seed in 1:25) {
    obj <- random_seurat(seed)
    back <- as.Seurat(as.AnnData(obj, verbose = FALSE), verbose = FALSE)
    expect_identical(layer_data(back, "counts"), layer_data(obj, "counts"), label = paste("seed", seed))
    expect_identical(back@meta.data, obj@meta.data, label = paste("seed", seed))
  }
})

test_that("a factor level NA becomes missing values, with a note, in memory and in files alike", {
  obj <- random_seurat(3)
  f <- factor(c("a", NA, "b", "a", NA, "b", "a")[seq_len(ncol(obj))], levels = c("a", "b"), exclude = NULL)
  f <- addNA(f)
  obj$grp <- f
  expect_true(anyNA(levels(obj$grp)))
  n_na <- sum(is.na(obj$grp))
  msgs <- character(0)
  ad <- withCallingHandlers(as.AnnData(obj, verbose = TRUE),
                            message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") })
  expect_match(paste(msgs, collapse = "\n"), sprintf("column 'grp': the factor level NA \\(%d values\\) became missing values", n_na))
  cats <- unlist(reticulate::py_to_r(ad$obs$grp$cat$categories$tolist()))
  expect_identical(cats, c("a", "b"))
  expect_equal(reticulate::py_to_r(ad$obs$grp$isna()$sum()), n_na)
  back <- as.Seurat(ad, verbose = FALSE)
  expect_identical(levels(back$grp), c("a", "b"))
  expect_identical(is.na(unname(back$grp)), is.na(unname(obj$grp)) | is.na(as.character(obj$grp)))
  expect_identical(addNA(unname(back$grp)), unname(obj$grp))  # addNA() restores it
  # through a file: the same values and the same note
  f5 <- tempfile(fileext = ".h5ad")
  on.exit(unlink(f5))
  msgs <- character(0)
  withCallingHandlers(WriteH5AD(obj, f5, verbose = TRUE),
                      message = function(m) { msgs <<- c(msgs, conditionMessage(m)); invokeRestart("muffleMessage") })
  expect_match(paste(msgs, collapse = "\n"), "column 'grp': the factor level NA")
  fromfile <- ReadH5AD(f5, verbose = FALSE)
  expect_identical(fromfile$grp, back$grp)
})
