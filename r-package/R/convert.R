# Seurat <-> AnnData in memory. The mapping table is in pybridge/io/_bridge.py.

.is_v5_assay <- function(a) inherits(a, "Assay5")

# One layer of an assay, v4 (slots) or v5 (layers; untested here: SeuratObject 5 is not installable).
.get_layer <- function(object, assay, layer) {
  a <- object[[assay]]
  if (.is_v5_assay(a)) {
    have <- SeuratObject::Layers(a)
    if (!layer %in% have) {
      if (any(startsWith(have, paste0(layer, ".")))) {
        stop("assay '", assay, "' has split layers (", paste(have, collapse = ", "),
             "); run JoinLayers() first.", call. = FALSE)
      }
      return(NULL)
    }
    return(SeuratObject::LayerData(a, layer = layer))
  }
  if (!layer %in% c("counts", "data", "scale.data")) return(NULL)
  m <- methods::slot(a, layer)
  if (length(m) == 0L || any(dim(m) == 0L)) return(NULL)
  m
}

.layer_names <- function(object, assay) {
  a <- object[[assay]]
  if (.is_v5_assay(a)) return(SeuratObject::Layers(a))
  c("counts", "data", "scale.data")[vapply(c("counts", "data", "scale.data"), function(l)
    !is.null(.get_layer(object, assay, l)), logical(1))]
}

.check_seurat <- function(object, assay = NULL, arg = "object") {
  if (!inherits(object, "Seurat")) {
    stop("`", arg, "` must be a Seurat object, not ", paste(class(object), collapse = "/"), ".", call. = FALSE)
  }
  assay <- assay %||% SeuratObject::DefaultAssay(object)
  if (!assay %in% SeuratObject::Assays(object)) {
    stop("assay '", assay, "' is not in the object. Assays that exist: ",
         paste(SeuratObject::Assays(object), collapse = ", "), ".", call. = FALSE)
  }
  if (anyDuplicated(colnames(object))) {
    d <- colnames(object)[anyDuplicated(colnames(object))]
    stop("cell names are duplicated (e.g. '", d, "'); make them unique first (RenameCells).", call. = FALSE)
  }
  assay
}

