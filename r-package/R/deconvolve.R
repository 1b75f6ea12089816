# Spatial deconvolution (cell2location / NNLS) for Seurat objects. The science lives in
# pybridge.tl.deconvolve (Python); this file converts, calls, and stores the results.

.deconv_short <- c(cell2location = "c2l", nnls = "nnls")

# A data.frame/matrix of signatures (genes x cell types) -> pandas DataFrame.
.py_signatures <- function(x) {
  x <- as.data.frame(as.matrix(x), check.names = FALSE)
  if (is.null(rownames(x)) || identical(rownames(x), as.character(seq_len(nrow(x))))) {
    stop("signatures (reference given as a matrix/data.frame) need gene names as rownames.", call. = FALSE)
  }
  p <- .df_parts(x)
  .engine("io", convert = FALSE)$df_from_parts(p$index, p$names, p$columns)
}

.py_strings <- function(x) as.character(unlist(reticulate::py_to_r(x$tolist())))

# meta.data column names for per-type results: "<short>.<quantile>.<cell type>", made
# syntactically valid and unique by make.names() ourselves (cell type "CD4 T" gives
# "c2l.q05.CD4.T"), so AddMetaData() keeps them as they are and Misc() can list them truthfully.
.deconv_columns <- function(method, quantile, cell.types) {
  make.names(paste0(.deconv_short[[method]], ".", quantile, ".", cell.types), unique = TRUE)
}

