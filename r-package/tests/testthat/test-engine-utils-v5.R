# Every job on Seurat 5 objects (Assay5, joined and split layers): they all read the object
# through .job_anndata() (engine-utils.R) and write layers through .store_layer() (layers.R).
# A split object holds the same counts as the joined one, so each job must give the same result
# on both. Short runs (few epochs, subsets of cells); the job's own tests check the science.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})
options(Seurat.warn.umap.uwot = FALSE)

pbmc5 <- function(split.by = NULL) as_seurat5(readRDS(shared_data("pbmc_3tech.rds")), split.by = split.by)

test_that(".job_anndata joins split counts in the object's order and carries meta.data", {
  skip_unless_seurat5()
  ps <- pbmc5("donor")
  ad <- pybridge:::.job_anndata(ps)
  X <- Matrix::t(pybridge:::.py_matrix(ad$X))
  expect_identical(unname(X), unname(layer_data(readRDS(shared_data("pbmc_3tech.rds")), "counts")))
  obs <- pybridge:::.py_obs(ad)
  expect_identical(rownames(obs), colnames(ps))
  expect_identical(as.character(obs$split.layer), as.character(ps$donor))
  expect_identical(obs$cell_type, ps@meta.data$cell_type)
  expect_identical(unlist(reticulate::py_to_r(ad$layers$keys()$`__len__`())), 0L)  # X only
})

test_that("RunPreprocess on split layers writes data split like counts and matches the joined object", {
  skip_unless_seurat5()
  steps <- c("normalize", "hvg", "scale", "pca")
  joined <- RunPreprocess(pbmc5(), steps = steps, nfeatures = 500, npcs = 10, device = "cpu", verbose = FALSE)
  split <- RunPreprocess(pbmc5("donor"), steps = steps, nfeatures = 500, npcs = 10, device = "cpu", verbose = FALSE)
  expect_setequal(Layers(split[["RNA"]]), c(paste0(rep(c("counts.", "data."), each = 3), c("3pv1", "3pv2", "5p")),
                                            "scale.data"))
  expect_setequal(Layers(joined[["RNA"]]), c("counts", "data", "scale.data"))
  for (b in c("3pv1", "3pv2", "5p")) {
    expect_identical(Cells(split[["RNA"]], layer = paste0("data.", b)), Cells(split[["RNA"]], layer = paste0("counts.", b)))
  }
  dj <- LayerData(JoinLayers(split[["RNA"]], layers = "data"), layer = "data")
  expect_identical(dj, LayerData(joined, layer = "data"))
  # log-normalisation is per cell: Seurat's NormalizeData on the split object agrees
  ref <- NormalizeData(pbmc5("donor"), verbose = FALSE)
  expect_equal(LayerData(split, layer = "data.5p"), LayerData(ref, layer = "data.5p"), tolerance = 1e-6)
  expect_identical(VariableFeatures(split), VariableFeatures(joined))
  expect_identical(LayerData(split, layer = "scale.data"), LayerData(joined, layer = "scale.data"))
  expect_identical(Embeddings(split, "pca"), Embeddings(joined, "pca"))
  expect_identical(split@meta.data, pbmc5("donor")@meta.data)
})

test_that("RunSCVI and MapQuerySCVI accept split and joined v5 objects", {
  skip_unless_seurat5()
  skip_slow()
  ps <- pbmc5("donor")
  small <- subset(ps, cells = colnames(ps)[c(1:80, 400:480, 900:980)])
  dir <- tempfile("scvi-v5-")
  res <- RunSCVI(small, batch = "donor", nfeatures = 300, max.epochs = 3, run.umap = FALSE, device = "cpu",
                 model.dir = dir, verbose = FALSE)
  emb <- Embeddings(res, "scvi")
  expect_equal(dim(emb), c(ncol(small), 10L))
  expect_identical(rownames(emb), colnames(small))
  expect_equal(sum(unlist(Misc(res[["scvi"]])$batches)), ncol(small))
  for (l in Layers(small[["RNA"]])) expect_identical(LayerData(res, layer = l), LayerData(small, layer = l))
  query <- as_seurat5(subset(readRDS(shared_data("pbmc_3tech.rds")), cells = colnames(ps)[1001:1060]))
  q <- MapQuerySCVI(query, model.dir = dir, max.epochs = 2, device = "cpu", verbose = FALSE)
  expect_equal(dim(Embeddings(q, "scvi")), c(60L, 10L))
  expect_true(all(is.finite(Embeddings(q, "scvi"))))
})

test_that("AnnotateCells takes a v5 query and reference (split or not) and adds its assay", {
  skip_unless_seurat5()
  skip_slow()
  ps <- pbmc5("donor")
  ref <- subset(ps, subset = donor == "3pv2")
  qry <- subset(ps, subset = donor == "5p")
  out <- AnnotateCells(qry, ref, reference.labels = "cell_type", method = "tosica", max.epochs = 3,
                       device = "cpu", verbose = FALSE)
  expect_s3_class(out$predicted.celltype, "factor")
  expect_identical(names(out$predicted.celltype), colnames(qry))
  expect_true("pathway" %in% Assays(out))
  pw <- layer_data(out, "data", assay = "pathway")
  expect_identical(colnames(pw), colnames(qry))
  acc <- mean(as.character(out$predicted.celltype) == as.character(out$cell_type))
  expect_gt(acc, 0.3)  # 3 epochs: a smoke floor; test-annotate.R holds the accuracy floor
})

test_that("Deconvolve (NNLS) gives the same abundances on a v5 object as on the v4 one", {
  skip_unless_seurat5()
  vis4 <- readRDS(shared_data("lymphnode_visium.rds"))
  ref4 <- readRDS(shared_data("lymphnode_reference.rds"))
  out4 <- Deconvolve(vis4, ref4, "cell_type", method = "nnls", verbose = FALSE)
  out5 <- Deconvolve(as_seurat5(vis4), as_seurat5(ref4), "cell_type", method = "nnls", verbose = FALSE)
  cols <- grep("^nnls\\.mean\\.", colnames(out4[[]]), value = TRUE)
  expect_length(cols, 11L)
  expect_equal(out5[[]][, cols], out4[[]][, cols], tolerance = 1e-6)
  expect_true("nnls" %in% Assays(out5))
  expect_equal(unname(as.matrix(layer_data(out5, "data", assay = "nnls"))),
               unname(as.matrix(layer_data(out4, "data", assay = "nnls"))), tolerance = 1e-6)
})

test_that("ScorePerturbation (augur) gives the same AUCs on split and joined v5 objects", {
  skip_unless_seurat5()
  skip_slow()
  k <- readRDS(shared_data("kang_ifnb_processed.rds"))
  k <- subset(k, subset = seurat_annotations %in% c("CD14 Mono", "B", "CD4 Naive T"))
  run <- function(obj) ScorePerturbation(obj, condition = "stim", control = "CTRL", cell.type = "seurat_annotations",
                                         n_subsamples = 3, n_estimators = 20, verbose = FALSE)
  joined <- run(as_seurat5(k))
  split <- run(as_seurat5(k, split.by = "stim"))
  tj <- Misc(joined, "perturbation.augur")$table
  ts <- Misc(split, "perturbation.augur")$table
  expect_equal(nrow(tj), 3L)
  expect_equal(ts$auc, tj$auc)
  expect_equal(unname(split$perturbation.auc), unname(joined$perturbation.auc))
})