# Split a Seurat object into parts (used by as.AnnData and by Python's read_seurat via rpy2).
.seurat_to_parts <- function(object, assay = NULL, layer = "counts", reductions = TRUE, graphs = TRUE,
                             misc = TRUE, other.assays = TRUE, zero.copy = TRUE, other.layers = TRUE) {
  assay <- .check_seurat(object, assay)
  report <- character(0)
  have <- .layer_names(object, assay)
  if (!layer %in% have) {
    stop("layer '", layer, "' of assay '", assay, "' is empty or does not exist. Layers that exist: ",
         paste(have, collapse = ", "), ".", call. = FALSE)
  }
  cells <- colnames(object)
  X <- .get_layer(object, assay, layer)
  features <- rownames(X)
  layers <- list()
  sfeat <- NULL
  counts <- if (layer != "counts") .get_layer(object, assay, "counts") else X
  for (l in if (other.layers) setdiff(have, layer) else character(0)) {  # jobs needing only X skip the rest
    m <- .get_layer(object, assay, l)
    if (l == "data" && !is.null(counts) && identical(m, counts)) {
      report <- c(report, "data layer is identical to counts (NormalizeData not run); not duplicated")
      next
    }
    if (l == "scale.data") sfeat <- rownames(m)
    if (!identical(rownames(m), features) && l != "scale.data") {
      m <- m[features, , drop = FALSE]
    }
    layers[[l]] <- .matrix_parts(m, zero.copy)
  }
  a <- object[[assay]]
  mf <- if (.is_v5_assay(a)) a[[]] else a@meta.features
  var <- .df_parts(mf[features, , drop = FALSE])
  obs <- .df_parts(object@meta.data)
  report <- c(report, obs$notes, var$notes)
  obs$notes <- NULL
  var$notes <- NULL
  orig <- a@misc[["pybridge_original_features"]]
  if (!is.null(orig) && length(orig) != length(features)) orig <- NULL

  reds <- list()
  if (reductions) {
    for (r in SeuratObject::Reductions(object)) {
      dr <- object[[r]]
      emb <- SeuratObject::Embeddings(dr)
      if (!identical(rownames(emb), cells)) emb <- emb[cells, , drop = FALSE]
      item <- list(embeddings = emb, key = SeuratObject::Key(dr), assay = SeuratObject::DefaultAssay(dr),
                   global = SeuratObject::IsGlobal(dr), stdev = .np(SeuratObject::Stdev(dr)))
      ld <- SeuratObject::Loadings(dr)
      if (length(ld) && all(dim(ld) > 0)) {
        item$loadings <- ld
        item$loadings_features <- .np(rownames(ld))
        if (SeuratObject::DefaultAssay(dr) != assay) {
          report <- c(report, sprintf("reduction '%s': loadings belong to assay '%s'; matched by feature name", r,
                                      SeuratObject::DefaultAssay(dr)))
        }
      }
      if (length(SeuratObject::Loadings(dr, projected = TRUE))) {
        report <- c(report, sprintf("reduction '%s': projected loadings not carried", r))
      }
      reds[[r]] <- item
    }
  }
  grs <- list()
  if (graphs) {
    for (g in SeuratObject::Graphs(object)) grs[[g]] <- .sparse_parts(object[[g]], zero.copy)
  }
  if (length(object@neighbors)) {
    report <- c(report, sprintf("Neighbor objects (%s) not carried; graphs are", paste(names(object@neighbors), collapse = ", ")))
  }
  others <- list()
  for (o in setdiff(SeuratObject::Assays(object), assay)) {
    if (!other.assays) {
      report <- c(report, sprintf("assay '%s' not carried (other.assays = FALSE)", o))
      next
    }
    m <- .get_layer(object, o, "counts") %||% .get_layer(object, o, "data")
    others[[o]] <- list(X = .matrix_parts(m, FALSE), features = .np(rownames(m)))
    report <- c(report, sprintf("assay '%s': counts carried in obsm['%s']; its other layers only with as.AnnData(assay = '%s')", o, o, o))
  }
  m <- list()
  if (misc) {
    mm <- object@misc
    mm[["pybridge.report"]] <- NULL
    r <- .misc_to_py(mm, "misc", report)
    m <- r$value
    report <- r$report
  }
  if (length(object@commands)) {
    report <- c(report, sprintf("command log (%d commands) not carried", length(object@commands)))
  }
  if (length(object@images)) {
    report <- c(report, sprintf("images (%s) not carried; spot coordinates are in obsm['spatial']",
                                paste(names(object@images), collapse = ", ")))
    coords <- tryCatch(SeuratObject::GetTissueCoordinates(object), error = function(e) NULL)
    if (!is.null(coords) && all(cells %in% rownames(coords)) && !"spatial" %in% names(reds)) {
      reds[["spatial"]] <- list(embeddings = as.matrix(coords[cells, 1:2]), key = "spatial_", assay = assay,
                                global = TRUE, stdev = .np(numeric(0)))
    }
  }
  list(
    assay = assay, cells = .np(cells), features = .np(features), X = .matrix_parts(X, zero.copy),
    X_layer = layer, layers = layers, scale_data_features = if (!is.null(sfeat)) .np(sfeat),
    obs = obs, var = var, variable_features = .np(SeuratObject::VariableFeatures(object, assay = assay)),
    original_features = if (!is.null(orig)) .np(orig), reductions = reds, graphs = grs,
    other_assays = others, misc = m, idents = .column_parts(SeuratObject::Idents(object), "idents")$part,
    seurat_version = as.character(utils::packageVersion("SeuratObject")), report = .np(report)
  )
}

.print_report <- function(report, verbose) {
  report <- unlist(report)
  if (verbose && length(report)) {
    message("pybridge conversion notes:\n", paste0("  - ", report, collapse = "\n"))
  }
  invisible(report)
}

#' Convert a Seurat object to AnnData (in memory)
#'
#' Builds a Python `anndata.AnnData` from one assay of a Seurat object, through the
#' pybridge engine. Sparse matrices cross as their parts (x, i, p, Dim) without a copy:
#' a genes x cells dgCMatrix has the same arrays as a cells x genes CSR matrix, and
#' NumPy views R's memory (read-only; the engine copies before writing).
#'
#' Mapping: the chosen `layer` becomes `X`; the assay's other layers go to `layers`
#' (`scale.data` is dense, covers only its features and is 0 elsewhere; the features are
#' listed in `uns$pybridge$scale_data_features`); meta.data -> `obs` (factors ->
#' categoricals with all levels and their order, logical/integer NA -> nullable pandas
#' types, character NA -> missing); meta.features -> `var`, VariableFeatures ->
#' `var$highly_variable`; reductions -> `obsm[["X_<name>"]]`, loadings -> `varm` (`PCs` for
#' pca), stdev and key -> `uns$pybridge$reductions`; graphs -> `obsp`; misc -> `uns`;
#' counts of the other assays -> `obsm[[<assay>]]` (a DataFrame). What cannot be carried
#' (command log, images, non-representable misc) is listed in `uns$pybridge$report` and
#' printed when `verbose`.
#'
#' @param object A Seurat object (v4 tested; v5 Assay5 untested).
#' @param assay Assay to convert (default: the default assay).
#' @param layer Layer that becomes `X`: `"counts"` (default), `"data"` or `"scale.data"`.
#' @param reductions,graphs,misc Carry reductions, graphs, misc (default `TRUE`).
#' @param other.assays Carry the counts of the other assays in `obsm` (default `TRUE`).
#' @param verbose Print what could not be carried.
#' @param ... Unused.
#' @return A reticulate handle to a Python `anndata.AnnData` (cells x features), with
#'   conversion off (`ad$X` stays a Python object; reticulate 1.28 cannot convert current
#'   scipy sparse matrices itself).
#' @seealso [as.Seurat.anndata._core.anndata.AnnData()], [WriteH5AD()]
#' @export
as.AnnData <- function(object, ...) UseMethod("as.AnnData")

