# Example datasets: the h5ad files embedded in the Python package (pybridge/datasets), read with
# ReadH5AD's mapping.

#' Load an example dataset embedded in pybridge
#'
#' Returns a Seurat object for one of the real datasets shipped inside the pybridge Python
#' package (no download). The file's path comes from the Python package
#' (`pybridge.datasets.path()`); the file is read with the mapping of [ReadH5AD()].
#'
#' * `"kang_ifnb"`: Kang et al. 2018 (Nat Biotechnol 36:89) IFN-beta stimulated PBMCs,
#'   2,000 cells x 13,215 genes; meta.data `stim`, `seurat_annotations`.
#' * `"pbmc_3tech"`: 10x PBMCs from three chemistries (Symphony, Kang et al. 2021), 1,200 x 1,767;
#'   `donor` (batch), `cell_type`, `cell_type_broad`.
#' * `"lymphnode_reference"`: lymph-node scRNA-seq reference (Kleshchevnikov et al. 2022),
#'   330 x 10,237; `cell_type`.
#' * `"lymphnode_visium"`: human lymph node Visium, 1,000 spots x 2,000 genes in assay
#'   `Spatial`; spot coordinates `x`, `y` in meta.data and as the reduction `spatial`.
#' * `"papalexi_eccite"`: Papalexi et al. 2021 (Nat Genet 53:322) ECCITE-seq CRISPR screen,
#'   20,729 cells x 299 genes; guide counts as assay `GDO` (110 guides, target genes in its
#'   meta.features `target`), `top_grna`, `top_grna_target` in meta.data.
#'
#' @param name Dataset name (see above).
#' @param verbose Print conversion notes.
#' @return A Seurat object with raw integer counts in the `counts` layer.
#' @seealso [ReadH5AD()]; provenance in the Python package's `pybridge/datasets/README.md`.
#' @export
LoadExampleData <- function(name, verbose = FALSE) {
  ds <- .engine("datasets")
  avail <- as.character(unlist(ds$DATASETS))
  if (!is.character(name) || length(name) != 1L || is.na(name) || !name %in% avail) {
    stop("no example dataset '", paste(format(name), collapse = " "), "'. Available: ",
         paste(avail, collapse = ", "), ".", call. = FALSE)
  }
  file <- reticulate::import_builtins(convert = TRUE)$str(ds$path(name))
  parts <- .h5ad_to_parts(file)
  assay <- NULL
  gdo <- NULL
  if (name == "lymphnode_visium") {
    assay <- "Spatial"
    # the key 'spatial_' would clash with the assay's key
    if (!is.null(parts$reductions$spatial)) parts$reductions$spatial$key <- "SPATIAL_"
  }
  if (name == "papalexi_eccite" && !is.null(parts$reductions$grna_counts)) {
    # guide counts (obsm 'grna_counts', guide names in uns) -> assay GDO, as in the Seurat object
    emb <- parts$reductions$grna_counts$embeddings
    parts$reductions$grna_counts <- NULL
    guides <- as.character(unlist(parts$misc$grna_names))
    if (length(guides) != ncol(emb)) guides <- paste0("guide", seq_len(ncol(emb)))
    m <- methods::as(methods::as(t(emb), "CsparseMatrix"), "generalMatrix")
    parts$assays_from_obsm$GDO <- list(sparse = list(x = m@x, i = m@i, p = m@p, dim = dim(m)),
                                       features = as.list(guides))
    gdo <- list(counts = m, targets = as.character(unlist(parts$misc$grna_targets)))
  }
  object <- .seurat_from_parts(parts, assay = assay, verbose = verbose)
  if (!is.null(gdo)) {
    object$nCount_GDO <- Matrix::colSums(gdo$counts)
    object$nFeature_GDO <- as.integer(Matrix::colSums(gdo$counts > 0))
    if (length(gdo$targets) == nrow(object[["GDO"]])) {
      object[["GDO"]] <- SeuratObject::AddMetaData(object[["GDO"]], col.name = "target",
                                                   metadata = stats::setNames(gdo$targets, rownames(object[["GDO"]])))
    }
  }
  object
}
