# Seurat 5 objects (layers.R): Assay5 layers, split layers joined and split again, on-disk
# layers, image coordinates, the assay class a new assay gets. The shared .rds objects are
# SeuratObject 4.1 models; as_seurat5() (helper-seurat5.R) updates them as a Seurat 5 user has
# them (UpdateSeuratObject, Assay5, split()).
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

py_keys <- function(x) unlist(reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(x$keys())))
uns_pybridge <- function(ad, key) reticulate::py_to_r(reticulate::py_get_item(ad$uns, "pybridge")$get(key))
quiet_notes <- function(expr) {  # value + the conversion notes printed
  msgs <- character(0)
  value <- withCallingHandlers(expr, message = function(m) {
    msgs <<- c(msgs, conditionMessage(m))
    invokeRestart("muffleMessage")
  })
  list(value = value, notes = paste(msgs, collapse = "\n"))
}

test_that(".create_assay builds the assay class of this SeuratObject", {
  m <- Matrix::rsparsematrix(5, 4, 0.5, rand.x = function(k) as.numeric(sample(1:9, k, TRUE)))
  dimnames(m) <- list(paste0("g", 1:5), paste0("c", 1:4))
  a <- pybridge:::.create_assay(counts = m, key = "test_")
  d <- pybridge:::.create_assay(data = log1p(m))
  if (is_seurat5()) {
    expect_s4_class(a, "Assay5")
    expect_s4_class(d, "Assay5")
    expect_identical(Layers(d), "data")
    old <- options(Seurat.object.assay.version = "v3")
    on.exit(options(old))
    expect_s4_class(pybridge:::.create_assay(counts = m), "Assay")  # Seurat's own switch
    options(old)
  } else {
    expect_true(class(a) == "Assay")
  }
  expect_identical(Key(a), "test_")
  a2 <- pybridge:::.assay_set_layer(a, "data", log1p(m))
  got <- if (is_seurat5()) LayerData(a2, layer = "data") else GetAssayData(a2, slot = "data")
  expect_identical(unname(as.matrix(got)), unname(as.matrix(log1p(m))))
})

test_that("a v5 object with joined layers round-trips as an Assay5, every value kept", {
  skip_unless_seurat5()
  k5 <- as_seurat5(readRDS(shared_data("kang_ifnb_processed.rds")))
  expect_s4_class(k5[["RNA"]], "Assay5")
  before <- k5
  ad <- as.AnnData(k5, verbose = FALSE)
  expect_identical(k5, before)
  X <- ad$X
  counts <- LayerData(k5, layer = "counts")
  expect_equal(reticulate::py_to_r(X$indptr$tolist()), counts@p)  # the dgCMatrix arrays themselves
  expect_false(reticulate::py_to_r(X$data$flags$writeable))      # zero copy
  expect_identical(py_keys(ad$layers), c("data", "scale.data"))
  expect_identical(uns_pybridge(ad, "assay_class"), "Assay5")
  expect_null(uns_pybridge(ad, "split"))
  back <- as.Seurat(ad, verbose = FALSE)
  expect_s4_class(back[["RNA"]], "Assay5")
  expect_setequal(Layers(back[["RNA"]]), Layers(k5[["RNA"]]))
  for (l in Layers(k5[["RNA"]])) expect_identical(LayerData(back, layer = l), LayerData(k5, layer = l), label = l)
  expect_identical(back@meta.data, k5@meta.data)
  expect_identical(features_df(back), features_df(k5))
  expect_identical(VariableFeatures(back), VariableFeatures(k5))
  for (r in c("pca", "umap")) {
    expect_identical(c(Embeddings(back, r)), c(Embeddings(k5, r)))  # (uwot's scaled:center attribute is not carried)
    expect_identical(dimnames(Embeddings(back, r)), dimnames(Embeddings(k5, r)))
  }
  expect_identical(Loadings(back, "pca"), Loadings(k5, "pca"))
  for (g in c("RNA_nn", "RNA_snn")) expect_identical(as(back[[g]], "dgCMatrix"), as(k5[[g]], "dgCMatrix"))
  expect_identical(Idents(back), Idents(k5))
  # a v3 Assay (an old object read under SeuratObject 5) comes back as a v3 Assay
  k3 <- readRDS(shared_data("kang_ifnb_processed.rds"))
  b3 <- as.Seurat(as.AnnData(k3, verbose = FALSE), verbose = FALSE)
  expect_true(class(b3[["RNA"]]) == "Assay")
  expect_identical(b3[["RNA"]]@meta.features, k3[["RNA"]]@meta.features)
})

