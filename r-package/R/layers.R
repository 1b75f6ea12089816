# Seurat v3/v4 assays (`Assay`: counts/data/scale.data slots) and Seurat v5 assays (`Assay5`:
# named layers, possibly split into `counts.<batch>` ...) behind one interface, for the bridge
# (convert.R), the file writers and every job (.job_anndata).

.is_v5_assay <- function(a) inherits(a, "StdAssay")  # Assay5 (SeuratObject >= 5)

# SeuratObject 5's layer functions, looked up when called: they do not exist in SeuratObject 4
# (the host tier), so naming them as SeuratObject::Layers would fail R CMD check there.
.so5 <- function(name) getExportedValue("SeuratObject", name)
.Layers <- function(object, ...) .so5("Layers")(object, ...)
.LayerData <- function(object, ...) .so5("LayerData")(object, ...)
`.LayerData<-` <- function(object, ..., value) .so5("LayerData<-")(object, ..., value = value)
.CreateAssay5Object <- function(...) .so5("CreateAssay5Object")(...)

# The assay class new assays get: "v5" (Assay5) under SeuratObject >= 5 unless the user chose v3
# assays as Seurat does (options(Seurat.object.assay.version = "v3")), else "v3" (Assay).
.assay_version <- function() {
  if (utils::packageVersion("SeuratObject") < "5.0.0") return("v3")
  if (identical(getOption("Seurat.object.assay.version", "v5"), "v3")) "v3" else "v5"
}

#' Create an assay of the class this SeuratObject builds (internal)
#'
#' `Assay5` under SeuratObject >= 5 (unless `options(Seurat.object.assay.version = "v3")`),
#' v3 `Assay` under SeuratObject 4. Every pybridge function that adds an assay (the bridge,
#' `AnnotateCells`' `pathway`, `Deconvolve`'s `cell2location`) creates it here.
#'
#' @param counts,data Features x cells matrices (dgCMatrix or matrix) with dimnames; at least one.
#' @param key Assay key (e.g. `"pathway_"`); `NULL` keeps the default.
#' @param version `"v5"`, `"v3"` or `NULL` (this SeuratObject's choice, see above).
#' @return An `Assay5` or `Assay`.
#' @keywords internal
#' @noRd
.create_assay <- function(counts = NULL, data = NULL, key = NULL, version = NULL) {
  version <- version %||% .assay_version()
  if (is.null(counts) && is.null(data)) stop("an assay needs counts or data", call. = FALSE)
  # SeuratObject 5.0 cannot hold a one-feature or one-cell Assay5 ("Layers must be
  # two-dimensional objects"): such assays are v3 Assays
  if (any(dim(counts %||% data) == 1L)) version <- "v3"
  if (version == "v5") {
    # dense matrices as dgCMatrix here: CreateAssay5Object would coerce them with a warning
    if (is.matrix(counts)) counts <- methods::as(counts, "CsparseMatrix")
    if (is.matrix(data)) data <- methods::as(data, "CsparseMatrix")
    a <- if (is.null(counts)) .CreateAssay5Object(data = data)
         else .CreateAssay5Object(counts = counts, data = data)
  } else {
    a <- if (is.null(counts)) SeuratObject::CreateAssayObject(data = data)
         else SeuratObject::CreateAssayObject(counts = counts, check.matrix = FALSE)
    if (!is.null(counts) && !is.null(data)) a <- SeuratObject::SetAssayData(a, "data", data)
  }
  if (!is.null(key)) SeuratObject::Key(a) <- key
  a
}

# One layer of an assay object (v3: counts/data/scale.data slot; v5: any layer name).
.assay_get_layer <- function(a, layer) {
  if (.is_v5_assay(a)) .LayerData(a, layer = layer) else SeuratObject::GetAssayData(a, slot = layer)
}

# Set one layer of an assay object (v3: counts/data/scale.data slot; v5: any layer name).
.assay_set_layer <- function(a, layer, value) {
  if (.is_v5_assay(a)) {
    .LayerData(a, layer = layer) <- value
    return(a)
  }
  if (!layer %in% c("counts", "data", "scale.data")) stop("a v3 assay has no layer '", layer, "'", call. = FALSE)
  SeuratObject::SetAssayData(a, layer, value)
}