#' Deconvolve spatial spots into cell-type abundances (cell2location or NNLS)
#'
#' Estimates, for every spot of a spatial Seurat object (e.g. 10x Visium), how many cells of
#' each reference cell type it holds, with the pybridge engine
#' (`pybridge.tl.deconvolve`, Python):
#'
#' * `method = "cell2location"`: cell2location (Kleshchevnikov et al. 2022, Nat Biotechnol
#'   40:661; the `cell2location` Python package). Reference signatures come from its
#'   `RegressionModel` (negative-binomial regression per cell type, after its permissive gene
#'   filter), then `Cell2location` maps them onto the spots. Runs on a GPU when `device`
#'   allows (hours on CPU for a full section with the recommended 30,000 epochs; use a few
#'   hundred to a few thousand epochs for a first look).
#' * `method = "nnls"`: non-negative least squares of each spot on the reference's mean
#'   counts per cell type (scipy), Poisson-weighted; seconds on CPU, point estimates only.
#'
#' Results:
#'
#' * meta.data columns per cell type with the chosen posterior summary, prefixed
#'   `c2l.<quantile>.` (e.g. `c2l.q05.B_Plasma`; cell2location's recommended summary is the 5%
#'   quantile, "cell abundance confidently present") or `nnls.mean.` for NNLS. Names are made
#'   syntactically valid with [make.names()] (cell type `"CD4 T"` gives `c2l.q05.CD4.T`);
#'   `Misc(object, key.added)$meta.data.columns` maps each cell type to its column. They work
#'   with [Seurat::SpatialFeaturePlot()] (tissue image underneath) and [SpatialAbundancePlot()].
#' * an assay `key.added` (default `"cell2location"`, or `"nnls"`): cell types x spots,
#'   posterior mean abundances in the `data` slot. Seurat turns `_` into `-` in feature
#'   names (`B_Plasma` becomes `B-Plasma`); the original names are in the assay's misc.
#'   The other summaries are matrices of the same shape in the assay's misc:
#'   `Misc(object[["cell2location"]], "q05")`, `"q95"` (cell2location only) and
#'   `"proportions"` (mean abundance / spot total).
#' * `Misc(object, key.added)`: method, parameters, cell types, genes used, reference
#'   signatures (`$signatures`, genes x cell types; pass them as `reference` to map another
#'   section without refitting), training history (ELBO), timings.
#' * the command log (`object@commands`).
#'
#' @param object A Seurat object with spatial spot counts (e.g. assay `"Spatial"`).
#' @param reference The single-cell reference: a Seurat object with raw counts and cell types
#'   in `reference.labels`; or a matrix/data.frame of signatures (genes x cell types, e.g.
#'   `Misc(other, "cell2location")$signatures`); or the directory of a saved cell2location
#'   RegressionModel.
#' @param reference.labels meta.data column of `reference` holding the cell types.
#' @param method `"cell2location"` (default) or `"nnls"`.
#' @param assay Assay of `object` with the spot counts (default: the default assay).
#' @param reference.assay Assay of `reference` (default: its default assay).
#' @param n.cells.per.location Expected cells per spot (cell2location's
#'   `N_cells_per_location`; ~30 for Visium lymph node). NNLS abundances are scaled to this mean.
#' @param detection.alpha cell2location's `detection_alpha` (20 for typical Visium, 200 when
#'   technical variation is low).
#' @param max.epochs Training epochs of the spatial mapping (`NULL`: 30,000, cell2location's
#'   recommendation).
#' @param reference.max.epochs Training epochs of the reference RegressionModel (`NULL`: 250).
#' @param device `"auto"` (GPU when available), `"cpu"` or `"cuda"`.
#' @param quantile Summary put in meta.data: `"q05"` (default), `"mean"` or `"q95"`
#'   (NNLS: always `"mean"`).
#' @param key.added Name of the assay and Misc entry (default: `"cell2location"` or `"nnls"`).
#' @param verbose Show progress bars and messages.
#' @param ... Further options of `pybridge.tl.deconvolve` (dots or underscores both work):
#'   `batch.key` and `categorical.covariate.keys` (reference covariates), `spatial.batch.key`
#'   (sections mapped together), `reference.genes` (`"all"` genes passing the filter, default
#'   and reusable on any panel, or `"shared"` with this panel only: ~10x faster),
#'   `lr` (learning rate; 0.01-0.02 converges in fewer epochs), `num.samples` (posterior samples,
#'   default 1000), `batch.size`, `model.kwargs` (a list of Cell2location hyperparameters, e.g.
#'   `list(A_factors_per_location = 3)`), `random.state`, `save.reference.model` (a directory).
#' @return `object` with the meta.data columns, the assay, Misc entry and command log added.
#'   On error, nothing is changed.
#' @seealso [SpatialAbundancePlot()]
#' @md
#' @export
#' @examples
#' \dontrun{
#' vis <- Deconvolve(vis, reference = ref, reference.labels = "cell_type",
#'                   max.epochs = 3000, device = "auto")
#' SpatialAbundancePlot(vis, c("B", "T_CD4"))
#' }
Deconvolve <- function(object, reference, reference.labels = NULL, method = "cell2location", assay = NULL,
                       reference.assay = NULL, n.cells.per.location = 30, detection.alpha = 20,
                       max.epochs = NULL, reference.max.epochs = NULL, device = "auto", quantile = "q05",
                       key.added = NULL, verbose = TRUE, ...) {
  method <- match.arg(method, names(.deconv_short))
  quantile <- match.arg(quantile, c("q05", "mean", "q95"))
  if (method == "nnls") quantile <- "mean"
  key <- key.added %||% method
  if (!is.character(key) || length(key) != 1L || !nzchar(key)) stop("key.added must be one string.", call. = FALSE)
  assay <- .check_seurat(object, assay, arg = "object")

  dots <- list(...)
  if (length(dots)) {
    if (is.null(names(dots)) || any(!nzchar(names(dots)))) stop("options in ... must be named.", call. = FALSE)
    names(dots) <- gsub(".", "_", names(dots), fixed = TRUE)
  }
  # numbers go as they are: the engine checks them (epochs >= 1, ...) before any work, and
  # .engine_call() reports its errors with these R names
  args <- list(method = method, n_cells_per_location = n.cells.per.location,
               detection_alpha = detection.alpha, device = device, key_added = key)
  if (!is.null(max.epochs)) args$max_epochs <- max.epochs
  if (!is.null(reference.max.epochs)) args$reference_max_epochs <- reference.max.epochs

  ref_py <- NULL
  if (inherits(reference, "Seurat")) {
    .check_reference_labels(reference, reference.labels)
    ref_py <- .job_anndata(reference, assay = reference.assay, layer = "counts", arg = "reference")
    args$labels_key <- reference.labels
  } else if (is.matrix(reference) || is.data.frame(reference) || inherits(reference, "Matrix")) {
    args$signatures <- .py_signatures(reference)
  } else if (is.character(reference) && length(reference) == 1L && dir.exists(reference)) {
    args$reference_model_path <- normalizePath(reference)
  } else {
    stop("reference must be a Seurat object (with reference.labels), a genes x cell types matrix/data.frame ",
         "of signatures, or the directory of a saved cell2location RegressionModel; got ",
         paste(class(reference), collapse = "/"), ".", call. = FALSE)
  }

  sp_py <- .job_anndata(object, assay = assay, layer = "counts", arg = "object")
  summary <- do.call(.engine_call, c(list("deconvolve", spatial = sp_py, reference = ref_py), args, dots, list(
    verbose = isTRUE(verbose), .convert = FALSE, .call = sys.call(),
    .arg_names = c(labels_key = "reference.labels", spatial = "object")
  )), quote = TRUE)  # quote: .call is a call, not to be evaluated

  # ---- pull results back (nothing is written into `object` until all is read) ----------
  item <- function(k) reticulate::py_get_item(summary, k)
  cell.types <- .py_strings(item("cell_types"))
  quantiles <- .py_strings(item("quantiles"))
  mats <- list()
  for (q in quantiles) {
    m <- .py_obsm(sp_py, paste0(key, "_", q))
    colnames(m) <- cell.types
    mats[[q]] <- m[colnames(object), , drop = FALSE]
  }
  features <- gsub("_", "-", cell.types, fixed = TRUE)
  if (anyDuplicated(features)) features <- make.unique(features)
  tmat <- function(m) {
    m <- t(m)
    rownames(m) <- features
    m
  }
  a <- .create_assay(data = tmat(mats[["mean"]]))  # Assay5 under SeuratObject 5
  SeuratObject::Key(a) <- paste0(gsub("[^[:alnum:]]", "", key), "_")
  a@misc <- c(lapply(mats[setdiff(names(mats), "mean")], tmat),
              list(cell.types = cell.types, method = method, pybridge.deconvolution = TRUE))

  meta <- as.data.frame(mats[[quantile]], check.names = FALSE)
  colnames(meta) <- .deconv_columns(method, quantile, cell.types)

  params <- reticulate::py_to_r(item("params"))
  history <- lapply(reticulate::py_to_r(item("history")), as.numeric)
  info <- list(
    method = method, params = params, cell.types = cell.types, genes = .py_strings(item("genes")),
    signatures = .py_df(item("signatures")), quantiles = quantiles,
    meta.data.columns = stats::setNames(colnames(meta), cell.types),
    assay = key, history = history, seconds = reticulate::py_to_r(item("seconds"))
  )
  for (k in c("detection_mean", "scale", "n_reference_genes_after_filter")) {
    if (reticulate::py_to_r(summary$`__contains__`(k))) info[[k]] <- reticulate::py_to_r(item(k))
  }

  object[[key]] <- a
  object <- SeuratObject::AddMetaData(object, meta)
  SeuratObject::Misc(object, slot = key) <- info
  object <- Seurat::LogSeuratCommand(object = object)
  object
}

