# ScorePerturbation() from Seurat: each score lands as metadata in one call (real data).

test_that("augur from R: per-cell AUC in meta.data, table in Misc, CD14 Mono among the top 3", {
  skip_slow("trains Augur's random forests on 13 cell types")
  obj <- readRDS(shared_data("kang_ifnb_processed.rds"))
  md0 <- obj@meta.data
  counts0 <- layer_data(obj, "counts")
  obj <- ScorePerturbation(obj, condition = "stim", control = "CTRL", cell.type = "seurat_annotations",
                           n_subsamples = 6, n_estimators = 40, verbose = FALSE)
  expect_true("perturbation.auc" %in% colnames(obj@meta.data))
  expect_identical(obj@meta.data[, colnames(md0)], md0)
  expect_identical(layer_data(obj, "counts"), counts0)
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
  expect_equal(res$params$span, 0.75)
  expect_true(any(grepl("ScorePerturbation", names(obj@commands))))
  p <- PerturbationRankPlot(obj)
  expect_s3_class(p, "ggplot")
  expect_silent(ggplot2::ggplot_build(p))
})

test_that("mixscape from R: RunMixscape's meta.data, PRTB assay and Tool; Seurat's Mixscape plots run on it", {
  skip_slow("fits Mixscape's mixtures on 20 guides")
  obj <- readRDS(shared_data("papalexi_eccite.rds"))
  obj <- ScorePerturbation(obj, condition = "top_grna_target", control = "non-targeting", method = "mixscape",
                           split_key = "bio_rep", verbose = FALSE)
  md <- obj@meta.data
  # the names Seurat's RunMixscape writes (new.class.name = "mixscape_class", prtb.type = "KO")
  expect_true(all(c("mixscape_class", "mixscape_class.global", "mixscape_class_p_ko") %in% colnames(md)))
  expect_false(any(c("mixscape.class", "mixscape.class.global", "mixscape.p.ko") %in% colnames(md)))
  nt <- md$top_grna_target == "non-targeting"
  expect_true(all(md$mixscape_class[nt] == "non-targeting"))
  expect_true(all(md$mixscape_class.global[nt] == "non-targeting"))
  expect_true(all(md$mixscape_class.global[!nt] %in% c("KO", "NP")))
  expect_type(md$mixscape_class.global, "character")
  expect_equal(md$mixscape_class_p_ko > 0.5, md$mixscape_class.global == "KO")
  expect_true(all(md$mixscape_class_p_ko[nt] == 0))
  expect_identical(as.character(SeuratObject::Idents(obj)), md$mixscape_class)
  tab <- SeuratObject::Misc(obj, "perturbation.mixscape")$table
  expect_equal(nrow(tab), 25L)
  frac <- setNames(tab$ko_fraction, tab$target)
  obj <- Seurat::NormalizeData(obj, verbose = FALSE)
  psmb9 <- layer_data(obj, "data")["PSMB9", ]
  for (t in c("IFNGR1", "IFNGR2", "JAK2", "STAT1")) {
    expect_gt(frac[[t]], 0.1)
    ko <- md$mixscape_class == paste(t, "KO")
    np <- md$mixscape_class == paste(t, "NP")
    expect_lt(mean(psmb9[ko]), mean(psmb9[np]))
  }
  expect_true(length(SeuratObject::Misc(obj, "perturbation.mixscape")$de.genes$STAT1) >= 5)
  # PRTB: the perturbation signature (NT-neighbour mean minus the cell), every gene of the assay
  prtb <- layer_data(obj, "data", assay = "PRTB")
  expect_equal(dim(prtb), dim(obj[["RNA"]]))
  expect_gt(mean(prtb["PSMB9", md$mixscape_class == "IFNGR2 KO"]), 0.5)
  # Tool(object, "RunMixscape"): per target, per replicate, pvec + the label column
  tool <- SeuratObject::Tool(obj, "RunMixscape")
  expect_setequal(names(tool[["IFNGR2"]]), unique(as.character(md$bio_rep)))
  gv <- tool[["IFNGR2"]][[1]]
  expect_identical(colnames(gv), c("pvec", "top_grna_target"))
  expect_setequal(unique(gv$top_grna_target), c("IFNGR2", "non-targeting"))
  expect_true(all(rownames(gv) %in% colnames(obj)))
  # Seurat's own Mixscape plots run on the result
  p <- Seurat::PlotPerturbScore(obj, target.gene.class = "top_grna_target", target.gene.ident = "IFNGR2",
                                mixscape.class = "mixscape_class", col = "coral2", split.by = "bio_rep")
  expect_s3_class(p, "ggplot")
  expect_silent(ggplot2::ggplot_build(p))
  p <- Seurat::PlotPerturbScore(obj, target.gene.class = "top_grna_target", target.gene.ident = "IFNGR2",
                                before.mixscape = TRUE)
  expect_s3_class(ggplot2::ggplot_build(p), "ggplot_built")
  h <- Seurat::MixscapeHeatmap(obj, ident.1 = "non-targeting", ident.2 = "IFNGR2 KO", balanced = FALSE,
                               assay = "RNA", max.genes = 20, angle = 0, mixscape.class = "mixscape_class",
                               max.cells.group = 100, size = 6.5)
  expect_s3_class(h, "ggplot")
  expect_true(any(grepl("IFNGR2 KO", levels(h$data$Identity))))
  sub <- subset(obj, cells = colnames(obj)[md$mixscape_class %in%
                                              c("non-targeting", "IFNGR2 KO", "JAK2 KO", "STAT1 KO")])
  sub <- Seurat::MixscapeLDA(sub, assay = "RNA", pc.assay = "PRTB", labels = "top_grna_target",
                             nt.label = "non-targeting", npcs = 5, logfc.threshold = 0.25, verbose = FALSE)
  lda <- SeuratObject::Embeddings(sub, "lda")
  expect_equal(ncol(lda), 3L)  # 4 classes
  # LDA separates the KO classes from non-targeting
  cls <- sub$mixscape_class
  expect_gt(abs(mean(lda[cls == "STAT1 KO", 1]) - mean(lda[cls == "non-targeting", 1])), 1)
  p <- PerturbationRankPlot(obj, method = "mixscape")
  expect_s3_class(p, "ggplot")
})