# Feature-level meta.data of an assay (v3 meta.features, v5 meta.data), and its replacement.
# (an Assay5 stores it without row names, in feature order; a[[]] adds them).
.assay_features_df <- function(a) if (.is_v5_assay(a)) a[[]] else a@meta.features
`.assay_features_df<-` <- function(a, value) {
  if (.is_v5_assay(a)) {
    value <- value[match(rownames(a), rownames(value)), , drop = FALSE]
    rownames(value) <- NULL
    methods::slot(a, "meta.data") <- value
  } else {
    a@meta.features <- value
  }
  a
}

# The layers of a v5 assay that make up `layer`: itself, or its split parts `<layer>.<name>`.
.layer_family <- function(a, layer) {
  have <- .Layers(a)
  if (layer %in% have) return(layer)
  have[startsWith(have, paste0(layer, "."))]
}

# Layers kept on disk (BPCells, DelayedArray/HDF5Array) are never loaded silently.
.check_in_memory <- function(m, assay, layer) {
  if (inherits(m, c("dgCMatrix", "matrix")) || (inherits(m, "Matrix"))) return(invisible(m))
  cls <- paste(class(m), collapse = "/")
  what <- if (inherits(m, "IterableMatrix")) "a BPCells on-disk matrix"
          else if (inherits(m, c("DelayedArray", "DelayedMatrix"))) "a DelayedArray (on-disk or delayed) matrix"
          else paste0("a ", cls)
  ld <- sprintf("LayerData(object, assay = \"%s\", layer = \"%s\")", assay, layer)
  msg <- paste0("layer '", layer, "' of assay '", assay, "' is ", what, " (", cls, "); pybridge needs it in memory ",
                "and does not load it silently. Load it first:\n  ", ld, " <- as(", ld, ", \"dgCMatrix\")\n",
                "(this reads the whole layer into memory), or subset the object to fewer cells first.")
  stop(structure(class = c("pybridge_on_disk", "error", "condition"), list(message = msg, call = NULL)))
}

# Rows of m (features x cells) placed into `features` (zeros for features m lacks).
.pad_rows <- function(m, features) {
  pos <- match(rownames(m), features)
  keep <- !is.na(pos)
  if (!all(keep)) m <- m[keep, , drop = FALSE]
  pos <- pos[keep]
  if (is.matrix(m)) {
    out <- matrix(0, length(features), ncol(m), dimnames = list(features, colnames(m)))
    out[pos, ] <- m
    return(out)
  }
  m <- methods::as(m, "TsparseMatrix")
  Matrix::sparseMatrix(i = pos[m@i + 1L], j = m@j + 1L, x = as.numeric(m@x), dims = c(length(features), ncol(m)),
                       dimnames = list(features, colnames(m)))
}

