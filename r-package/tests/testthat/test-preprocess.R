# RunPreprocess against Seurat's own chain on real data: same data layer, same variable
# features, same scale.data, same PCA (up to sign), the same SNN graph, close clusters; and the
# result works with downstream Seurat functions.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

raw_object <- function(file) {
  obj <- readRDS(shared_data(file))
  if (is_seurat5()) return(DietSeurat(obj, layers = c("counts", "data"), dimreducs = NULL, graphs = NULL))
  DietSeurat(obj, counts = TRUE, data = TRUE, scale.data = FALSE, dimreducs = NULL, graphs = NULL)
}

seurat_chain <- function(obj, nfeatures) {
  s <- NormalizeData(obj, verbose = FALSE)
  s <- FindVariableFeatures(s, selection.method = "vst", nfeatures = nfeatures, verbose = FALSE)
  s <- ScaleData(s, verbose = FALSE)
  s <- RunPCA(s, npcs = 50, verbose = FALSE)
  s <- FindNeighbors(s, dims = 1:30, verbose = FALSE)
  FindClusters(s, resolution = 0.8, verbose = FALSE)
}

# Adjusted Rand index (Hubert & Arabie 1985), from the contingency table.
ari <- function(a, b) {
  tab <- table(as.character(a), as.character(b))
  c2 <- function(x) sum(x * (x - 1) / 2)
  index <- c2(tab)
  expected <- c2(rowSums(tab)) * c2(colSums(tab)) / c2(sum(tab))
  (index - expected) / ((c2(rowSums(tab)) + c2(colSums(tab))) / 2 - expected)
}

# One run of each chain per data set, shared by the tests below. The fast tier (make test-fast)
# compares on pbmc_3tech (1,200 cells x 1,767 genes, a few seconds); the full suite on Kang too.
cases <- list(
  pbmc3 = list(file = "pbmc_3tech.rds", nfeatures = 500, ari_floor = 0.9),
  kang = list(file = "kang_ifnb_processed.rds", nfeatures = 2000, ari_floor = 0.9)
)
if (nzchar(Sys.getenv("PYBRIDGE_TEST_FAST", unset = ""))) cases$kang <- NULL
for (nm in names(cases)) {
  obj <- raw_object(cases[[nm]]$file)
  cases[[nm]]$input <- obj
  cases[[nm]]$ours <- RunPreprocess(obj, nfeatures = cases[[nm]]$nfeatures, device = "cpu", verbose = FALSE)
  cases[[nm]]$seurat <- seurat_chain(obj, cases[[nm]]$nfeatures)
}

test_that("data, variable features and scale.data match Seurat's NormalizeData/FindVariableFeatures/ScaleData", {
  for (nm in names(cases)) {
    cs <- cases[[nm]]
    ours <- cs$ours
    s <- cs$seurat
    expect_identical(layer_data(ours, "counts"), layer_data(cs$input, "counts"))
    d1 <- layer_data(ours, "data")
    expect_s4_class(d1, "dgCMatrix")
    expect_lt(max(abs(d1 - layer_data(s, "data"))), 1e-12)
    # variable features: measured overlap 0.9995 (kang, 2000; the 1 gene of difference is a tie
    # to 1e-16) and 1.0 (pbmc_3tech, 500)
    hv1 <- VariableFeatures(ours)
    hv2 <- VariableFeatures(s)
    expect_length(hv1, cs$nfeatures)
    expect_gte(length(intersect(hv1, hv2)) / cs$nfeatures, 0.95, label = paste(nm, "HVG overlap"))
    expect_identical(hv1[1:100], hv2[1:100])
    mf1 <- ours[["RNA"]][[]]
    mf2 <- s[["RNA"]][[]]
    for (col in c("vst.mean", "vst.variance", "vst.variance.expected", "vst.variance.standardized")) {
      expect_equal(mf1[[col]], mf2[[col]], tolerance = 1e-10, label = paste(nm, col))
    }
    expect_identical(sum(mf1$vst.variable), as.integer(cs$nfeatures))
    # scale.data: the variable features, in VariableFeatures() order, same values as ScaleData
    sd1 <- layer_data(ours, "scale.data")
    # Seurat keeps scale.data rows in the assay's feature order (SetAssayData reorders them)
    expect_identical(rownames(sd1), rownames(ours)[rownames(ours) %in% hv1])
    expect_identical(colnames(sd1), colnames(ours))
    sh <- intersect(hv1, hv2)
    expect_lt(max(abs(sd1[sh, ] - layer_data(s, "scale.data")[sh, ])), 1e-8)
  }
})