test_that("insilico from R: the deletion table lands in Misc (scVI encoder from RunSCVI)", {
  skip_slow()  # trains an scVI encoder
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

test_that("bad input: the engine's checks in R's words (R argument names); the object is untouched", {
  obj <- readRDS(shared_data("kang_ifnb_processed.rds"))
  md0 <- obj@meta.data
  expect_error(ScorePerturbation(obj, condition = "condition", control = "CTRL", verbose = FALSE),
               "condition 'condition' is not in obs \\(the cell metadata\\). Columns that exist: orig.ident, nCount_RNA")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "ctrl", verbose = FALSE),
               "control 'ctrl' is not a value of obs\\['stim'\\]. Values that exist: CTRL, STIM")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", cell.type = "celltype", verbose = FALSE),
               "cell.type 'celltype' is not in obs")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", method = "milo", verbose = FALSE),
               "method must be one of")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", n_subsamples = 0, verbose = FALSE),
               "n_subsamples must be at least 1, got 0")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", method = "insilico",
                                 model.dir = tempdir(), genes = c("ISG15", "NOTAGENE"), verbose = FALSE),
               "genes to delete not in the data: NOTAGENE")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", method = "insilico", verbose = FALSE),
               "needs model.dir=")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", method = "insilico", genes = "ISG15",
                                 model.dir = file.path(tempdir(), "nope"), verbose = FALSE),
               "model.dir='.*nope': no such directory")
  err <- tryCatch(ScorePerturbation(obj, condition = "condition", control = "CTRL", verbose = FALSE),
                  error = function(e) conditionMessage(e))
  expect_false(grepl("KeyError|Traceback|condition_key", err))
  expect_error(PerturbationRankPlot(obj), "run ScorePerturbation\\(\\) first")
  expect_error(ScorePerturbation(obj, condition = "stim", control = "CTRL", cell.type = "seurat_annotations",
                                 assay = "ADT"), "assay 'ADT' is not in the object")
  expect_identical(obj@meta.data, md0)
})

test_that("augur from R: counts are checked, and a warning when no cell type can be scored", {
  obj <- readRDS(shared_data("kang_ifnb_processed.rds"))
  obj <- subset(obj, cells = colnames(obj)[obj$seurat_annotations %in% c("B", "CD14 Mono")])
  expect_warning(out <- ScorePerturbation(obj, condition = "stim", control = "CTRL", cell.type = "seurat_annotations",
                                          min_cells = 5000, verbose = FALSE),
                 "no cell type could be scored")
  expect_true(all(is.na(out$perturbation.auc)))
  bad <- obj
  counts <- layer_data(bad, "counts")
  counts@x[3] <- -2
  bad <- SeuratObject::SetAssayData(bad, "counts", new.data = counts)
  expect_error(ScorePerturbation(bad, condition = "stim", control = "CTRL", verbose = FALSE),
               "contains negative values")
})

