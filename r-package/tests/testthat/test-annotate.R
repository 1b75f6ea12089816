# AnnotateCells: one call adds labels, scores, the prediction.score and pathway assays (real data:
# pbmc_3tech, train on 10x 3' v2, predict 5').
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

pbmc <- readRDS(shared_data("pbmc_3tech.rds"))
ref <- subset(pbmc, subset = donor == "3pv2")
qry <- subset(pbmc, subset = donor == "5p")

test_that("AnnotateCells (tosica) adds labels, scores, the pathway assay and a command log entry", {
  skip_slow()
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
  expect_lt(mean(out$predicted.celltype == "Unknown"), 0.05) # every query type is in the reference
  acc <- mean(as.character(out$predicted.celltype) == as.character(out$cell_type))
  expect_gt(acc, 0.9) # measured 0.96; "Unknown" counts as wrong
  # per-class probabilities as TransferData's assay: classes (+ max) x cells
  expect_true("prediction.score.celltype" %in% Assays(out))
  ps <- GetAssayData(out, slot = "data", assay = "prediction.score.celltype")
  expect_identical(colnames(ps), colnames(qry))
  expect_setequal(rownames(ps), c(gsub("_", "-", sort(unique(as.character(ref$cell_type)))), "max"))
  expect_equal(unname(colSums(ps[rownames(ps) != "max", ])), rep(1, ncol(qry)), tolerance = 1e-5)
  expect_equal(unname(ps["max", ]), unname(s), tolerance = 1e-6)
  # pathway assay: gene sets x cells, raw attention in counts, its LogNormalize in data
  expect_true("pathway" %in% Assays(out))
  raw <- GetAssayData(out, slot = "counts", assay = "pathway")
  pw <- GetAssayData(out, slot = "data", assay = "pathway")
  expect_identical(colnames(pw), colnames(qry))
  expect_gt(nrow(pw), 100)
  expect_true("GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY" %in% rownames(pw))
  expect_true(all(raw >= 0) && all(Matrix::colSums(raw) <= 1 + 1e-5))
  expect_equal(as.matrix(pw), as.matrix(LogNormalize(raw, verbose = FALSE)), tolerance = 1e-6)
  mf <- out[["pathway"]][[]]
  expect_identical(mf["GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY", "gene.set"], "GOBP_B_CELL_RECEPTOR_SIGNALING_PATHWAY")
  # Seurat tools work on pathways with their DEFAULT arguments (issue 15): B cells attend more
  # to B-cell receptor signalling
  Idents(out) <- "cell_type"
  mk <- FindMarkers(out, ident.1 = "B", assay = "pathway", verbose = FALSE)
  expect_true("GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY" %in% rownames(mk))
  expect_lt(mk["GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY", "p_val_adj"], 1e-10)
  expect_gt(mk["GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY", "avg_log2FC"], 0.25)
  all.mk <- FindAllMarkers(out, assay = "pathway", only.pos = TRUE, verbose = FALSE)
  expect_true(any(all.mk$cluster == "B" & all.mk$gene == "GOBP-B-CELL-RECEPTOR-SIGNALING-PATHWAY"))
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
  # model.dir holding a model of another reference is an error that says so
  expect_error(suppressWarnings(AnnotateCells(qry, subset(ref, cells = colnames(ref)[-(1:20)]),
                                              reference.labels = "cell_type", model.dir = dir, verbose = FALSE)),
               "model.dir .* another reference or other labels")

  # a second annotation under another key coexists with the first
  both <- suppressWarnings(AnnotateCells(out, ref, reference.labels = "cell_type_broad", method = "celltypist",
                                         key = "broad", verbose = FALSE))
  expect_true(all(c("predicted.celltype", "predicted.celltype.score", "predicted.broad", "predicted.broad.score")
                  %in% colnames(both[[]])))
  expect_identical(both$predicted.celltype, out$predicted.celltype)
  expect_true(all(c("prediction.score.celltype", "prediction.score.broad", "pathway") %in% Assays(both)))
  expect_setequal(rownames(both[["prediction.score.broad"]]), c(sort(unique(as.character(ref$cell_type_broad))), "max"))
  expect_gt(mean(as.character(both$predicted.broad) == as.character(both$cell_type_broad)), 0.9)
  expect_identical(Misc(both, "predicted.broad")$method, "celltypist")
  expect_error(AnnotateCells(out, ref, reference.labels = "cell_type", key = "a b", verbose = FALSE), "key must be")
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
