# Seurat 4 (host tier: SeuratObject 4.1, v3 Assay) and Seurat 5 (the Seurat 5 tier in the trixie
# root, scripts/seurat5-test.sh: SeuratObject 5, Assay5) run the same test files. These helpers
# read both; tests that only make sense on one version skip on the other with a message, and
# `make test` runs both tiers, so nothing is skipped overall.

is_seurat5 <- function() utils::packageVersion("SeuratObject") >= "5.0.0"

skip_unless_seurat5 <- function() {
  if (!is_seurat5()) {
    testthat::skip(paste0("needs SeuratObject >= 5 (this is ", utils::packageVersion("SeuratObject"),
                          "): runs in the Seurat 5 tier (make test-seurat5)"))
  }
}

skip_if_seurat5 <- function(why = "tests the SeuratObject 4 path") {
  if (is_seurat5()) testthat::skip(paste0(why, ": runs in the host tier (Seurat 4)"))
}

# One layer of an assay: GetAssayData(slot = ) on SeuratObject 4, LayerData(layer = ) on 5
# (where GetAssayData's second argument is the assay).
# An absent layer of an Assay5 is NULL (a v3 assay gives an empty matrix, as GetAssayData does).
layer_data <- function(object, layer, assay = NULL) {
  if (!is_seurat5()) return(SeuratObject::GetAssayData(object, slot = layer, assay = assay))
  a <- object[[assay %||% SeuratObject::DefaultAssay(object)]]
  if (inherits(a, "StdAssay") && !layer %in% SeuratObject::Layers(a)) return(NULL)
  SeuratObject::LayerData(object, layer = layer, assay = assay)
}

# Feature-level meta.data of an assay (v3 meta.features; v5 a[[]]).
features_df <- function(object, assay = NULL) {
  a <- object[[assay %||% SeuratObject::DefaultAssay(object)]]
  if (inherits(a, "StdAssay")) a[[]] else a@meta.features
}
`%||%` <- function(a, b) if (is.null(a)) b else a

# A shared .rds object (SeuratObject 4.1 model) as a Seurat 5 user has it: UpdateSeuratObject,
# every assay an Assay5; with `split.by`, the default assay's layers split by that meta.data column.
as_seurat5 <- function(object, split.by = NULL) {
  object <- suppressMessages(suppressWarnings(SeuratObject::UpdateSeuratObject(object)))
  for (a in SeuratObject::Assays(object)) {
    if (!inherits(object[[a]], "StdAssay")) suppressWarnings(object[[a]] <- methods::as(object[[a]], "Assay5"))
  }
  if (!is.null(split.by)) {
    da <- SeuratObject::DefaultAssay(object)
    md <- object@meta.data
    object[[da]] <- suppressMessages(split(object[[da]], f = object[[]][[split.by]]))
    object@meta.data <- md
  }
  object
}
