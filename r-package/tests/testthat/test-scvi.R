# RunSCVI / MapQuerySCVI on real data (scVIIntegration: test-integrate-layers.R) (pbmc_3tech: three 10x chemistries).
# Short CPU training; floors measured on this data (values in comments) with a margin.

options(Seurat.warn.umap.uwot = FALSE)

pbmc <- function() readRDS(shared_data("pbmc_3tech.rds"))

pca_baseline <- function(obj) {
  obj <- Seurat::NormalizeData(obj, verbose = FALSE)
  obj <- Seurat::FindVariableFeatures(obj, nfeatures = 2000, verbose = FALSE)
  obj <- Seurat::ScaleData(obj, verbose = FALSE)
  Seurat::RunPCA(obj, npcs = 30, verbose = FALSE)
}

test_that("RunSCVI mixes the three chemistries better than PCA while cell types stay apart", {
  skip_slow()
  obj <- pca_baseline(pbmc())
  counts0 <- layer_data(obj, "counts")
  # short CPU training: 40 epochs, KL warm-up 15, learning rate 4e-3 (scvi-tools default 1e-3 needs more epochs)
  obj <- RunSCVI(obj, batch = "donor", max.epochs = 40, device = "cpu", verbose = FALSE, kl_warmup_epochs = 15L,
                 train_kwargs = list(plan_kwargs = list(lr = 4e-3)))
  expect_true(all(c("scvi", "umap.scvi") %in% SeuratObject::Reductions(obj)))
  emb <- SeuratObject::Embeddings(obj, "scvi")
  expect_equal(dim(emb), c(ncol(obj), 10L))
  expect_identical(rownames(emb), colnames(obj))
  expect_true(all(is.finite(emb)))
  expect_equal(ncol(SeuratObject::Embeddings(obj, "umap.scvi")), 2L)
  expect_identical(layer_data(obj, "counts"), counts0)  # counts untouched
  misc <- SeuratObject::Misc(obj[["scvi"]])
  expect_equal(misc$params$batch_key, "donor")
  expect_equal(misc$params$epochs_trained, 40)
  expect_length(misc$genes, 1767)  # fewer genes than nfeatures: all genes are used
  expect_equal(unlist(misc$batches)[c("3pv1", "3pv2", "5p")], c(`3pv1` = 290, `3pv2` = 480, `5p` = 430))
  expect_true("RunSCVI.RNA.scvi" %in% names(obj@commands) || any(grepl("RunSCVI", names(obj@commands))))

  pca <- IntegrationScores(obj, "pca", batch = "donor", labels = "cell_type")
  scv <- IntegrationScores(obj, "scvi", batch = "donor", labels = "cell_type")
  message(sprintf("pbmc_3tech PCA: %s\npbmc_3tech scVI: %s",
                  paste(names(pca), signif(pca, 3), sep = "=", collapse = " "),
                  paste(names(scv), signif(scv, 3), sep = "=", collapse = " ")))
  # mixing of chemistries improves (measured iLISI_norm: PCA 0.08 -> scVI 0.50; batch ASW 0.78 -> 0.83)
  expect_gt(scv[["ilisi_norm"]], pca[["ilisi_norm"]] + 0.25)
  expect_gt(scv[["asw_batch"]], pca[["asw_batch"]] + 0.02)
  # cell types stay apart (measured cLISI_norm 0.99, kNN label accuracy 0.94)
  expect_gt(scv[["clisi_norm"]], 0.95)
  expect_gt(scv[["knn_label_accuracy"]], 0.88)
})

test_that("MapQuerySCVI maps a third chemistry into a two-chemistry reference", {
  skip_slow()
  obj <- pbmc()
  ref <- subset(obj, subset = donor != "3pv1")
  query <- subset(obj, subset = donor == "3pv1")
  truth <- as.character(query$cell_type)
  query$cell_type <- NULL
  mdir <- file.path(tempdir(), "scvi_ref_model")
  on.exit(unlink(mdir, recursive = TRUE), add = TRUE)
  ref <- RunSCVI(ref, batch = "donor", max.epochs = 40, device = "cpu", run.umap = FALSE, model.dir = mdir,
                 verbose = FALSE, kl_warmup_epochs = 15L, train_kwargs = list(plan_kwargs = list(lr = 4e-3)))
  expect_true(all(file.exists(file.path(mdir, c("model.pt", "pybridge_scvi.json")))))
  query <- MapQuerySCVI(query, mdir, max.epochs = 20, device = "cpu", reference = ref, refdata = "cell_type",
                        verbose = FALSE)
  emb <- SeuratObject::Embeddings(query, "scvi")
  expect_equal(dim(emb), c(ncol(query), 10L))
  expect_true(all(is.finite(emb)))
  acc <- mean(as.character(query$predicted.cell_type) == truth)
  message(sprintf("query 3pv1 -> reference (3pv2 + 5p): kNN label agreement %.3f", acc))
  expect_gt(acc, 0.8)  # measured 0.88
  expect_true(all(query$predicted.cell_type.score >= 0 & query$predicted.cell_type.score <= 1))
  expect_true(any(grepl("MapQuerySCVI", names(query@commands))))
})