#' @rdname as.AnnData
#' @export
as.AnnData.default <- function(object, ...) {
  stop("as.AnnData() needs a Seurat object, got ", paste(class(object), collapse = "/"), ".", call. = FALSE)
}

#' @rdname as.AnnData
#' @export
as.AnnData.Seurat <- function(object, assay = NULL, layer = "counts", reductions = TRUE, graphs = TRUE,
                              misc = TRUE, other.assays = TRUE, verbose = TRUE, ...) {
  parts <- .seurat_to_parts(object, assay = assay, layer = layer, reductions = reductions, graphs = graphs,
                            misc = misc, other.assays = other.assays, zero.copy = TRUE)
  .print_report(parts$report, verbose)
  # convert = FALSE: reticulate's own conversion of scipy sparse matrices fails on current scipy,
  # so the handle never auto-converts; use as.Seurat() or reticulate::py_to_r() on pieces.
  .engine("io", convert = FALSE)$anndata_from_parts(parts)
}

# CreateSeuratObject() without its per-cell work (CalcN over the whole matrix, which also needs
# a logical copy of it, and an R-level loop over cell names): the meta.data it computes is
# replaced by the parts' obs anyway. Initial idents as CreateSeuratObject() sets them.
.new_seurat <- function(a, assay, project = "SeuratProject") {
  cells <- colnames(a)
  first <- vapply(strsplit(cells, "_", fixed = TRUE), `[`, "", 1L)
  nl <- length(unique(first))
  idents <- if (anyNA(first) || nl > 100 || nl == 0 || nl == length(first)) {
    rep.int(factor(project), length(cells))
  } else {
    factor(first)
  }
  names(idents) <- cells
  assays <- stats::setNames(list(a), assay)
  methods::new("Seurat", assays = assays, meta.data = data.frame(row.names = cells), active.assay = assay,
               active.ident = idents, project.name = project, version = utils::packageVersion("SeuratObject"))
}