test_that("split layers are joined in the object's cell order and split again on the way back", {
  skip_unless_seurat5()
  pbmc <- readRDS(shared_data("pbmc_3tech.rds"))
  ps <- as_seurat5(pbmc, split.by = "donor")
  expect_setequal(Layers(ps[["RNA"]]), c("counts.3pv1", "counts.3pv2", "counts.5p", "data.3pv1", "data.3pv2", "data.5p"))
  expect_false(is.unsorted(match(colnames(ps), colnames(pbmc))))
  r <- quiet_notes(as.AnnData(ps, verbose = TRUE))
  ad <- r$value
  expect_match(r$notes, "split layers counts.3pv1, counts.3pv2, counts.5p joined .* obs\\['split.layer'\\]")
  # X is the joined counts, cells in the object's order: bit-equal to the unsplit object's and to JoinLayers()'s
  obs_names <- unlist(reticulate::py_to_r(ad$obs_names$tolist()))
  expect_identical(obs_names, colnames(ps))
  back_counts <- Matrix::t(pybridge:::.py_matrix(ad$X))
  orig <- layer_data(pbmc, "counts")
  expect_identical(unname(back_counts), unname(orig))
  expect_identical(unname(back_counts), unname(LayerData(JoinLayers(ps[["RNA"]]), layer = "counts")))
  split_col <- unlist(reticulate::py_to_r(ad$obs[["split.layer"]]$astype("str")$tolist()))
  expect_identical(split_col, as.character(pbmc$donor))
  expect_identical(unlist(reticulate::py_to_r(ad$obs[["split.layer"]]$cat$categories$tolist())),
                   c("3pv1", "3pv2", "5p"))
  sp <- uns_pybridge(ad, "split")
  expect_identical(sp$key, "split.layer")
  expect_true(sp$added)
  expect_setequal(unlist(sp$layers), c("counts", "data"))
  # back: the same layers, bit-equal, the split column gone, meta.data identical
  back <- as.Seurat(ad, verbose = FALSE)
  expect_s4_class(back[["RNA"]], "Assay5")
  expect_setequal(Layers(back[["RNA"]]), Layers(ps[["RNA"]]))
  for (l in Layers(ps[["RNA"]])) expect_identical(LayerData(back, layer = l), LayerData(ps, layer = l), label = l)
  expect_identical(back@meta.data, ps@meta.data)
  expect_identical(features_df(back), features_df(ps))
  # kept joined on request (the column stays), or split by another column
  joined <- as.Seurat(ad, split.by = FALSE, verbose = FALSE)
  expect_identical(Layers(joined[["RNA"]]), c("counts", "data"))
  expect_identical(unname(LayerData(joined, layer = "counts")), unname(orig))
  expect_identical(as.character(joined$split.layer), as.character(pbmc$donor))
  by_type <- as.Seurat(ad, split.by = "cell_type_broad", verbose = FALSE)
  expect_setequal(Layers(by_type[["RNA"]], search = "counts"), paste0("counts.", unique(pbmc$cell_type_broad)))
  expect_error(as.Seurat(ad, split.by = "nope", verbose = FALSE), "'nope' is not a meta.data column")
  expect_error(as.Seurat(ad, splitby = "donor", verbose = FALSE), "unused argument splitby")
})