test_that("augur from R: progress lines when verbose, none when not", {
  skip_slow("starts two R processes that train Augur")
  # the engine writes to the console from Python (reticulate), which capture.output() does not
  # see: run each call in a fresh R process and read its console output
  run <- function(verbose) {
    script <- tempfile(fileext = ".R")
    on.exit(unlink(script))
    writeLines(c(
      "suppressPackageStartupMessages(library(pybridge))",
      sprintf("obj <- readRDS('%s')", shared_data("kang_ifnb_processed.rds")),
      "obj <- subset(obj, cells = colnames(obj)[obj$seurat_annotations %in% c('B', 'CD14 Mono')])",
      sprintf(paste0("invisible(ScorePerturbation(obj, condition = 'stim', control = 'CTRL', ",
                     "cell.type = 'seurat_annotations', n_subsamples = 2, n_estimators = 5, verbose = %s))"), verbose)
    ), script)
    system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE)
  }
  loud <- run(TRUE)
  expect_true(any(grepl("augur: subsample fits: 1/4", loud)), info = paste(loud, collapse = "\n"))
  expect_true(any(grepl("augur: 2 of 2 cell types scorable", loud)), info = paste(loud, collapse = "\n"))
  quiet <- run(FALSE)
  expect_false(any(grepl("augur:", quiet)), info = paste(quiet, collapse = "\n"))
})

test_that("mixscape parity: the same KO / NP calls as Seurat's own CalcPerturbSig + RunMixscape (Papalexi)", {
  skip_slow()  # Seurat's RunMixscape runs its LR tests: ~40 s
  skip_if_not_installed("mixtools")  # Seurat's RunMixscape needs it (Debian: r-cran-mixtools)
  obj <- readRDS(shared_data("papalexi_eccite.rds"))
  # the Papalexi vignette's settings
  s <- Seurat::NormalizeData(obj, verbose = FALSE)
  s <- Seurat::FindVariableFeatures(s, verbose = FALSE)
  s <- Seurat::ScaleData(s, verbose = FALSE)
  s <- Seurat::RunPCA(s, npcs = 40, verbose = FALSE)
  # (suppressWarnings: Seurat's command log warns about the name "Seurat::CalcPerturbSig")
  s <- suppressWarnings(Seurat::CalcPerturbSig(s, assay = "RNA", slot = "data", gd.class = "top_grna_target",
                                               nt.cell.class = "non-targeting", reduction = "pca", ndims = 40,
                                               num.neighbors = 20, split.by = "bio_rep", new.assay.name = "PRTB",
                                               verbose = FALSE))
  s <- Seurat::ScaleData(s, assay = "PRTB", do.scale = FALSE, do.center = TRUE, verbose = FALSE)
  s <- suppressMessages(Seurat::RunMixscape(s, assay = "PRTB", slot = "scale.data", labels = "top_grna_target",
                                            nt.class.name = "non-targeting", min.de.genes = 5, iter.num = 10,
                                            de.assay = "RNA", verbose = FALSE, prtb.type = "KO"))
  p <- ScorePerturbation(obj, condition = "top_grna_target", control = "non-targeting", method = "mixscape",
                         split_key = "bio_rep", verbose = FALSE)
  guide <- obj$top_grna_target != "non-targeting"
  expect_identical(p$mixscape_class.global[!guide], s$mixscape_class.global[!guide])  # "non-targeting"
  # measured: 98.8 % of the 18,343 guide cells get the same call
  expect_gt(mean(p$mixscape_class.global[guide] == s$mixscape_class.global[guide]), 0.97)
  ko <- function(x) tapply(x[guide] == "KO", obj$top_grna_target[guide], mean)
  ko_s <- ko(s$mixscape_class.global)
  ko_p <- ko(p$mixscape_class.global)
  # the same targets have a KO population (STAT1, JAK2, SMAD4, IFNGR2, IFNGR1, IRF1), fractions within 0.1
  expect_setequal(names(ko_p)[ko_p > 0.1], names(ko_s)[ko_s > 0.1])
  expect_lt(max(abs(ko_p - ko_s)), 0.1)
})
