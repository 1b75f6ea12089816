# Deconvolve() / SpatialAbundancePlot() end to end on real lymph-node Visium + reference.

vis <- readRDS(shared_data("lymphnode_visium.rds"))
ref <- readRDS(shared_data("lymphnode_reference.rds"))
types <- sort(unique(as.character(ref$cell_type)))

# The 10 shared genes most specific to B cells in the reference (the classic markers MS4A1,
# CD79A, CR2 are not in this Visium panel); a spot's share of counts on them.
b_marker_share <- function(vis, ref, n = 10) {
  shared <- intersect(rownames(ref), rownames(vis))
  cnt <- layer_data(ref, "counts")[shared, ]
  norm <- as.matrix(cnt) %*% diag(1e4 / Matrix::colSums(cnt))
  lab <- as.character(ref$cell_type)
  means <- sapply(types, function(t) rowMeans(norm[, lab == t, drop = FALSE]))
  spec <- (means[, "B"] + 0.1) / (apply(means[, colnames(means) != "B"], 1, max) + 0.1)
  markers <- names(sort(spec, decreasing = TRUE))[seq_len(n)]
  vc <- layer_data(vis, "counts")
  Matrix::colSums(vc[markers, ]) / Matrix::colSums(vc)
}

b_contrast <- function(abundance, share) {
  hi <- share >= stats::quantile(share, 0.8)
  lo <- share <= stats::quantile(share, 0.2)
  mean(abundance[hi]) / mean(abundance[lo])
}

test_that("Deconvolve(method = 'cell2location') runs end to end and stores results where Seurat users look", {
  skip_slow()
  # 400 of the 1,000 spots and 1,000 epochs at lr 0.02 keep this to about a minute of CPU
  set.seed(1)
  vis <- vis[, sort(sample(colnames(vis), 400))]
  share <- b_marker_share(vis, ref)
  # reference.genes = "shared": the reference is fitted on the ~500 genes the panel measures
  # (the default, all ~8,900 filtered genes, is ~10x the reference cost)
  out <- Deconvolve(vis, ref, reference.labels = "cell_type", max.epochs = 1000, reference.max.epochs = 250,
                    device = "cpu", verbose = FALSE, lr = 0.02, num.samples = 100, reference.genes = "shared")
  # meta.data: one column per cell type, the q05 quantile, clearly prefixed
  cols <- paste0("c2l.q05.", types)
  expect_true(all(cols %in% colnames(out[[]])))
  q05 <- as.matrix(out[[]][, cols])
  expect_true(all(q05 >= 0))
  # the assay: cell types x spots, posterior means in data; q05/q95/proportions in its misc
  a <- out[["cell2location"]]
  mean <- as.matrix(layer_data(out, "data", assay = "cell2location"))
  expect_equal(dim(mean), c(length(types), ncol(vis)))
  expect_equal(rownames(mean), gsub("_", "-", types))
  expect_equal(colnames(mean), colnames(vis))
  expect_equal(unname(t(SeuratObject::Misc(a, "q05"))), unname(q05[colnames(vis), ]))
  expect_true(all(SeuratObject::Misc(a, "q05") <= mean + 1e-6) && all(mean <= SeuratObject::Misc(a, "q95") + 1e-6))
  expect_equal(unname(colSums(SeuratObject::Misc(a, "proportions"))), rep(1, ncol(vis)), tolerance = 1e-6)
  # per-spot totals in a sensible range of n.cells.per.location (30), and not all alike
  totals <- colSums(mean)
  expect_true(all(totals > 0 & totals < 90))
  expect_true(mean(totals) > 10 && mean(totals) < 60)
  expect_gt(stats::sd(totals), 2)
  # spots rich in B-specific transcripts hold more B cells than spots poor in them
  expect_gt(b_contrast(mean["B", ], share), 1.3)
  expect_gt(b_contrast(out$c2l.q05.B, share), 1.3)
  # Misc and command log
  info <- SeuratObject::Misc(out, "cell2location")
  expect_equal(info$cell.types, types)
  expect_equal(info$params$max_epochs, 1000)
  expect_equal(length(info$history$elbo_train), 1000)
  expect_gt(length(info$genes), 400)
  expect_equal(dim(info$signatures), c(length(info$genes), length(types)))
  expect_true("Deconvolve.Spatial" %in% names(out@commands))
  # the spatial counts are unchanged
  expect_identical(layer_data(out, "counts", assay = "Spatial"),
                   layer_data(vis, "counts", assay = "Spatial"))

  # plot on metadata x/y: one panel per cell type, coordinates from meta.data
  p <- SpatialAbundancePlot(out, c("B", "T-CD4"), quantity = "q05")
  expect_s3_class(p, "ggplot")
  d <- ggplot2::ggplot_build(p)$data[[1]]
  expect_equal(nrow(d), 2 * ncol(vis))
  pd <- p$data
  expect_equal(pd$x[pd$cell.type == "B"], unname(vis$x))
  expect_equal(pd$value[pd$cell.type == "T_CD4"], unname(out$c2l.q05.T_CD4))
  expect_length(SpatialAbundancePlot(out, c("B", "NK"), quantity = "proportions", combine = FALSE), 2)
})