# Build a Seurat object from parts sent by Python's anndata_to_parts.
.seurat_from_parts <- function(parts, assay = NULL, verbose = TRUE) {
  assay <- assay %||% parts$assay %||% "RNA"
  cells <- as.character(unlist(parts$cells))
  features <- as.character(unlist(parts$features))
  report <- as.character(unlist(parts$report))
  if (anyDuplicated(cells)) stop("cell names (obs_names) are duplicated; run adata.obs_names_make_unique() first.", call. = FALSE)
  if (length(features) == 0L) stop("the AnnData has no features (n_vars = 0); a Seurat assay needs at least one.", call. = FALSE)
  if (anyDuplicated(features)) stop("feature names (var_names) are duplicated; run adata.var_names_make_unique() first.", call. = FALSE)
  newf <- gsub("_", "-", features, fixed = TRUE)
  if (!identical(newf, features)) {
    if (anyDuplicated(newf)) newf <- make.unique(newf)
    report <- c(report, sprintf("%d feature names had '_' replaced by '-' (Seurat's rule); originals kept in the assay's misc",
                                sum(newf != features)))
  }
  fmap <- stats::setNames(newf, features)
  layers <- list()
  for (l in names(parts$layers)) {
    rn <- if (l == "scale.data") unname(fmap[as.character(unlist(parts$scale_data_features))]) else newf
    layers[[l]] <- .matrix_from_parts(parts$layers[[l]], rownames = rn, colnames = cells)
  }
  a <- if (!is.null(layers$counts)) {
    SeuratObject::CreateAssayObject(counts = layers$counts, check.matrix = FALSE)
  } else {
    SeuratObject::CreateAssayObject(data = layers$data %||% layers[["scale.data"]])
  }
  if (!is.null(layers$counts) && !is.null(layers$data)) a <- SeuratObject::SetAssayData(a, "data", layers$data)
  if (!is.null(layers[["scale.data"]])) a <- SeuratObject::SetAssayData(a, "scale.data", layers[["scale.data"]])
  SeuratObject::Key(a) <- paste0(tolower(gsub("[^[:alnum:]]", "", assay)), "_")
  if (!identical(newf, features)) a@misc[["pybridge_original_features"]] <- features
  var <- .df_from_parts(parts$var)
  if (ncol(var)) {
    rownames(var) <- newf
    a@meta.features <- var
  }
  vf <- as.character(unlist(parts$variable_features))
  if (length(vf)) SeuratObject::VariableFeatures(a) <- unname(fmap[vf])
  object <- .new_seurat(a, assay)
  obs <- .df_from_parts(parts$obs)
  if (nrow(obs) == 0L) obs <- data.frame(row.names = cells)
  object@meta.data <- obs
  if (!is.null(parts$idents)) {
    id <- .column_from_parts(parts$idents)
    names(id) <- cells
    SeuratObject::Idents(object) <- id
  }
  extra <- c(parts$extra_layers, parts$assays_from_obsm)
  for (nm in names(extra)) {
    e <- extra[[nm]]
    ef <- as.character(unlist(e$features %||% parts$features))
    m <- .matrix_from_parts(e, rownames = gsub("_", "-", ef, fixed = TRUE), colnames = cells)
    akey <- make.names(nm)
    object[[akey]] <- SeuratObject::CreateAssayObject(counts = m, check.matrix = FALSE)
    if (!identical(ef, rownames(m))) object[[akey]]@misc[["pybridge_original_features"]] <- ef
  }
  for (nm in names(parts$reductions)) {
    r <- parts$reductions[[nm]]
    emb <- r$embeddings
    if (is.null(dim(emb))) emb <- matrix(emb, ncol = 1L)
    key <- r$key %||% ""
    if (!nzchar(key) || !grepl("^[[:alpha:]][[:alnum:]]*_$", key)) {
      key <- paste0(gsub("[^[:alnum:]]", "", nm), "_")
      if (!grepl("^[[:alpha:]]", key)) key <- paste0("X", key)
    }
    dimnames(emb) <- list(cells, paste0(key, seq_len(ncol(emb))))
    ld <- new("matrix")
    if (!is.null(r$loadings)) {
      ld <- r$loadings
      if (is.null(dim(ld))) ld <- matrix(ld, ncol = ncol(emb))
      lf <- as.character(unlist(r$loadings_features))
      dimnames(ld) <- list(unname(ifelse(is.na(fmap[lf]), lf, fmap[lf])), colnames(emb))
    }
    rassay <- r$assay %||% ""
    if (!nzchar(rassay) || !rassay %in% SeuratObject::Assays(object)) rassay <- assay
    object[[nm]] <- SeuratObject::CreateDimReducObject(
      embeddings = emb, loadings = ld, stdev = as.numeric(unlist(r$stdev)), key = key,
      assay = rassay, global = isTRUE(r$global)
    )
  }
  for (nm in names(parts$graphs)) {
    g <- .matrix_from_parts(list(sparse = parts$graphs[[nm]]), rownames = cells, colnames = cells)
    g <- SeuratObject::as.Graph(g)
    SeuratObject::DefaultAssay(g) <- assay
    object[[nm]] <- g
  }
  if (length(parts$misc)) object@misc <- .misc_from_py(parts$misc)
  if (length(report)) object@misc[["pybridge.report"]] <- report
  .print_report(report, verbose)
  object
}

#' Convert an AnnData to a Seurat object (in memory)
#'
#' Method of Seurat's `as.Seurat()` generic for a reticulate handle to a Python
#' `anndata.AnnData` (the reverse of [as.AnnData()]): `X` becomes the `counts` layer when
#' it holds non-negative integers (else `data`), `layers$counts`/`data`/`scale.data` fill the
#' matching layers, other layers and `raw` become assays, `obs` -> meta.data (categoricals ->
#' factors with levels and order; nullable types keep NA), `var` -> meta.features,
#' `obsm[["X_<name>"]]` -> DimReduc `<name>` (keys, stdev and loadings from
#' `uns$pybridge`/`varm`), `obsp` -> Graph, `uns` -> Misc. Seurat replaces `_` by `-` in
#' feature names; the originals are kept in the assay's misc and restored by `as.AnnData()`.
#'
#' @param x A Python AnnData handle (from `as.AnnData()`, reticulate, or the engine).
#' @param assay Name of the assay to create (default: the one recorded, else `"RNA"`).
#' @param X.layer Seurat layer that receives `X`: `"counts"`, `"data"` or `NULL` (auto).
#' @param verbose Print what could not be carried.
#' @param ... Unused.
#' @return A Seurat object (cells x features as in `x`).
#' @export
#' @method as.Seurat anndata._core.anndata.AnnData
#' @importFrom SeuratObject as.Seurat
as.Seurat.anndata._core.anndata.AnnData <- function(x, assay = NULL, X.layer = NULL, verbose = TRUE, ...) {
  parts <- .engine("io")$anndata_to_parts(x, X_layer = X.layer)
  .seurat_from_parts(parts, assay = assay, verbose = verbose)
}