test_that("PCA matches RunPCA up to sign, with loadings and stdev", {
  for (nm in names(cases)) {
    ours <- cases[[nm]]$ours
    s <- cases[[nm]]$seurat
    pca <- ours[["pca"]]
    expect_identical(dim(Embeddings(pca)), c(ncol(ours), 50L))
    expect_identical(rownames(Loadings(pca)), VariableFeatures(ours))
    expect_identical(Key(pca), "PC_")
    expect_identical(DefaultAssay(pca), "RNA")
    cr <- abs(diag(cor(Embeddings(pca), Embeddings(s, "pca"))))
    # measured: >= 0.9999 for PC 1-10 on both; Seurat's irlba drifts on later, close PCs
    expect_gt(min(cr[1:10]), 0.999, label = paste(nm, "PC 1-10 |cor|"))
    expect_lt(max(abs(Stdev(pca)[1:10] / Stdev(s, "pca")[1:10] - 1)), 1e-3)
    # embeddings = scale.data projected on the loadings (centred), as Seurat's
    sd <- layer_data(ours, "scale.data")
    sd <- sd[rownames(Loadings(pca)), ]
    proj <- crossprod(sd - rowMeans(sd), Loadings(pca)[, 1:5])
    expect_lt(max(abs(proj - Embeddings(pca)[, 1:5])), 1e-6 * max(abs(proj)))
    expect_gt(pca@misc$total.variance, sum(Stdev(pca)^2))
  }
})

test_that("the graphs are Seurat's: kNN with the cell itself and the SNN of FindNeighbors", {
  for (nm in names(cases)) {
    ours <- cases[[nm]]$ours
    expect_setequal(Graphs(ours), c("RNA_nn", "RNA_snn"))
    nn <- ours[["RNA_nn"]]
    snn <- ours[["RNA_snn"]]
    expect_s4_class(snn, "Graph")
    expect_identical(DefaultAssay(snn), "RNA")
    expect_true(all(Matrix::rowSums(nn) == 20))
    expect_true(all(Matrix::diag(nn) == 1))
    # Seurat's own FindNeighbors (exact kNN) on our PCA gives the very same graphs
    ref <- FindNeighbors(ours, dims = 1:30, nn.method = "rann", verbose = FALSE, graph.name = c("ref_nn", "ref_snn"))
    expect_identical(length(snn@x), length(ref[["ref_snn"]]@x))
    expect_lt(max(abs(snn - ref[["ref_snn"]])), 1e-12)
    expect_identical(max(abs(nn - ref[["ref_nn"]])), 0)
  }
})

test_that("clusters agree with Seurat's pipeline (ARI above a measured floor)", {
  for (nm in names(cases)) {
    cs <- cases[[nm]]
    ours <- cs$ours
    expect_identical(Idents(ours), ours$seurat_clusters)
    expect_identical(ours$seurat_clusters, ours$RNA_snn_res.0.8)
    sizes <- table(ours$seurat_clusters)
    expect_identical(names(sizes)[which.max(sizes)], "0")
    # measured: ARI 0.966 (kang, 11 vs 11 clusters), 0.946 (pbmc_3tech, 9 vs 9); floor 0.9
    a <- ari(ours$seurat_clusters, cs$seurat$seurat_clusters)
    expect_gt(a, cs$ari_floor, label = paste(nm, "ARI vs Seurat"))
    # Seurat's Louvain on our SNN graph finds our Leiden partition (measured ARI 1.0)
    again <- FindClusters(ours, resolution = 0.8, verbose = FALSE)
    expect_gt(ari(again$seurat_clusters, ours$RNA_snn_res.0.8), 0.95)
  }
})

test_that("downstream Seurat functions work on the result, and the command is logged", {
  skip_slow("runs Seurat's FindMarkers, FindClusters and RunUMAP")
  ours <- cases$pbmc3$ours
  expect_identical(dim(Embeddings(ours, "umap")), c(1200L, 2L))
  expect_true(all(is.finite(Embeddings(ours, "umap"))))
  p <- DimPlot(ours, reduction = "umap")
  expect_s3_class(p, "ggplot")
  expect_s3_class(FeaturePlot(ours, VariableFeatures(ours)[1]), "ggplot")
  m <- FindMarkers(ours, ident.1 = "0", max.cells.per.ident = 200, logfc.threshold = 0.5, verbose = FALSE)
  expect_gt(nrow(m), 10)
  expect_true(all(m$p_val_adj[1:5] < 1e-5))
  low <- FindClusters(ours, resolution = 0.3, verbose = FALSE)
  expect_lt(nlevels(low$seurat_clusters), nlevels(ours$seurat_clusters))
  expect_s4_class(suppressWarnings(RunUMAP(ours, dims = 1:10, verbose = FALSE, n.epochs = 20)), "Seurat")
  # logged as Seurat logs its own commands (name.assay)
  expect_true("RunPreprocess.RNA" %in% names(ours@commands))
  expect_identical(ours@commands[["RunPreprocess.RNA"]]$nfeatures, 500)
  info <- Misc(ours, "pybridge_preprocess")
  expect_identical(info$device, "cpu")
  expect_identical(info$steps, c("normalize", "hvg", "scale", "pca", "neighbors", "umap", "clusters"))
  expect_true(all(c("normalize", "pca", "clusters") %in% names(info$seconds)))
})

