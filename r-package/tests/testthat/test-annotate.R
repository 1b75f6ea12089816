# AnnotateCells: one call adds labels, scores and the pathway assay (real data: pbmc_3tech,
# train on 10x 3' v2, predict 5').
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

pbmc <- readRDS(shared_data("pbmc_3tech.rds"))
ref <- subset(pbmc, subset = donor == "3pv2")
qry <- subset(pbmc, subset = donor == "5p")

test_that("AnnotateCells (tosica) adds labels, scores, the pathway assay and a command log entry", {
  dir <- file.path(tempdir(), "pbmc_tosica_r")
  unlink(dir, recursive = TRUE)
  expect_warning(
    out <- AnnotateCells(qry, ref, reference.labels = "cell_type", model.dir = dir, device = "cpu", verbose = FALSE),
    "fewer than 10 cells: MK \\(2\\)"
  )
  expect_s3_class(out$predicted.celltype, "factor")
  expect_true("Unknown" %in% levels(out$predicted.celltype))
  s <- out$predicted.celltype.score
  expect_true(is.numeric(s) && all(s >= 0 & s <= 1))
  expect_true(all(out$predicted.celltype[s < 0.5] == "Unknown"))
  acc <- mean(as.character(out$predicted.celltype) == as.character(out$cell_type))
  expect_gt(acc, 0.9) # measured 0.96; "Unknown" counts as wrong
  # pathway assay: gene sets x cells, attention in data
  expect_true("pathway" %in% Assays(out))
  pw <- GetAssayData(out, slot = "data", assay = "pathway")
  expect_equal(ncol(pw), ncol(qry))
  expect_identical(colnames(pw), colnames(qry))
  expect_gt(nrow(pw), 100)
  expect_true("GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY" %in% rownames(pw))
  expect_true(all(pw >= 0) && all(colSums(pw) <= 1 + 1e-5))
  mf <- out[["pathway"]][[]]
  expect_identical(mf["GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY", "gene.set"], "GOBP_B_CELL_RECEPTOR_SIGNALING_PATHWAY")
  # Seurat tools work on pathways: B cells attend more to B-cell receptor signalling
  Idents(out) <- "cell_type"
  mk <- FindMarkers(out, ident.1 = "B", assay = "pathway", slot = "data", logfc.threshold = 0,
                    min.pct = 0, features = "GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY", verbose = FALSE)
  expect_lt(mk$p_val_adj[1], 1e-10)
  expect_gt(mk$avg_log2FC[1], 0)
  p <- DotPlot(out, assay = "pathway", features = "GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY")
  expect_s3_class(p, "ggplot")
  info <- Misc(out, "predicted.celltype")
  expect_identical(info$method, "tosica")
  expect_equal(info$n_shared_genes, 1767)
  cmd <- grep("^AnnotateCells", names(out@commands), value = TRUE)
  expect_length(cmd, 1)
  expect_identical(out@commands[[cmd]]$reference.labels, "cell_type")
  expect_true(file.exists(file.path(dir, "tosica.json")))
  expect_identical(ncol(qry[["RNA"]]), ncol(out[["RNA"]])) # query assays untouched

  # a saved model directory as the reference: no retraining, same labels
  again <- AnnotateCells(qry, dir, verbose = FALSE)
  expect_identical(as.character(again$predicted.celltype), as.character(out$predicted.celltype))
})

test_that("AnnotateCells stops with clear messages", {
  expect_error(AnnotateCells(qry, ref, reference.labels = "celltype", verbose = FALSE),
               "not a meta.data column.*cell_type")
  expect_error(AnnotateCells(qry, ref, reference.labels = "cell_type", gene.sets = "/no/such.gmt",
                             verbose = FALSE), "does not exist")
  few <- subset(qry, features = rownames(qry)[1:40])
  expect_error(AnnotateCells(few, ref, reference.labels = "cell_type", verbose = FALSE),
               "share only 40 genes")
})

test_that("AnnotateCells errors name R arguments; one-label references stop for every method", {
  expect_error(AnnotateCells(qry, ref, reference.labels = "cell_type", max.epochs = 0, verbose = FALSE),
               "max.epochs must be at least 1")
  expect_error(AnnotateCells(qry, ref, reference.labels = "cell_type", unknown.threshold = 3, verbose = FALSE),
               "unknown.threshold must be at most 1")
  one <- subset(ref, subset = cell_type == "B")
  for (m in c("tosica", "scanvi", "celltypist")) {
    expect_error(AnnotateCells(qry, one, reference.labels = "cell_type", method = m, verbose = FALSE),
                 "1 cell type in reference.labels 'cell_type' \\(only 'B'\\).*at least two")
  }
})
