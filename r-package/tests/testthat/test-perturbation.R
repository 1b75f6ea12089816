# ScorePerturbation() from Seurat: each score lands as metadata in one call (real data).

test_that("augur from R: per-cell AUC in meta.data, table in Misc, CD14 Mono among the top 3", {
  obj <- readRDS(shared_data("kang_ifnb_processed.rds"))
  md0 <- obj@meta.data
  counts0 <- SeuratObject::GetAssayData(obj, slot = "counts")
  obj <- ScorePerturbation(obj, condition = "stim", control = "CTRL", cell.type = "seurat_annotations",
                           n_subsamples = 6, n_estimators = 40, verbose = FALSE)
  expect_true("perturbation.auc" %in% colnames(obj@meta.data))
  expect_identical(obj@meta.data[, colnames(md0)], md0)
  expect_identical(SeuratObject::GetAssayData(obj, slot = "counts"), counts0)
  res <- SeuratObject::Misc(obj, "perturbation.augur")
  tab <- res$table
  expect_setequal(tab$cell_type, unique(as.character(obj$seurat_annotations)))
  expect_equal(nrow(tab), 13L)
  scored <- tab[!is.na(tab$auc), ]
  expect_equal(nrow(scored), 9L)
  expect_true(all(scored$auc >= 0.5 & scored$auc <= 1))
  expect_true(all(startsWith(tab$status[is.na(tab$auc)], "skipped: fewer than 20 cells per condition")))
  expect_true("CD14 Mono" %in% head(scored$cell_type[order(-scored$auc)], 3))
  # each cell carries its type's AUC
  auc <- setNames(tab$auc, tab$cell_type)
  expect_equal(unname(obj$perturbation.auc), unname(auc[as.character(obj$seurat_annotations)]))
  expect_equal(res$params$perturbed, "STIM")
  expect_equal(res$params$n_subsamples, 6L)
  expect_true(any(grepl("ScorePerturbation", names(obj@commands))))
  p <- PerturbationRankPlot(obj)
  expect_s3_class(p, "ggplot")
  expect_silent(ggplot2::ggplot_build(p))
})

test_that("mixscape from R: KO/NP/NT classes in meta.data, KO fractions in Misc", {
  obj <- readRDS(shared_data("papalexi_eccite.rds"))
  obj <- ScorePerturbation(obj, condition = "top_grna_target", control = "non-targeting", method = "mixscape",
                           split_key = "bio_rep", verbose = FALSE)
  md <- obj@meta.data
  expect_true(all(c("mixscape.class", "mixscape.class.global", "mixscape.p.ko") %in% colnames(md)))
  nt <- md$top_grna_target == "non-targeting"
  expect_true(all(md$mixscape.class.global[nt] == "NT"))
  expect_true(all(md$mixscape.class.global[!nt] %in% c("KO", "NP")))
  expect_s3_class(md$mixscape.class.global, "factor")
  expect_equal(md$mixscape.p.ko > 0.5, md$mixscape.class.global == "KO")
  tab <- SeuratObject::Misc(obj, "perturbation.mixscape")$table
  expect_equal(nrow(tab), 25L)
  frac <- setNames(tab$ko_fraction, tab$target)
  psmb9 <- SeuratObject::GetAssayData(Seurat::NormalizeData(obj, verbose = FALSE), slot = "data")["PSMB9", ]
  for (t in c("IFNGR1", "IFNGR2", "JAK2", "STAT1")) {
    expect_gt(frac[[t]], 0.1)
    ko <- md$mixscape.class == paste(t, "KO")
    np <- md$mixscape.class == paste(t, "NP")
    expect_lt(mean(psmb9[ko]), mean(psmb9[np]))
  }
  expect_true(length(SeuratObject::Misc(obj, "perturbation.mixscape")$de.genes$STAT1) >= 5)
  p <- PerturbationRankPlot(obj, method = "mixscape")
  expect_s3_class(p, "ggplot")
})

test_that("insilico from R: the deletion table lands in Misc (scVI encoder from RunSCVI)", {
  obj <- readRDS(shared_data("kang_ifnb_processed.rds"))
  obj$sample <- "kang"
  genes <- unique(c(c("ISG15", "IFIT1", "MX1", "IFI6"), head(SeuratObject::VariableFeatures(obj), 300)))
  dir <- file.path(tempdir(), "pert_scvi_r")
  obj <- suppressWarnings(RunSCVI(obj, batch = "sample", features = genes, max.epochs = 2, model.dir = dir, run.umap = FALSE,
                                  verbose = FALSE))
  obj <- ScorePerturbation(obj, condition = "stim", control = "CTRL", method = "insilico",
                           cell.type = "seurat_annotations", genes = c("ISG15", "IFIT1"), model.dir = dir,
                           groups = "CD14 Mono", n_random = 5, max_cells = 60, verbose = FALSE)
  res <- SeuratObject::Misc(obj, "perturbation.insilico")
  expect_equal(res$table$gene, c("ISG15", "IFIT1"))
  expect_true(all(res$table$group == "CD14 Mono"))
  expect_true(all(res$table$n_null == 5))
  expect_true(all(is.finite(res$table$goal_shift)) && all(res$table$cosine_shift > 0))
  expect_equal(res$params$encoder$kind, "scvi")
  expect_s3_class(PerturbationRankPlot(obj, method = "insilico"), "ggplot")
})

test_that("bad input: clear errors naming what exists; the object is untouched", {
  obj <- readRDS(shared_data("kang_ifnb_processed.rds"))
  expect_error(ScorePerturbation(obj, condition = "condition", control = "CTRL"),
               "not a meta.data column. Columns that exist: orig.ident, nCount_RNA")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "ctrl"),
               "not a value of meta.data column 'stim'. Values that exist: CTRL, STIM")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", method = "milo"), "method must be one of")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", method = "insilico",
                                 model.dir = tempdir(), genes = c("ISG15", "NOTAGENE")),
               "genes to delete not in assay 'RNA': NOTAGENE")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", method = "insilico"),
               "needs model.dir")
  expect_error(PerturbationRankPlot(obj), "run ScorePerturbation\\(\\) first")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", cell.type = "seurat_annotations",
                                 assay = "ADT"), "assay 'ADT' is not in the object")
})
