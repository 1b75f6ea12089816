#' pybridge: GPU single-cell models for Seurat through a lossless Seurat-AnnData bridge
#'
#' The R layer is thin: it takes a Seurat object apart into typed parts, calls the
#' pybridge Python engine through reticulate, and stores the results where Seurat users
#' expect them (metadata columns, reductions, assays, Misc, the command log). Only Seurat
#' v4 objects (SeuratObject 4.1, Seurat 4.3) are tested; the v5 (Assay5) path follows the
#' documented API and is untested.
#'
#' @keywords internal
#' @useDynLib pybridge, .registration = TRUE
#' @importFrom methods new slot slot<- is as
#' @importFrom Matrix sparseMatrix
"_PACKAGE"