# Spot coordinates: image, then meta.data x/y, then a "spatial" reduction.
.spot_coordinates <- function(object, image = NULL) {
  imgs <- SeuratObject::Images(object)
  if (!is.null(image) || length(imgs)) {
    image <- image %||% imgs[1]
    if (!image %in% imgs) stop("image '", image, "' not found. Images: ", paste(imgs, collapse = ", "), call. = FALSE)
    xy <- SeuratObject::GetTissueCoordinates(object[[image]])
    if (all(c("imagerow", "imagecol") %in% colnames(xy))) {
      return(data.frame(x = xy$imagecol, y = -xy$imagerow, row.names = rownames(xy)))
    }
    num <- vapply(xy, is.numeric, logical(1))
    xy <- xy[, num, drop = FALSE]
    if (all(c("x", "y") %in% colnames(xy))) return(data.frame(x = xy$x, y = xy$y, row.names = rownames(xy)))
    return(data.frame(x = xy[[1]], y = xy[[2]], row.names = rownames(xy)))
  }
  md <- object[[]]
  if (all(c("x", "y") %in% colnames(md)) && is.numeric(md$x) && is.numeric(md$y)) {
    return(data.frame(x = md$x, y = md$y, row.names = rownames(md)))
  }
  if ("spatial" %in% SeuratObject::Reductions(object)) {
    e <- SeuratObject::Embeddings(object, "spatial")
    return(data.frame(x = e[, 1], y = e[, 2], row.names = rownames(e)))
  }
  stop("no spot coordinates: the object has no image, no numeric meta.data columns 'x' and 'y', ",
       "and no 'spatial' reduction.", call. = FALSE)
}