test_that("steps left out are read from the object", {
  ours <- cases$pbmc3$ours
  again <- RunPreprocess(ours, steps = c("neighbors", "clusters"), resolution = 0.4, dims = 1:20, verbose = FALSE)
  expect_identical(Embeddings(again, "pca"), Embeddings(ours, "pca"))
  expect_true("RNA_snn_res.0.4" %in% names(again[[]]))
  expect_lte(nlevels(again$seurat_clusters), nlevels(ours$seurat_clusters))
  pca_only <- RunPreprocess(ours, steps = "pca", npcs = 10, verbose = FALSE)
  expect_gt(min(abs(diag(cor(Embeddings(pca_only, "pca"), Embeddings(ours, "pca")[, 1:10])))), 0.9999)
  # scale + pca from the data layer and VariableFeatures(); without any VariableFeatures, all features
  sp <- RunPreprocess(ours, steps = c("scale", "pca"), npcs = 10, verbose = FALSE)
  expect_lt(max(abs(layer_data(sp, "scale.data") - layer_data(ours, "scale.data"))), 1e-5)
  none <- ours[VariableFeatures(ours)[1:50], ]
  VariableFeatures(none) <- character(0)
  out <- reticulate::py_capture_output(none <- RunPreprocess(none, steps = "scale", verbose = TRUE))
  expect_identical(dim(layer_data(none, "scale.data")), c(50L, 1200L))
  expect_match(out, "using all genes")
  expect_match(out, "preprocess 1/1: scale done in")
})

test_that("nfeatures above the number of features takes them all, with a note; verbose = FALSE is quiet", {
  small <- cases$pbmc3$input[1:300, ]
  out <- reticulate::py_capture_output(
    res <- RunPreprocess(small, nfeatures = 2000, npcs = 10, steps = c("normalize", "hvg", "scale", "pca"))
  )
  expect_length(VariableFeatures(res), 300L)
  expect_identical(sum(res[["RNA"]][[]]$vst.variable), 300L)
  expect_identical(dim(Embeddings(res, "pca")), c(1200L, 10L))
  expect_match(out, "is more than the 300 genes there are: using all 300")
  expect_match(out, "preprocess 4/4: pca done in")
  quiet <- reticulate::py_capture_output(
    expect_silent(RunPreprocess(small, nfeatures = 2000, npcs = 10, steps = c("normalize", "hvg"), verbose = FALSE))
  )
  expect_identical(quiet, "")
})

test_that("verbose = FALSE silences Seurat's once-per-session UMAP notice (RunSCVI, MapQuerySCVI)", {
  ours <- cases$pbmc3$ours[, 1:200]
  old <- options(Seurat.warn.umap.uwot = TRUE)
  on.exit(options(old))
  expect_silent(pybridge:::.run_seurat_umap(ours, dims = 1:5, n.epochs = 10, verbose = FALSE))
  expect_true(getOption("Seurat.warn.umap.uwot"))  # still shown once by the next verbose call
  # what it silences: Seurat's own RunUMAP warns even with verbose = FALSE
  expect_warning(RunUMAP(ours, dims = 1:5, n.epochs = 10, verbose = FALSE), "default method for RunUMAP has changed")
})

test_that("bad arguments give clear errors in R's names, before any work", {
  ours <- cases$pbmc3$ours
  expect_error(RunPreprocess(ours, steps = "normalise"), "unknown step\\(s\\): normalise. Steps are: normalize")
  expect_error(RunPreprocess(ours, dims = c(1, 3, 5)), "dims must be 1:k")
  expect_error(RunPreprocess(ours, dims = 1:60, verbose = FALSE), "max\\(dims\\) \\(60\\) exceeds npcs \\(50\\)")
  expect_error(RunPreprocess(ours, nfeatures = 0, verbose = FALSE), "nfeatures must be at least 1")
  expect_error(RunPreprocess(ours, npcs = 5000, verbose = FALSE), "npcs=5000 must be between 1 and")
  expect_error(RunPreprocess(ours, assay = "ADT"), "Assays that exist: RNA")
  expect_error(RunPreprocess(cases$pbmc3$input, steps = "neighbors", verbose = FALSE), "'pca' reduction")
  expect_error(RunPreprocess(ours, steps = "umap", verbose = FALSE), "'umap' needs the neighbour graph")
  expect_error(RunPreprocess(ours, steps = "neighbors", dims = 1:60, verbose = FALSE),
               "max\\(dims\\) \\(60\\) exceeds the 50 PCs")
  expect_error(RunPreprocess(ours, device = "cuda", verbose = FALSE), "no CUDA device")
  err <- tryCatch(RunPreprocess(ours, device = "cuda", verbose = FALSE), error = identity)
  expect_false(grepl("RuntimeError|Traceback", conditionMessage(err)))
})
