# Seurat <-> AnnData in memory. The mapping table is in pybridge/io/_bridge.py.

# One layer of an assay for all cells in the object's order (v5 split layers joined; see layers.R).
.get_layer <- function(object, assay, layer) {
  .layer_joined(object[[assay]], assay, layer, colnames(object))$m
}

.layer_names <- function(object, assay) {
  a <- object[[assay]]
  if (.is_v5_assay(a)) .Layers(a) else .layer_bases(a)
}

# The error for a missing layer: what exists, and the fix.
.missing_layer <- function(assay, layer, have) {
  fix <- if (layer == "counts" && any(have == "data" | startsWith(have, "data."))) {
    paste0(" Pass layer = \"data\" to convert the normalised values, or add the raw counts (e.g. object[[\"",
           assay, "\"]]$counts <- m): jobs that model counts need them.")
  } else if (length(have)) {
    " Pass one of them as layer = (split layers <layer>.<name> are joined for you), or JoinLayers() first."
  } else ""
  stop("layer '", layer, "' of assay '", assay, "' is empty or does not exist. Layers that exist: ",
       if (length(have)) paste(have, collapse = ", ") else "none", ".", fix, call. = FALSE)
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

# Split a Seurat object into parts (used by as.AnnData, WriteH5AD, every job, and by Python's
# read_seurat via rpy2). v5 split layers (counts.A, counts.B, ...) are joined in the object's
# cell order; each cell's part name goes to the meta.data column `split.key` and the split is
# recorded in parts$split (-> uns['pybridge']['split']) so that .seurat_from_parts() can
# restore it.
.seurat_to_parts <- function(object, assay = NULL, layer = "counts", reductions = TRUE, graphs = TRUE,
                             misc = TRUE, other.assays = TRUE, zero.copy = TRUE, other.layers = TRUE,
                             split.key = "split.layer") {
  assay <- .check_seurat(object, assay)
  report <- character(0)
  a <- object[[assay]]
  cells <- colnames(object)
  if (!is.character(layer) || length(layer) != 1L || is.na(layer)) {
    stop("`layer` must be one layer name (e.g. \"counts\"), not ", paste(format(layer), collapse = " "), ".",
         call. = FALSE)
  }
  xj <- .layer_joined(a, assay, layer, cells)
  if (is.null(xj)) .missing_layer(assay, layer, .layer_names(object, assay))
  X <- xj$m
  report <- c(report, xj$notes)
  features <- rownames(X)
  md <- object@meta.data
  split <- NULL
  if (!is.null(xj$split)) {
    if (!is.character(split.key) || length(split.key) != 1L || !nzchar(split.key)) {
      stop("`split.key` must be one meta.data column name.", call. = FALSE)
    }
    added <- TRUE
    if (split.key %in% names(md)) {
      if (!identical(as.character(md[[split.key]]), as.character(xj$split))) {
        stop("meta.data already has a column '", split.key, "' that differs from the layer split (",
             paste(xj$layers, collapse = ", "), "); pass split.key = another name.", call. = FALSE)
      }
      added <- FALSE
    } else {
      md[[split.key]] <- xj$split
    }
    split <- list(key = split.key, levels = .np(levels(xj$split)), added = added, layers = layer)
    report <- c(report, sprintf("split layers %s joined (cells in the object's order); each cell's layer in obs['%s']",
                                paste(xj$layers, collapse = ", "), split.key))
  }
  layers <- list()
  sfeat <- NULL
  counts <- if (layer != "counts") .layer_joined(a, assay, "counts", cells, features)$m else X
  bases <- if (other.layers) setdiff(.layer_bases(a, levels(xj$split)), layer) else character(0)
  for (l in bases) {  # jobs needing only X skip the rest
    lj <- tryCatch(.layer_joined(a, assay, l, cells, if (l != "scale.data") features),
                   pybridge_on_disk = function(e) stop(e),
                   error = function(e) list(notes = sprintf("layer '%s' not carried: %s", l, conditionMessage(e))))
    if (is.null(lj$m)) {
      report <- c(report, lj$notes)
      next
    }
    m <- lj$m
    report <- c(report, lj$notes)
    # (a v3 Assay made from counts holds the same matrix as data; an Assay5 has no data layer
    # until NormalizeData, so one that exists is carried)
    if (l == "data" && !.is_v5_assay(a) && !is.null(counts) && identical(m, counts)) {
      report <- c(report, "data layer is identical to counts (NormalizeData not run); not duplicated")
      next
    }
    if (l == "scale.data") sfeat <- rownames(m)
    if (!is.null(lj$split) && !is.null(split)) split$layers <- c(split$layers, l)
    layers[[l]] <- .matrix_parts(m, zero.copy)
  }
  if (!is.null(split)) split$layers <- .np(split$layers)
  mf <- .assay_features_df(a)
  mf <- mf[match(features, rownames(mf)), , drop = FALSE]
  rownames(mf) <- features
  var <- .df_parts(mf)
  obs <- .df_parts(md)
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
    report <- c(report, sprintf("images (%s) not carried; spot coordinates are in obsm['X_spatial']",
                                paste(names(object@images), collapse = ", ")))
    coords <- .image_coordinates(object, cells)
    if (!is.null(coords) && !"spatial" %in% names(reds)) {
      reds[["spatial"]] <- list(embeddings = coords, key = "spatial_", assay = assay,
                                global = TRUE, stdev = .np(numeric(0)))
    } else if (is.null(coords)) {
      report <- c(report, "image coordinates not carried: the images do not give x, y for every cell")
    }
  }
  list(
    assay = assay, cells = .np(cells), features = .np(features), X = .matrix_parts(X, zero.copy),
    X_layer = layer, layers = layers, scale_data_features = if (!is.null(sfeat)) .np(sfeat),
    obs = obs, var = var, variable_features = .np(SeuratObject::VariableFeatures(object, assay = assay)),
    original_features = if (!is.null(orig)) .np(orig), reductions = reds, graphs = grs,
    other_assays = others, misc = m, idents = .column_parts(SeuratObject::Idents(object), "idents")$part,
    seurat_version = as.character(utils::packageVersion("SeuratObject")), assay_class = class(a)[1],
    split = split, report = .np(report)
  )
}

