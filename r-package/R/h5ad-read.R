# Reading h5ad files from R without Python: anndata's encodings (element readers) and the file ->
# parts mapping, the reverse of h5ad-write.R: an h5ad becomes the parts that
# pybridge.io.anndata_to_parts() returns for the same AnnData, assembled by .seurat_from_parts()
# (the function as.Seurat() uses). Keys from the shared table .h5ad_layout (h5ad-layout.R).

# Read an h5ad into the parts that pybridge.io.anndata_to_parts() returns (see there).
.h5ad_to_parts <- function(file, X.layer = NULL) {
  h5 <- .h5ad_open(file)
  on.exit(.h5_close(h5))
  ctx <- list(file = file)
  for (k in c("obs", "var")) {
    if (!.h5ad_exists(h5, k)) .h5ad_fail(ctx, paste0("/", k), "is missing: this is not an AnnData h5ad file (or it is truncated).")
  }
  read <- function(path) .h5ad_read_elem(h5, path, ctx)
  kids <- function(path) {
    if (!.h5ad_exists(h5, path)) return(character(0))
    o <- .h5_open(h5, path, ctx)
    on.exit(o$close())
    .h5_children(o)
  }
  report <- character(0)
  uns <- if (.h5ad_exists(h5, "uns")) read("uns") else list()
  meta <- uns[[.h5ad_layout$meta]]
  if (!is.list(meta) || inherits(meta, "h5ad_df")) meta <- list()
  obs <- .h5ad_read_df(h5, "obs", ctx)
  var <- .h5ad_read_df(h5, "var", ctx)
  cells <- obs$index
  features <- var$index
  n_obs <- length(cells)
  n_vars <- length(features)
  check_shape <- function(el, path, shape) {
    s <- if (inherits(el, "h5ad_sparse") || inherits(el, "h5ad_dense")) el$shape else NULL
    if (!is.null(s) && !isTRUE(all(as.numeric(s)[seq_along(shape)] == shape))) {
      .h5ad_fail(ctx, path, sprintf("has shape (%s); expected (%s) from obs and var.",
                                    paste(s, collapse = ", "), paste(shape, collapse = ", ")))
    }
    el
  }
  X <- if (.h5ad_exists(h5, "X")) check_shape(read("X"), "/X", c(n_obs, n_vars)) else NULL
  layer_names <- kids("layers")

  X_layer <- X.layer
  if (is.null(X_layer)) X_layer <- as.character(meta$X_layer %||% "")
  if (!length(X_layer) || !nzchar(X_layer)) {
    X_layer <- if (!"counts" %in% layer_names && !is.null(X) && .h5ad_is_counts(X)) "counts" else "data"
  }
  if (!X_layer %in% c("counts", "data", "scale.data")) {
    stop("X.layer must be 'counts', 'data' or 'scale.data', got '", X_layer, "'.", call. = FALSE)
  }

  layers <- list()
  extra_layers <- list()
  sfeat <- NULL
  if (!is.null(X)) layers[[X_layer]] <- .h5ad_matrix_parts(X, TRUE, ctx, "/X")
  rm(X)
  for (name in layer_names) {
    path <- paste0("/layers/", name)
    if (name %in% c("counts", "data")) {
      if (!is.null(layers[[name]])) {
        report <- c(report, sprintf("layers['%s'] not carried: X already fills Seurat's '%s' layer", name, name))
        next
      }
      layers[[name]] <- .h5ad_matrix_parts(check_shape(read(path), path, c(n_obs, n_vars)), TRUE, ctx, path)
    } else if (name == .h5ad_layout$scale_data) {
      el <- check_shape(read(path), path, c(n_obs, n_vars))
      sfeat <- if (!is.null(meta$scale_data_features)) as.character(meta$scale_data_features) else features
      pos <- match(sfeat, features)
      sfeat <- sfeat[!is.na(pos)]
      pos <- pos[!is.na(pos)]
      v <- if (inherits(el, "h5ad_dense")) el$value else t(.h5ad_dense_rows(el))
      storage.mode(v) <- "double"
      layers[[.h5ad_layout$scale_data]] <- list(dense = v[pos, , drop = FALSE])
    } else {
      extra_layers[[name]] <- .h5ad_matrix_parts(check_shape(read(path), path, c(n_obs, n_vars)), TRUE, ctx, path)
      report <- c(report, sprintf("layers['%s'] became its own assay '%s' (a Seurat v4 assay has only counts/data/scale.data)", name, name))
    }
  }
  if (.h5ad_exists(h5, "raw") && .h5ad_exists(h5, "raw/X")) {
    raw_var <- .h5ad_read_df(h5, "raw/var", ctx)
    rawX <- check_shape(read("raw/X"), "/raw/X", c(n_obs, length(raw_var$index)))
    if (is.null(layers$counts) && identical(raw_var$index, features)) {
      layers$counts <- .h5ad_matrix_parts(rawX, TRUE, ctx, "/raw/X")
      report <- c(report, "raw.X became the 'counts' layer")
    } else {
      extra_layers$raw <- c(.h5ad_matrix_parts(rawX, TRUE, ctx, "/raw/X"), list(features = as.list(raw_var$index)))
      report <- c(report, "raw became its own assay 'raw'")
    }
    rm(rawX)
  }

  reductions <- list()
  red_meta <- if (is.list(meta$reductions)) meta$reductions else list()
  assays_obsm <- as.character(unlist(meta$assays_in_obsm))
  assays_from_obsm <- list()
  varm_names <- kids("varm")
  for (key in kids("obsm")) {
    path <- paste0("/obsm/", key)
    el <- read(path)
    if (inherits(el, "h5ad_df")) {
      isnum <- vapply(el$columns, function(v) (is.numeric(v) || is.logical(v)) && !is.factor(v), logical(1))
      if (key %in% assays_obsm || all(isnum)) {
        m <- if (length(el$columns)) do.call(rbind, lapply(el$columns, as.double)) else matrix(0, 0, n_obs)
        m <- methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix")
        assays_from_obsm[[key]] <- list(sparse = list(x = m@x, i = m@i, p = m@p, dim = dim(m)),
                                        features = as.list(names(el$columns)))
        if (!key %in% assays_obsm) report <- c(report, sprintf("obsm['%s'] (a DataFrame) became assay '%s'", key, key))
      } else {
        report <- c(report, sprintf("obsm['%s'] is a DataFrame with non-numeric columns; not carried", key))
      }
      next
    }
    name <- .h5ad_reduction_name(key)
    emb <- .h5ad_dense_rows(el)
    rm(el)
    if (is.null(emb)) {
      report <- c(report, sprintf("obsm['%s'] is not a numeric matrix; not carried", key))
      next
    }
    if (nrow(emb) != n_obs) .h5ad_fail(ctx, path, sprintf("has %d rows; expected %d (n_obs).", nrow(emb), n_obs))
    info <- if (is.list(red_meta[[name]])) red_meta[[name]] else list()
    r <- list(embeddings = emb, key = as.character(info$key %||% ""), assay = as.character(info$assay %||% ""),
              global = isTRUE(as.logical(info$global)))
    if (!is.null(info$stdev)) r$stdev <- .np(as.double(info$stdev))
    vkey <- .h5ad_varm_key(name)
    load <- if (vkey %in% varm_names) .h5ad_dense_rows(read(paste0("/varm/", vkey))) else NULL
    if (!is.null(load) && ncol(load) == ncol(emb) && nrow(load) == n_vars) {
      lf <- if (!is.null(info$loadings_features)) as.character(info$loadings_features) else
        features[rowSums(load != 0) > 0]
      pos <- match(lf, features)
      if (anyNA(pos)) {  # files that named loadings features with Seurat's '-' for '_'
        pos2 <- match(lf, gsub("_", "-", features, fixed = TRUE))
        lf[is.na(pos) & !is.na(pos2)] <- features[pos2[is.na(pos) & !is.na(pos2)]]
        pos[is.na(pos)] <- pos2[is.na(pos)]
      }
      lf <- lf[!is.na(pos)]
      r$loadings <- load[pos[!is.na(pos)], , drop = FALSE]
      r$loadings_features <- as.list(lf)
    }
    pv <- .h5ad_layout$pca_variance
    if (name == pv[1] && is.null(r$stdev) && is.list(uns[[pv[1]]]) && !is.null(uns[[pv[1]]][[pv[2]]])) {
      r$stdev <- .np(sqrt(as.double(uns[[pv[1]]][[pv[2]]])))
    }
    reductions[[name]] <- r
  }
  used_varm <- vapply(names(reductions), .h5ad_varm_key, "")
  for (k in setdiff(varm_names, used_varm)) {
    report <- c(report, sprintf("varm['%s'] has no matching reduction (obsm['X_...']); not carried", k))
  }

  graphs <- list()
  for (key in kids("obsp")) {
    path <- paste0("/obsp/", key)
    el <- check_shape(read(path), path, c(n_obs, n_obs))
    if (inherits(el, "h5ad_dense")) {
      m <- methods::as(methods::as(t(el$value), "CsparseMatrix"), "generalMatrix")
      graphs[[key]] <- list(x = m@x, i = m@i, p = m@p, dim = dim(m))
    } else {
      graphs[[key]] <- .h5ad_matrix_parts(el, transpose = FALSE, ctx, path)$sparse
    }
  }

  generated <- as.character(unlist(meta$uns_generated))
  uns_keep <- uns[setdiff(names(uns), c(.h5ad_layout$meta, generated))]
  r <- .h5ad_uns_to_misc(uns_keep, "uns", report)
  misc <- r$value %||% list()
  report <- r$report

  idents <- NULL
  if (is.list(meta$idents) && !is.null(meta$idents$codes)) {
    idents <- list(kind = "factor", values = .np(as.integer(meta$idents$codes)),
                   levels = as.list(as.character(meta$idents$levels)), ordered = FALSE)
  }

  hv <- NULL
  hvcol <- var$columns[[.h5ad_layout$highly_variable]]
  if (!is.null(hvcol) && is.logical(hvcol)) {
    hv <- features[!is.na(hvcol) & hvcol]
    recorded <- meta$variable_features
    if (!is.null(recorded) && setequal(as.character(recorded), hv) && length(recorded) == length(hv)) {
      hv <- as.character(recorded)
    }
    hv <- as.list(hv)
  }
  if (!is.null(meta$variable_features) && !is.null(hvcol)) var$columns[[.h5ad_layout$highly_variable]] <- NULL
  obs_parts <- .h5ad_df_parts(obs)
  var_parts <- .h5ad_df_parts(var)
  report <- c(report, obs_parts$notes, var_parts$notes)
  obs_parts$notes <- NULL
  var_parts$notes <- NULL
  list(
    cells = as.list(cells), features = as.list(features), assay = as.character(meta$assay %||% "RNA"),
    X_layer = X_layer, layers = layers, scale_data_features = if (!is.null(sfeat)) as.list(sfeat),
    extra_layers = extra_layers, obs = obs_parts, var = var_parts, variable_features = hv,
    reductions = reductions, graphs = graphs, misc = misc, assays_from_obsm = assays_from_obsm,
    idents = idents, assay_class = meta$assay_class, split = meta$split, report = as.list(report)
  )
}

