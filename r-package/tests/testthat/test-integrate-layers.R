# scVIIntegration (integrate-layers.R): the IntegrateLayers() method contract, on real data
# (pbmc_3tech: three 10x chemistries, column `donor`). Short CPU training; floors measured on
# this data (values in comments) with a margin.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})
options(Seurat.warn.umap.uwot = FALSE)

pbmc <- function() readRDS(shared_data("pbmc_3tech.rds"))
# short CPU training: 40 epochs, KL warm-up 15, learning rate 4e-3 (as test-scvi.R's RunSCVI)
fast_training <- list(max_epochs = 40, kl_warmup_epochs = 15L, train_kwargs = list(plan_kwargs = list(lr = 4e-3)),
                      device = "cpu", verbose = FALSE)

test_that("scVIIntegration follows the IntegrateLayers method contract (v3 Assay + groups, called directly)", {
  skip_slow()
  obj <- pbmc()
  small <- subset(obj, cells = colnames(obj)[c(1:100, 500:600)])
  if (is_seurat5()) suppressWarnings(small[["RNA"]] <- as(small[["RNA"]], "Assay"))
  groups <- data.frame(group = small$donor, row.names = colnames(small))
  expect_identical(attr(scVIIntegration, "Seurat.method"), "integration")
  res <- scVIIntegration(small[["RNA"]], assay = "RNA", groups = groups, new.reduction = "integrated.scvi",
                         nfeatures = 500, ndims = 10, max_epochs = 2, device = "cpu", verbose = FALSE)
  expect_named(res, "integrated.scvi")
  expect_s4_class(res[[1]], "DimReduc")
  emb <- SeuratObject::Embeddings(res[[1]])
  expect_equal(dim(emb), c(ncol(small), 10L))
  expect_identical(rownames(emb), colnames(small))
  expect_identical(SeuratObject::Key(res[[1]]), "integratedscvi_")
  expect_length(SeuratObject::Misc(res[[1]])$genes, 500)
  small[["integrated.scvi"]] <- res[[1]]  # what IntegrateLayers does with the result
  expect_true("integrated.scvi" %in% SeuratObject::Reductions(small))
  expect_error(scVIIntegration(small[["RNA"]]), "layers of assay 'RNA' are not split")
  expect_error(scVIIntegration(small[["RNA"]], groups = groups, max.epochs = 2), "unused argument max.epochs")
  expect_error(scVIIntegration(small[["RNA"]], groups = groups, k.weight = 50), "unused argument k.weight")
  expect_error(scVIIntegration(small[["RNA"]], groups = groups, n_latent = 5L), "n_latent is set through ndims")
  expect_error(scVIIntegration(small, groups = groups), "`object` must be an assay")
  expect_error(scVIIntegration(small[["RNA"]], groups = groups[1:10, , drop = FALSE]), "no batch for 191 of the 201 cells")
})