test_that("a processed split object (PCA, graphs, clusters) keeps its reductions and graphs", {
  skip_unless_seurat5()
  ks <- as_seurat5(readRDS(shared_data("kang_ifnb_processed.rds")), split.by = "stim")
  ad <- as.AnnData(ks, verbose = FALSE)
  expect_identical(py_keys(ad$obsm), c("X_pca", "X_umap"))
  expect_identical(py_keys(ad$obsp), c("RNA_nn", "RNA_snn"))
  back <- as.Seurat(ad, verbose = FALSE)
  for (l in Layers(ks[["RNA"]])) expect_identical(LayerData(back, layer = l), LayerData(ks, layer = l), label = l)
  expect_identical(back@meta.data, ks@meta.data)
  for (r in c("pca", "umap")) {
    expect_identical(c(Embeddings(back, r)), c(Embeddings(ks, r)))
    expect_identical(dimnames(Embeddings(back, r)), dimnames(Embeddings(ks, r)))
  }
  for (g in c("RNA_nn", "RNA_snn")) expect_identical(as(back[[g]], "dgCMatrix"), as(ks[[g]], "dgCMatrix"))
  expect_identical(VariableFeatures(back), VariableFeatures(ks))
  # a meta.data column already named like the split key: reused when equal, else a clear error
  ks$split.layer <- ks$stim
  ad2 <- as.AnnData(ks, verbose = FALSE)
  expect_false(uns_pybridge(ad2, "split")$added)
  expect_identical(as.Seurat(ad2, verbose = FALSE)@meta.data, ks@meta.data)
  ks$split.layer <- "x"
  expect_error(as.AnnData(ks, verbose = FALSE), "already has a column 'split.layer' .* pass split.key")
  expect_s3_class(as.AnnData(ks, split.key = "batch.layer", verbose = FALSE)$obs, "python.builtin.object")
})

test_that("layers with different features are joined over their union, with a note", {
  skip_unless_seurat5()
  ps <- as_seurat5(readRDS(shared_data("pbmc_3tech.rds")), split.by = "donor")
  drop <- rownames(ps)[1:7]
  m <- LayerData(ps, layer = "counts.5p")
  suppressWarnings(LayerData(ps[["RNA"]], layer = "counts.5p") <- m[!rownames(m) %in% drop, ])
  expect_length(Features(ps[["RNA"]], layer = "counts.5p"), nrow(ps) - 7L)
  r <- quiet_notes(as.AnnData(ps, verbose = TRUE))
  expect_match(r$notes, "counts.3pv1, counts.3pv2, counts.5p have different features \\(1767, 1767, 1760\\): joined over their union \\(1767 features")
  X <- Matrix::t(pybridge:::.py_matrix(r$value$X))
  dimnames(X) <- list(rownames(ps), colnames(ps))
  in5p <- ps$donor == "5p"
  expect_equal(sum(X[drop, in5p]), 0)  # absent from that layer: 0
  expect_identical(unname(X[drop, !in5p]), unname(layer_data(readRDS(shared_data("pbmc_3tech.rds")), "counts")[drop, !in5p]))
  expect_identical(unname(X[!rownames(X) %in% drop, in5p]), unname(m[!rownames(m) %in% drop, ]))
})

test_that("an object without counts (only data) is a clear error naming the layers and the fix", {
  skip_unless_seurat5()
  ks <- as_seurat5(readRDS(shared_data("kang_ifnb_processed.rds")), split.by = "stim")
  ks[["RNA"]]$counts.CTRL <- NULL
  ks[["RNA"]]$counts.STIM <- NULL
  before <- ks
  msg <- "layer 'counts' of assay 'RNA' is empty or does not exist. Layers that exist: data.CTRL, data.STIM, scale.data. Pass layer = \"data\""
  expect_error(as.AnnData(ks, verbose = FALSE), msg, fixed = TRUE)
  expect_error(WriteH5AD(ks, tempfile(fileext = ".h5ad"), verbose = FALSE), msg, fixed = TRUE)
  expect_error(RunSCVI(ks, batch = "stim", max.epochs = 1, verbose = FALSE), "jobs that model counts need them")
  expect_identical(ks, before)
  ad <- as.AnnData(ks, layer = "data", verbose = FALSE)  # the fix the message names
  expect_equal(reticulate::py_to_r(ad$X$sum()), sum(LayerData(JoinLayers(ks[["RNA"]], layers = "data"), layer = "data")))
  expect_error(as.AnnData(ks, layer = c("a", "b")), "`layer` must be one layer name")
})