test_that("bad inputs give clear errors and leave the object untouched", {
  obj <- pbmc()
  small <- subset(obj, cells = colnames(obj)[c(1:60, 400:460)])
  before <- small
  # log-normalised values where counts are needed
  lognorm <- Seurat::NormalizeData(small, verbose = FALSE)
  bad <- SeuratObject::CreateSeuratObject(counts = layer_data(lognorm, "data"),
                                          meta.data = small[[]])
  bad0 <- bad
  expect_error(RunSCVI(bad, batch = "donor", max.epochs = 1, verbose = FALSE),
               "'counts' slot of assay 'RNA'.*non-integer.*log-normalised")
  expect_identical(bad, bad0)
  # missing batch column (lists the columns)
  expect_error(RunSCVI(small, batch = "sample", max.epochs = 1, verbose = FALSE),
               "'sample'.*Columns that exist: orig.ident, nCount_RNA")
  # a batch with too few cells
  tiny <- small
  tiny$donor <- as.character(tiny$donor)
  tiny$donor[1:3] <- "tiny"
  expect_error(RunSCVI(tiny, batch = "donor", max.epochs = 1, verbose = FALSE),
               "fewer than 10 cells: 'tiny' \\(3 cells\\)")
  # NaN and negative values in counts
  for (v in c(NaN, -2)) {
    m <- layer_data(small, "counts")
    m[5, 3] <- v
    b <- SeuratObject::CreateSeuratObject(counts = m, meta.data = small[[]])
    m0 <- layer_data(b, "counts")
    expect_error(RunSCVI(b, batch = "donor", max.epochs = 1, verbose = FALSE),
                 if (is.nan(v)) "NaN" else "negative")
    expect_identical(layer_data(b, "counts"), m0)
  }
  expect_error(RunSCVI(small, max.epochs = 1), "`batch` must name one meta.data column")
  expect_error(RunSCVI(small, batch = "donor", covariates = "chem"), "covariate column\\(s\\) 'chem' not in meta.data")
  expect_error(MapQuerySCVI(small, file.path(tempdir(), "no_such_model")), "model.pt and pybridge_scvi.json")
  # epochs: -1 used to train forever, 0 to return an untrained model; now errors in R's names, before any work
  expect_error(RunSCVI(small, batch = "donor", max.epochs = -1, verbose = FALSE), "max.epochs must be at least 1, got -1")
  expect_error(RunSCVI(small, batch = "donor", max.epochs = 0, verbose = FALSE), "max.epochs must be at least 1, got 0")
  expect_error(RunSCVI(small, batch = "donor", max.epochs = 1, batch.size = 0, verbose = FALSE),
               "batch.size must be at least 1")
  # MapQuerySCVI documents 0 as "no training": only negative values are errors
  expect_error(MapQuerySCVI(small, file.path(tempdir(), "no_such_model"), max.epochs = -1),
               "max.epochs must be at least 0, got -1")
  expect_identical(small, before)
  expect_false("scvi" %in% SeuratObject::Reductions(small))
})

test_that("RunSCVI(labels =) trains scANVI and adds its predictions to meta.data", {
  skip_slow()
  obj <- pbmc()
  small <- subset(obj, cells = colnames(obj)[c(1:100, 500:600)])
  small$cell_type <- as.character(small$cell_type)
  small$cell_type[1:20] <- NA  # unlabelled cells
  res <- RunSCVI(small, batch = "donor", labels = "cell_type", nfeatures = 500, max.epochs = 2, scanvi_max_epochs = 1L,
                 run.umap = FALSE, device = "cpu", verbose = FALSE)
  expect_true(all(c("cell_type_scanvi", "cell_type_scanvi_prob") %in% colnames(res[[]])))
  expect_true(all(as.character(res$cell_type_scanvi) %in% unique(na.omit(small$cell_type))))
  expect_true(all(res$cell_type_scanvi_prob > 0 & res$cell_type_scanvi_prob <= 1))
  expect_equal(SeuratObject::Misc(res[["scvi"]])$params$model_class, "SCANVI")
  expect_false("umap.scvi" %in% SeuratObject::Reductions(res))
})

test_that("RunSCVI shows training progress when verbose and nothing from Lightning when not", {
  skip_slow()
  # the engine writes to the console from Python (reticulate), which capture.output() does not
  # see: run each call in a fresh R process and read its console output
  run <- function(verbose) {
    script <- tempfile(fileext = ".R")
    on.exit(unlink(script))
    writeLines(c(
      "suppressPackageStartupMessages(library(pybridge))",
      sprintf("obj <- readRDS('%s')", shared_data("pbmc_3tech.rds")),
      "obj <- subset(obj, cells = colnames(obj)[c(1:100, 500:600)])",
      sprintf(paste0("invisible(RunSCVI(obj, batch = 'donor', nfeatures = 300, max.epochs = 2, run.umap = FALSE, ",
                     "device = 'cpu', verbose = %s))"), verbose)
    ), script)
    system2(file.path(R.home("bin"), "Rscript"), script, stdout = TRUE, stderr = TRUE)
  }
  loud <- run(TRUE)
  expect_true(any(grepl("Epoch 2/2", loud)), info = paste(loud, collapse = "\n"))
  quiet <- run(FALSE)
  expect_false(any(grepl("Epoch|GPU available|Seed set|training scVI", quiet)), info = paste(quiet, collapse = "\n"))
})