test_that("Deconvolve(method = 'nnls') finds the B cells and reuses signatures", {
  share <- b_marker_share(vis, ref)
  out <- Deconvolve(vis, ref, "cell_type", method = "nnls", verbose = FALSE)
  cols <- paste0("nnls.mean.", types)
  expect_true(all(cols %in% colnames(out[[]])))
  m <- as.matrix(out[[]][, cols])
  expect_true(all(m >= 0))
  expect_equal(mean(rowSums(m)), 30, tolerance = 1e-6)
  expect_gt(b_contrast(out$nnls.mean.B, share), 1.5)
  expect_true("nnls" %in% Seurat::Assays(out))
  expect_null(SeuratObject::Misc(out[["nnls"]], "q05"))
  # signatures from Misc map another object without refitting the reference
  again <- Deconvolve(vis, SeuratObject::Misc(out, "nnls")$signatures, method = "nnls", verbose = FALSE)
  expect_equal(again$nnls.mean.B, out$nnls.mean.B, tolerance = 1e-5)
  expect_error(SpatialAbundancePlot(out, "B", quantity = "q05", key = "nnls"), "not stored")
})

test_that("bad input gives clear errors and leaves the object untouched", {
  before <- vis
  expect_error(Deconvolve(vis, ref, "celltype", method = "nnls", verbose = FALSE),
               "'celltype' is not a meta.data column.*cell_type")
  expect_error(Deconvolve(vis, ref, method = "nnls", verbose = FALSE), "reference.labels is required")
  bad <- vis
  rownames_new <- paste0("ENSG", seq_len(nrow(vis)))
  cnt <- layer_data(vis, "counts")
  rownames(cnt) <- rownames_new
  bad <- Seurat::CreateSeuratObject(cnt, assay = "Spatial")
  expect_error(Deconvolve(bad, ref, "cell_type", method = "nnls", verbose = FALSE), "share only 0 genes")
  lognorm <- Seurat::NormalizeData(vis, verbose = FALSE)
  lognorm <- Seurat::SetAssayData(lognorm, "counts", new.data = layer_data(lognorm, "data"))
  expect_error(Deconvolve(lognorm, ref, "cell_type", method = "nnls", verbose = FALSE), "non-integer")
  expect_error(Deconvolve(vis, 42, method = "nnls"), "reference must be a Seurat object")
  # epochs <= 0 are errors (in R's names) before the reference is fitted
  expect_error(Deconvolve(vis, ref, "cell_type", max.epochs = 0, verbose = FALSE), "max.epochs must be at least 1, got 0")
  expect_error(Deconvolve(vis, ref, "cell_type", max.epochs = -1, verbose = FALSE), "max.epochs must be at least 1")
  expect_error(Deconvolve(vis, ref, "cell_type", reference.max.epochs = 0, verbose = FALSE),
               "reference.max.epochs must be at least 1")
  expect_error(Deconvolve(vis, ref, "cell_type", num.samples = 0, verbose = FALSE), "num.samples must be at least 1")
  expect_identical(vis, before)
  expect_error(SpatialAbundancePlot(vis, "B"), "no assay 'cell2location'")
})

test_that("SpatialAbundancePlot takes coordinates from an image or a 'spatial' reduction", {
  out <- Deconvolve(vis, ref, "cell_type", method = "nnls", verbose = FALSE)
  # no x/y in meta.data: a "spatial" reduction
  noxy <- out
  noxy$x <- NULL
  noxy$y <- NULL
  expect_error(SpatialAbundancePlot(noxy, "B", quantity = "mean", key = "nnls"), "no spot coordinates")
  emb <- cbind(sxy_1 = vis$x * 2, sxy_2 = vis$y)
  rownames(emb) <- colnames(vis)
  noxy[["spatial"]] <- Seurat::CreateDimReducObject(embeddings = emb, key = "sxy_", assay = "Spatial")
  p <- SpatialAbundancePlot(noxy, "B", quantity = "mean", key = "nnls")
  expect_equal(p$data$x, unname(vis$x * 2))
  # an image (VisiumV1): its tissue coordinates win, rows flipped to point up
  coords <- data.frame(tissue = 1L, row = 1L, col = 1L, imagerow = vis$y, imagecol = vis$x,
                       row.names = colnames(vis))
  img <- new("VisiumV1", image = array(0, dim = c(2, 2, 3)),
             scale.factors = Seurat::scalefactors(spot = 1, fiducial = 1, hires = 1, lowres = 0.5),
             coordinates = coords, spot.radius = 0.01, assay = "Spatial", key = "slice1_")
  out[["slice1"]] <- img
  p <- SpatialAbundancePlot(out, "B")  # the only deconvolution assay (nnls) and its mean
  expect_equal(p$data$value, unname(out$nnls.mean.B))
  expect_equal(p$data$x, unname(vis$x * 0.5))
  expect_equal(p$data$y, -unname(vis$y * 0.5))
})

test_that("cell types with spaces get valid, stable meta.data names, listed truthfully in Misc", {
  r2 <- ref
  lab <- as.character(r2$cell_type)
  lab[lab == "T_CD4"] <- "CD4 T"
  r2$cell_type <- lab
  expect_no_warning(out <- Deconvolve(vis, r2, "cell_type", method = "nnls", verbose = FALSE))
  info <- SeuratObject::Misc(out, "nnls")
  cols <- info$meta.data.columns
  expect_true("nnls.mean.CD4.T" %in% colnames(out[[]]))
  expect_identical(unname(cols), make.names(unname(cols)))  # valid as they are: AddMetaData keeps them
  expect_true(all(cols %in% colnames(out[[]])))  # Misc lists the columns that exist
  expect_identical(names(cols), info$cell.types)  # ... named by the cell type they hold
  expect_identical(cols[["CD4 T"]], "nnls.mean.CD4.T")
  expect_equal(out$nnls.mean.CD4.T, unname(t(as.matrix(layer_data(out, "data", assay = "nnls")))[, "CD4 T"]),
               ignore_attr = TRUE)
  # stable: the same call gives the same names
  again <- Deconvolve(vis, r2, "cell_type", method = "nnls", verbose = FALSE)
  expect_identical(SeuratObject::Misc(again, "nnls")$meta.data.columns, cols)
})