test_that("IntegrateLayers(method = scVIIntegration) on split layers mixes the chemistries, cell types stay apart", {
  skip_unless_seurat5()
  skip_slow()
  obj <- as_seurat5(pbmc(), split.by = "donor")
  obj <- NormalizeData(obj, verbose = FALSE)
  obj <- suppressWarnings(FindVariableFeatures(obj, nfeatures = 2000, verbose = FALSE))  # (loess notes on small layers)
  obj <- ScaleData(obj, verbose = FALSE)
  obj <- RunPCA(obj, npcs = 30, verbose = FALSE)
  before <- lapply(stats::setNames(nm = Layers(obj[["RNA"]])), function(l) LayerData(obj, layer = l))
  t0 <- Sys.time()
  # as Seurat's vignette calls it; IntegrateLayers hands the method the data layers (data.3pv1, ...):
  # the counts layers are what it must train on
  obj <- do.call(IntegrateLayers, c(list(object = obj, method = scVIIntegration, orig.reduction = "pca",
                                         new.reduction = "integrated.scvi"), fast_training))
  secs <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  expect_true("integrated.scvi" %in% Reductions(obj))
  emb <- Embeddings(obj, "integrated.scvi")
  expect_equal(dim(emb), c(ncol(obj), 30L))  # ndims = 30, SeuratWrappers' default
  expect_identical(rownames(emb), colnames(obj))
  expect_true(all(is.finite(emb)))
  misc <- Misc(obj[["integrated.scvi"]])
  expect_equal(unlist(misc$batches)[c("3pv1", "3pv2", "5p")], c(`3pv1` = 290, `3pv2` = 480, `5p` = 430))
  expect_length(misc$genes, 1767)  # IntegrateLayers' features: all 1,767 variable genes
  expect_equal(misc$params$epochs_trained, 40)
  for (l in names(before)) expect_identical(LayerData(obj, layer = l), before[[l]], label = l)  # layers untouched
  pca <- IntegrationScores(obj, "pca", batch = "donor", labels = "cell_type")
  scv <- IntegrationScores(obj, "integrated.scvi", batch = "donor", labels = "cell_type")
  message(sprintf("IntegrateLayers(scVIIntegration) on pbmc_3tech split by donor (%.0f s):\n  PCA:  %s\n  scVI: %s", secs,
                  paste(names(pca), signif(pca, 3), sep = "=", collapse = " "),
                  paste(names(scv), signif(scv, 3), sep = "=", collapse = " ")))
  # measured (40 epochs, 10 s on 2 CPU cores): iLISI_norm PCA 0.082 -> scVI 0.581; cLISI_norm 0.986 -> 0.996;
  # kNN label accuracy 0.912 -> 0.942; label ASW 0.578 -> 0.663
  expect_gt(scv[["ilisi_norm"]], pca[["ilisi_norm"]] + 0.25)
  expect_gt(scv[["clisi_norm"]], 0.95)
  expect_gt(scv[["knn_label_accuracy"]], 0.85)
  # downstream Seurat works on it, as in the vignette
  obj <- FindNeighbors(obj, reduction = "integrated.scvi", dims = 1:30, verbose = FALSE)
  expect_true("RNA_snn" %in% Graphs(obj))
})

test_that("IntegrateLayers without a split, and arguments scVIIntegration does not use, are clear errors", {
  skip_unless_seurat5()
  obj <- as_seurat5(pbmc())
  obj <- NormalizeData(obj, verbose = FALSE)
  obj <- FindVariableFeatures(obj, verbose = FALSE)
  obj <- ScaleData(obj, verbose = FALSE)
  obj <- RunPCA(obj, npcs = 10, verbose = FALSE)
  before <- obj
  expect_error(IntegrateLayers(obj, method = scVIIntegration, verbose = FALSE),
               "layers of assay 'RNA' are not split \\(layers: .*\\). Split them first: obj")
  split <- as_seurat5(pbmc(), split.by = "donor")
  split <- ScaleData(suppressWarnings(FindVariableFeatures(NormalizeData(split, verbose = FALSE), verbose = FALSE)),
                     verbose = FALSE)
  split <- RunPCA(split, npcs = 10, verbose = FALSE)
  expect_error(IntegrateLayers(split, method = scVIIntegration, max.epochs = 2, verbose = FALSE),
               "unused argument max.epochs")
  expect_error(IntegrateLayers(split, method = scVIIntegration, k.weight = 50, verbose = FALSE),
               "unused argument k.weight")
  expect_warning(expect_error(IntegrateLayers(split, method = scVIIntegration, conda_env = "scvi-env",
                                              groups = "donor", verbose = FALSE), "`groups` must be a data frame"),
                 "`conda_env` is not used")
  expect_identical(obj, before)
})

test_that("groups = gives the batch of an object whose layers are joined", {
  skip_unless_seurat5()
  skip_slow()
  obj <- as_seurat5(pbmc())
  obj <- subset(obj, cells = colnames(obj)[c(1:100, 500:600, 1000:1100)])
  obj <- RunPCA(ScaleData(suppressWarnings(FindVariableFeatures(NormalizeData(obj, verbose = FALSE), verbose = FALSE)),
                          verbose = FALSE), npcs = 10, verbose = FALSE)
  obj <- IntegrateLayers(obj, method = scVIIntegration, groups = obj[["donor"]], new.reduction = "scvi.donor",
                         ndims = 8, max_epochs = 2, device = "cpu", verbose = FALSE)
  expect_equal(dim(Embeddings(obj, "scvi.donor")), c(ncol(obj), 8L))
  expect_equal(sum(unlist(Misc(obj[["scvi.donor"]])$batches)), ncol(obj))
  expect_setequal(names(unlist(Misc(obj[["scvi.donor"]])$batches)), unique(obj$donor))
})