# `...` of a method that takes none: an unknown (e.g. misspelt) argument is an error, not ignored.
.no_dots <- function(..., fun) {
  d <- list(...)
  if (length(d)) {
    nm <- names(d) %||% rep("", length(d))
    nm[!nzchar(nm)] <- "<unnamed>"
    stop(fun, "(): unused argument", if (length(d) > 1L) "s", " ", paste(nm, collapse = ", "), ".", call. = FALSE)
  }
  invisible(NULL)
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
#' types, character NA -> missing; a factor level that is itself `NA` becomes missing
#' values, with a note, in memory and in files alike); meta.features -> `var`,
#' VariableFeatures -> `var$highly_variable`; reductions -> `obsm[["X_<name>"]]`, loadings
#' -> `varm` (`PCs` for pca), stdev and key -> `uns$pybridge$reductions`; graphs -> `obsp`;
#' misc -> `uns`; counts of the other assays -> `obsm[[<assay>]]` (a DataFrame); spot or
#' cell coordinates of images (`VisiumV1`, `VisiumV2`, `FOV`) -> `obsm[["X_spatial"]]` (the reduction `spatial`). What
#' cannot be carried (command log, images, non-representable misc) is listed in
#' `uns$pybridge$report` and printed when `verbose`.
#'
#' Seurat v5 (`Assay5`): any layer can be `X`. Split layers (`counts.CTRL`, `counts.STIM`,
#' ... after `split()`) are joined into one `X` with the cells in the object's order
#' (the same matrix as `JoinLayers()` gives); each cell's layer name (`CTRL`, `STIM`) goes to
#' the obs column `split.key` (default `"split.layer"`, a categorical in layer order) and the
#' split is recorded in `uns$pybridge$split`, so that [as.Seurat()] splits the layers again.
#' Layers with different features are joined over the union of features (0 where a layer
#' lacks one), with a note. The assay's class (`Assay5` or `Assay`) is recorded in
#' `uns$pybridge$assay_class`. Layers kept on disk (BPCells, DelayedArray) are an error
#' naming the fix (load them with `as(layer, "dgCMatrix")`); they are never loaded silently.
#'
#' @param object A Seurat object (SeuratObject 4 `Assay` or SeuratObject 5 `Assay5`, joined or
#'   split layers).
#' @param assay Assay to convert (default: the default assay).
#' @param layer Layer that becomes `X`: `"counts"` (default), `"data"`, `"scale.data"` or, for
#'   an Assay5, any layer; split layers `<layer>.<name>` are joined.
#' @param reductions,graphs,misc Carry reductions, graphs, misc (default `TRUE`).
#' @param other.assays Carry the counts of the other assays in `obsm` (default `TRUE`).
#' @param split.key obs column that receives each cell's layer name when the layers are split.
#' @param verbose Print what could not be carried.
#' @param ... Not used; any argument here is an error.
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
                              misc = TRUE, other.assays = TRUE, split.key = "split.layer", verbose = TRUE, ...) {
  .no_dots(..., fun = "as.AnnData")
  parts <- .seurat_to_parts(object, assay = assay, layer = layer, reductions = reductions, graphs = graphs,
                            misc = misc, other.assays = other.assays, zero.copy = TRUE, split.key = split.key)
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
.seurat_from_parts <- function(parts, assay = NULL, verbose = TRUE, split.by = NULL) {
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
  version <- .parts_assay_version(parts$assay_class)
  if (version == "v5" && (length(features) == 1L || length(cells) == 1L)) {
    version <- "v3"
    report <- c(report, "one feature or one cell: a v3 Assay (SeuratObject 5.0 cannot hold such an Assay5)")
  }
  if (version == "v3" && identical(as.character(parts$assay_class), "Assay5")) {
    report <- c(report, "the assay was an Assay5 (SeuratObject 5); it becomes a v3 Assay under this SeuratObject 4")
  }
  a <- .create_assay(counts = layers$counts, data = if (!is.null(layers$counts)) layers$data else
                       layers$data %||% layers[["scale.data"]], version = version)
  if (!is.null(layers[["scale.data"]])) a <- .assay_set_layer(a, "scale.data", layers[["scale.data"]])
  if (version == "v5") {  # an Assay5 holds any layer: AnnData's other layers come back as layers
    for (nm in names(parts$extra_layers)) {
      e <- parts$extra_layers[[nm]]
      if (nm == "raw" || !is.null(e$features)) next
      a <- .assay_set_layer(a, nm, .matrix_from_parts(e, rownames = newf, colnames = cells))
      parts$extra_layers[[nm]] <- NULL
      hit <- startsWith(report, sprintf("layers['%s'] became its own assay", nm))
      report[hit] <- sprintf("layers['%s'] became layer '%s' of the Assay5", nm, nm)
    }
  }
  SeuratObject::Key(a) <- .seurat_key(assay)
  if (!identical(newf, features)) a@misc[["pybridge_original_features"]] <- features
  var <- .df_from_parts(parts$var)
  if (ncol(var)) {
    rownames(var) <- newf
    .assay_features_df(a) <- var
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
    object[[akey]] <- .create_assay(counts = m, key = .seurat_key(akey, unlist(SeuratObject::Key(object))), version = version)
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
    taken <- unlist(SeuratObject::Key(object))
    if (key %in% taken) {  # e.g. reduction 'spatial' and assay 'Spatial': Seurat would pick a random key
      key <- c(toupper(key), paste0(sub("_$", "", key), seq_len(99), "_"))
      key <- key[!key %in% taken][1]
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
  r <- .restore_split(object, assay, parts$split, split.by, version)
  object <- r$object
  report <- c(report, r$report)
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
#' matching layers, other layers and `raw` become assays (layers of the assay under
#' SeuratObject 5), `obs` -> meta.data (categoricals -> factors with levels and order;
#' nullable types keep NA), `var` -> meta.features, `obsm[["X_<name>"]]` -> DimReduc `<name>`
#' (keys, stdev and loadings from `uns$pybridge`/`varm`), `obsp` -> Graph, `uns` -> Misc.
#' Seurat replaces `_` by `-` in feature names; the originals are kept in the assay's misc
#' and restored by `as.AnnData()`.
#'
#' Assay class: under SeuratObject 5 an `Assay5` (a v3 `Assay` when
#' `options(Seurat.object.assay.version = "v3")`), under SeuratObject 4 an `Assay`; an
#' AnnData made by [as.AnnData()] comes back as the class it went out as
#' (`uns$pybridge$assay_class`). Split layers: the split recorded by [as.AnnData()]
#' (`uns$pybridge$split`, obs column `split.layer`) is restored, and that column, when
#' as.AnnData added it, is removed from meta.data again.
#'
#' @param x A Python AnnData handle (from `as.AnnData()`, reticulate, or the engine).
#' @param assay Name of the assay to create (default: the one recorded, else `"RNA"`).
#' @param X.layer Seurat layer that receives `X`: `"counts"`, `"data"` or `NULL` (auto).
#' @param split.by `NULL` (default): split the layers as recorded by [as.AnnData()] (none
#'   when nothing was recorded); `FALSE`: keep them joined (the obs column stays); or a
#'   meta.data column to split the `counts` and `data` layers by, as
#'   `split(object[[assay]], f = )` does (SeuratObject 5 only).
#' @param verbose Print what could not be carried.
#' @param ... Not used; any argument here is an error.
#' @return A Seurat object (cells x features as in `x`).
#' @export
#' @method as.Seurat anndata._core.anndata.AnnData
#' @importFrom SeuratObject as.Seurat
as.Seurat.anndata._core.anndata.AnnData <- function(x, assay = NULL, X.layer = NULL, split.by = NULL,
                                                    verbose = TRUE, ...) {
  .no_dots(..., fun = "as.Seurat")
  parts <- .engine("io")$anndata_to_parts(x, X_layer = X.layer)
  .seurat_from_parts(parts, assay = assay, verbose = verbose, split.by = split.by)
}