#' Plot cell-type abundances on the spot coordinates
#'
#' Draws the abundances estimated by [Deconvolve()] on the spots, one panel per cell type
#' (ggplot2). Coordinates come from the object's image when it has one
#' ([SeuratObject::GetTissueCoordinates()]), else from numeric meta.data columns `x` and `y`,
#' else from a reduction named `"spatial"`. To draw over the tissue image, use
#' [Seurat::SpatialFeaturePlot()] with the meta.data columns Deconvolve() adds (e.g.
#' `"c2l.q05.B"`).
#'
#' @param object A Seurat object after [Deconvolve()].
#' @param cell.types Cell types to draw (original names such as `"B_Plasma"` or assay feature
#'   names such as `"B-Plasma"`); default all.
#' @param quantity `"q05"`, `"mean"`, `"q95"` or `"proportions"` (default: `"q05"` for
#'   cell2location, `"mean"` for NNLS).
#' @param key Assay written by Deconvolve() (default: `"cell2location"`, or the only
#'   deconvolution assay present, e.g. `"nnls"`).
#' @param image Image to take coordinates from (default: the first, if any).
#' @param pt.size Point size.
#' @param ncol Number of panel columns.
#' @param combine `TRUE`: one faceted plot with a shared colour scale; `FALSE`: a list of
#'   plots, one per cell type, each with its own scale.
#' @return A ggplot object (or a list of them when `combine = FALSE`).
#' @importFrom ggplot2 .data
#' @md
#' @export
SpatialAbundancePlot <- function(object, cell.types = NULL, quantity = NULL, key = NULL, image = NULL,
                                 pt.size = 1.2, ncol = NULL, combine = TRUE) {
  have <- Filter(function(a) isTRUE(methods::slot(object[[a]], "misc")$pybridge.deconvolution),
                 SeuratObject::Assays(object))
  if (is.null(key)) key <- if ("cell2location" %in% have || length(have) != 1L) "cell2location" else have
  if (!key %in% have) {
    stop("no assay '", key, "' from Deconvolve(). Deconvolution assays present: ",
         if (length(have)) paste(have, collapse = ", ") else "(none; run Deconvolve() first)", ".", call. = FALSE)
  }
  a <- object[[key]]
  quantity <- quantity %||% if (identical(a@misc$method, "nnls")) "mean" else "q05"
  quantity <- match.arg(quantity, c("q05", "mean", "q95", "proportions"))
  m <- if (quantity == "mean") as.matrix(.assay_get_layer(a, "data")) else a@misc[[quantity]]
  if (is.null(m)) {
    stop("quantity '", quantity, "' is not stored for '", key, "' (", a@misc$method, " gives: mean, ",
         paste(setdiff(names(a@misc), c("cell.types", "method", "pybridge.deconvolution")), collapse = ", "), ").",
         call. = FALSE)
  }
  m <- as.matrix(m)
  types <- a@misc$cell.types %||% rownames(m)
  features <- rownames(m)
  if (is.null(cell.types)) cell.types <- types
  idx <- ifelse(cell.types %in% types, match(cell.types, types), match(cell.types, features))
  if (anyNA(idx)) {
    stop("cell type(s) not found: ", paste(cell.types[is.na(idx)], collapse = ", "), ". Cell types: ",
         paste(types, collapse = ", "), ".", call. = FALSE)
  }
  xy <- .spot_coordinates(object, image)
  spots <- intersect(rownames(xy), colnames(m))
  if (!length(spots)) stop("the coordinates and the abundances share no spot names.", call. = FALSE)
  long <- do.call(rbind, lapply(idx, function(i) {
    data.frame(x = xy[spots, "x"], y = xy[spots, "y"], value = as.numeric(m[i, spots]),
               cell.type = types[i], stringsAsFactors = FALSE)
  }))
  long$cell.type <- factor(long$cell.type, levels = types[idx])
  label <- if (quantity == "proportions") "proportion" else paste0("cells (", quantity, ")")
  one <- function(d, title = NULL) {
    p <- ggplot2::ggplot(d, ggplot2::aes(x = .data$x, y = .data$y, colour = .data$value)) +
      ggplot2::geom_point(size = pt.size) +
      ggplot2::scale_colour_viridis_c(name = label) +
      ggplot2::coord_fixed() +
      ggplot2::theme_void() +
      ggplot2::theme(strip.text = ggplot2::element_text(face = "bold"))
    if (!is.null(title)) p <- p + ggplot2::ggtitle(title)
    p
  }
  if (!combine) {
    return(stats::setNames(lapply(levels(long$cell.type), function(t) one(long[long$cell.type == t, ], t)),
                           levels(long$cell.type)))
  }
  one(long) + ggplot2::facet_wrap(~cell.type, ncol = ncol)
}