#' Read an h5ad file into a Seurat object (no Python needed)
#'
#' Reads an AnnData `.h5ad` file (anndata >= 0.8 on-disk format, e.g. from scanpy, anndata
#' 0.12, or [WriteH5AD()]) with hdf5r and builds a Seurat object with the same mapping as
#' `as.Seurat()` on an in-memory AnnData: `X` becomes the `counts` layer when it holds
#' non-negative integers (else `data`), `layers$counts`/`data`/`scale.data` fill those layers,
#' other layers and `raw` become assays, `obs` -> meta.data (categoricals -> factors with
#' levels, order and ordered flag; nullable integer/boolean/string -> NA kept), `var` ->
#' meta.features and VariableFeatures (`highly_variable`), `obsm$X_<name>` -> DimReduc `<name>`
#' (loadings from `varm`, keys and stdev from `uns$pybridge`), `obsm` data frames -> assays,
#' `obsp` -> Graphs, `uns` -> Misc. Seurat replaces `_` by `-` in feature names; the originals
#' are kept in the assay's misc (and restored by [WriteH5AD()]).
#'
#' Encodings read: csr_matrix, csc_matrix, array, string-array, dataframe, categorical,
#' nullable-integer, nullable-boolean, nullable-string-array, dict, numeric-scalar, string,
#' null, rec-array, raw. Any other encoding, a truncated or corrupt file give an error naming
#' the file and the element.
#'
#' @param file Path of an `.h5ad` file.
#' @param assay Name of the assay to create (default: the one recorded by pybridge, else `"RNA"`).
#' @param X.layer Seurat layer that receives `X`: `"counts"`, `"data"`, or `NULL` (the recorded
#'   one, else `"counts"` when `X` holds non-negative integers and there is no
#'   `layers/counts`, else `"data"`).
#' @param verbose Print what could not be carried.
#' @param ... Unused.
#' @return A Seurat object (features x cells).
#' @seealso [WriteH5AD()], [as.Seurat.anndata._core.anndata.AnnData()]
#' @export
ReadH5AD <- function(file, assay = NULL, X.layer = NULL, verbose = TRUE, ...) {
  parts <- .h5ad_to_parts(file, X.layer = X.layer)
  tryCatch(.seurat_from_parts(parts, assay = assay, verbose = verbose),
           error = function(e) stop(file, ": ", conditionMessage(e), call. = FALSE))
}