test_that("on-disk layers (DelayedArray) are an error naming the fix, never loaded silently", {
  skip_unless_seurat5()
  skip_if_not_installed("DelayedArray")
  ps <- as_seurat5(readRDS(shared_data("pbmc_3tech.rds")))
  m <- LayerData(ps, layer = "counts")
  LayerData(ps[["RNA"]], layer = "counts") <- DelayedArray::DelayedArray(m)
  expect_error(as.AnnData(ps, verbose = FALSE),
               paste0("layer 'counts' of assay 'RNA' is a DelayedArray .*\n  LayerData\\(object, assay = \"RNA\", ",
                      "layer = \"counts\"\\) <- as\\(LayerData\\(object, assay = \"RNA\", layer = \"counts\"\\), \"dgCMatrix\"\\)"))
  expect_error(RunPreprocess(ps, verbose = FALSE), "DelayedArray")
  object <- ps
  LayerData(object, assay = "RNA", layer = "counts") <- as(LayerData(object, assay = "RNA", layer = "counts"), "dgCMatrix")
  ps <- object  # the fix, as printed
  expect_equal(reticulate::py_to_r(as.AnnData(ps, verbose = FALSE)$X$sum()), sum(m))
})

test_that("image coordinates (VisiumV2, FOV) go to obsm['spatial'] and back as the 'spatial' reduction", {
  skip_unless_seurat5()
  vis <- as_seurat5(readRDS(shared_data("lymphnode_visium.rds")))
  cells <- colnames(vis)
  xy <- data.frame(x = as.numeric(vis$x), y = as.numeric(vis$y), row.names = cells)
  cent <- SeuratObject::CreateCentroids(xy)
  v2 <- methods::new("VisiumV2", boundaries = list(centroids = cent), molecules = list(), assay = "Spatial",
                     key = "slice1_", image = array(0, c(4, 4, 3)),
                     scale.factors = Seurat::scalefactors(spot = 1, fiducial = 1, hires = 1, lowres = 1))
  fov <- SeuratObject::CreateFOV(SeuratObject::CreateCentroids(xy[rev(cells), ]), type = "centroids",
                                 assay = "Spatial", key = "fov_")
  for (img in list(list("slice1", v2), list("fov", fov))) {
    obj <- vis
    suppressWarnings(obj[[img[[1]]]] <- img[[2]])  # (the FOV's cells are in reverse order on purpose)
    r <- quiet_notes(as.AnnData(obj, verbose = TRUE))
    expect_match(r$notes, sprintf("images \\(%s\\) not carried; spot coordinates are in obsm\\['X_spatial'\\]", img[[1]]))
    sp <- reticulate::py_to_r(reticulate::py_get_item(r$value$obsm, "X_spatial"))
    expect_identical(unname(sp), unname(as.matrix(xy)), label = img[[1]])
    back <- as.Seurat(r$value, verbose = FALSE)
    expect_identical(unname(Embeddings(back, "spatial")), unname(as.matrix(xy)))
  }
})

test_that("WriteH5AD / ReadH5AD carry a split v5 object: the same layers, meta.data and reductions", {
  skip_unless_seurat5()
  ks <- as_seurat5(readRDS(shared_data("kang_ifnb_processed.rds")), split.by = "stim")
  f <- tempfile(fileext = ".h5ad")
  on.exit(unlink(f))
  WriteH5AD(ks, f, verbose = FALSE)
  a <- reticulate::import("anndata", convert = FALSE)$read_h5ad(f)  # what scanpy users get
  expect_identical(unlist(reticulate::py_to_r(a$obs[["split.layer"]]$astype("str")$tolist())), as.character(ks$stim))
  expect_equal(reticulate::py_to_r(a$X$sum()), sum(LayerData(ks, layer = "counts.CTRL")) + sum(LayerData(ks, layer = "counts.STIM")))
  expect_identical(uns_pybridge(a, "assay_class"), "Assay5")
  back <- ReadH5AD(f, verbose = FALSE)
  expect_s4_class(back[["RNA"]], "Assay5")
  expect_setequal(Layers(back[["RNA"]]), Layers(ks[["RNA"]]))
  for (l in Layers(ks[["RNA"]])) expect_identical(LayerData(back, layer = l), LayerData(ks, layer = l), label = l)
  expect_identical(back@meta.data, ks@meta.data)
  expect_identical(features_df(back), features_df(ks))
  for (r in c("pca", "umap")) expect_identical(c(Embeddings(back, r)), c(Embeddings(ks, r)))
  # the same object as the in-memory path gives
  mem <- as.Seurat(as.AnnData(ks, verbose = FALSE), verbose = FALSE)
  for (l in Layers(ks[["RNA"]])) expect_identical(LayerData(back, layer = l), LayerData(mem, layer = l), label = l)
})