#' One layer of an assay for all cells, joined when split (internal)
#'
#' v3 assays: the slot. v5 assays: the layer itself, or its split parts (`counts.CTRL`,
#' `counts.STIM`, ...) joined into one matrix with the cells in `cells` order and the features
#' over the union of the parts' features (in the assay's feature order), or over `features`.
#'
#' @return `NULL` when the layer is absent or empty; else `list(m = features x cells matrix,
#'   split = factor of each cell's part name (levels in layer order) or NULL, layers = the layer
#'   names read, notes = character)`.
#' @noRd
.layer_joined <- function(a, assay, layer, cells, features = NULL) {
  if (!.is_v5_assay(a)) {
    if (!layer %in% c("counts", "data", "scale.data")) return(NULL)
    m <- methods::slot(a, layer)
    if (length(m) == 0L || any(dim(m) == 0L)) return(NULL)
    return(list(m = m, split = NULL, layers = layer, notes = character(0)))
  }
  fam <- .layer_family(a, layer)
  if (!length(fam)) return(NULL)
  if (length(fam) > 1L) fam <- fam[order(substring(fam, nchar(layer) + 2L), method = "radix")]  # by split name
  notes <- character(0)
  mats <- lapply(fam, function(l) .check_in_memory(.LayerData(a, layer = l, fast = TRUE), assay, l))
  # LayerData(fast = TRUE) has no dimnames: take them from the assay's maps
  for (k in seq_along(fam)) {
    dimnames(mats[[k]]) <- list(SeuratObject::Features(a, layer = fam[k]), SeuratObject::Cells(a, layer = fam[k]))
  }
  lcells <- lapply(mats, colnames)
  all_cells <- unlist(lcells, use.names = FALSE)
  if (anyDuplicated(all_cells)) {
    stop("layers ", paste(fam, collapse = ", "), " of assay '", assay, "' share cells (e.g. '",
         all_cells[anyDuplicated(all_cells)], "'), so they cannot be joined. Pass one of them as layer = ",
         "(with a subset of the object), or join them yourself with JoinLayers().", call. = FALSE)
  }
  if (!all(cells %in% all_cells)) {
    stop("layer", if (length(fam) > 1L) "s ", " ", paste(fam, collapse = ", "), " of assay '", assay, "' cover ",
         sum(cells %in% all_cells), " of the object's ", length(cells), " cells; every cell needs a value. ",
         "Layers that exist: ", paste(.Layers(a), collapse = ", "), ".", call. = FALSE)
  }
  lfeat <- lapply(mats, rownames)
  if (is.null(features)) {
    u <- unique(unlist(lfeat, use.names = FALSE))
    features <- c(rownames(a)[rownames(a) %in% u], setdiff(u, rownames(a)))
  }
  same <- vapply(lfeat, identical, logical(1), features)
  if (!all(same)) {
    if (length(fam) > 1L && length(unique(lfeat)) > 1L) {
      notes <- c(notes, sprintf("layers %s have different features (%s): joined over their union (%d features; 0 where a layer lacks one)",
                                paste(fam, collapse = ", "), paste(lengths(lfeat), collapse = ", "), length(features)))
    }
    mats <- lapply(mats, .pad_rows, features = features)
  }
  m <- if (length(mats) == 1L) mats[[1]] else {
    if (any(vapply(mats, inherits, logical(1), "Matrix"))) mats <- lapply(mats, methods::as, "CsparseMatrix")
    do.call(cbind, mats)
  }
  if (!identical(colnames(m), cells)) m <- m[, cells, drop = FALSE]
  if (inherits(m, "Matrix") && !inherits(m, "dgCMatrix")) {
    m <- methods::as(methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix"), "dMatrix")
  }
  split <- NULL
  if (length(fam) > 1L) {
    nm <- substring(fam, nchar(layer) + 2L)
    split <- factor(rep(nm, lengths(lcells)), levels = nm)
    names(split) <- all_cells
    split <- split[cells]
  }
  list(m = m, split = split, layers = fam, notes = notes)
}

# Layer names of an assay as families: "counts", "data", "scale.data" and any other base name
# (split parts `<base>.<name>` grouped under `<base>` when <name> is one of the split's names).
.layer_bases <- function(a, split_names = NULL) {
  if (!.is_v5_assay(a)) {
    return(c("counts", "data", "scale.data")[vapply(c("counts", "data", "scale.data"), function(l) {
      m <- methods::slot(a, l)
      length(m) > 0L && all(dim(m) > 0L)
    }, logical(1))])
  }
  have <- .Layers(a)
  bases <- have
  for (b in c("counts", "data", "scale.data")) bases[have == b | startsWith(have, paste0(b, "."))] <- b
  if (length(split_names)) {
    for (s in split_names) {
      hit <- endsWith(have, paste0(".", s)) & !bases %in% c("counts", "data", "scale.data")
      bases[hit] <- substr(have[hit], 1L, nchar(have[hit]) - nchar(s) - 1L)
    }
  }
  unique(bases)
}

# The assay version for an object coming back: the class it went out as (parts$assay_class,
# from uns['pybridge']), else this SeuratObject's choice; always v3 under SeuratObject 4.
.parts_assay_version <- function(assay_class) {
  if (utils::packageVersion("SeuratObject") < "5.0.0") return("v3")
  cls <- as.character(unlist(assay_class))
  if (identical(cls, "Assay")) return("v3")
  if (identical(cls, "Assay5")) return("v5")
  .assay_version()
}

# Split the assay's layers again (as.Seurat / ReadH5AD): `split.by` NULL = the split recorded
# by as.AnnData (parts$split), FALSE = none, or a meta.data column. Returns list(object, report).
.restore_split <- function(object, assay, split, split.by, version) {
  report <- character(0)
  if (isFALSE(split.by)) return(list(object = object, report = report))
  recorded <- is.null(split.by)
  if (recorded) {
    if (is.null(split) || is.null(split$key)) return(list(object = object, report = report))
    key <- as.character(unlist(split$key))
  } else {
    if (!is.character(split.by) || length(split.by) != 1L) {
      stop("`split.by` must be NULL (restore the recorded split), FALSE, or one meta.data column.", call. = FALSE)
    }
    key <- split.by
  }
  md <- object@meta.data
  if (!key %in% names(md)) {
    if (recorded) {
      return(list(object = object, report = sprintf("layers not split again: obs column '%s' (the recorded split) is gone", key)))
    }
    stop("`split.by`: '", key, "' is not a meta.data column. Columns that exist: ", paste(names(md), collapse = ", "), ".",
         call. = FALSE)
  }
  if (version != "v5") {
    msg <- sprintf("layers not split by '%s': split layers need an Assay5 (SeuratObject >= 5)", key)
    if (!recorded) stop(msg, call. = FALSE)
    return(list(object = object, report = msg))
  }
  f <- md[[key]]
  if (anyNA(f)) stop("`split.by` column '", key, "' has NA values; every cell needs a layer.", call. = FALSE)
  if (recorded && !is.null(split$levels)) f <- factor(as.character(f), levels = as.character(unlist(split$levels)))
  bases <- intersect(as.character(unlist(split$layers %||% c("counts", "data"))), .Layers(object[[assay]]))
  if (!recorded) bases <- intersect(c("counts", "data"), .Layers(object[[assay]]))
  object[[assay]] <- suppressMessages(split(object[[assay]], f = f, layers = bases))
  object@meta.data <- md  # `[[<-` recomputes nCount/nFeature as doubles: keep the carried columns
  if (recorded && isTRUE(as.logical(unlist(split$added)))) object@meta.data[[key]] <- NULL
  list(object = object, report = report)
}

# x, y of every cell from the object's images (VisiumV1 / VisiumV2 spots, FOV centroids; one
# image per slice: their cells are combined), as a cells x 2 matrix; NULL when some cell has none.
.image_coordinates <- function(object, cells) {
  xy <- NULL
  for (img in names(object@images)) {
    co <- tryCatch(SeuratObject::GetTissueCoordinates(object[[img]]), error = function(e) NULL)
    if (is.null(co) || !nrow(co)) next
    co <- as.data.frame(co)
    if ("cell" %in% names(co)) rownames(co) <- make.unique(as.character(co$cell))
    xcol <- intersect(c("x", "imagecol"), names(co))[1]
    ycol <- intersect(c("y", "imagerow"), names(co))[1]
    m <- if (!is.na(xcol) && !is.na(ycol)) as.matrix(co[, c(xcol, ycol)]) else as.matrix(co[, 1:2])
    storage.mode(m) <- "double"
    xy <- rbind(xy, m[setdiff(rownames(m), rownames(xy)), , drop = FALSE])
  }
  if (is.null(xy) || !all(cells %in% rownames(xy))) return(NULL)
  xy <- xy[cells, , drop = FALSE]
  dimnames(xy) <- list(cells, c("spatial_1", "spatial_2"))
  xy
}

#' Store a job's result as a layer, split like the object's counts (internal)
#'
#' v3 assays: the slot. v5 assays whose counts are split (`counts.A`, `counts.B`): `layer` is
#' written split the same way (`data.A`, `data.B`), as Seurat's NormalizeData does on such an
#' object, except `scale.data`, which Seurat keeps joined; a joined assay gets `layer` itself.
#' A previous `layer` (joined or split) is replaced.
#'
#' @param value Features x cells matrix for all cells of the object (any order).
#' @return The object.
#' @noRd
.store_layer <- function(object, assay, layer, value) {
  a <- object[[assay]]
  if (!.is_v5_assay(a)) {
    return(SeuratObject::SetAssayData(object, layer, value, assay = assay))
  }
  fam <- .layer_family(a, "counts")
  old <- .layer_family(a, layer)
  for (l in old) .LayerData(a, layer = l) <- NULL
  if (length(fam) > 1L && layer != "scale.data") {
    for (l in fam) {
      part <- substring(l, nchar("counts") + 2L)
      .LayerData(a, layer = paste0(layer, ".", part)) <- value[, SeuratObject::Cells(a, layer = l), drop = FALSE]
    }
  } else {
    .LayerData(a, layer = layer) <- value[, colnames(object), drop = FALSE]
  }
  md <- object@meta.data
  object[[assay]] <- a
  object@meta.data <- md  # (assigning an Assay5 recomputes nCount/nFeature as doubles)
  object
}
