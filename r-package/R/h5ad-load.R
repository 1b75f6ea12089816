# An h5ad file read into R as anndata reads it (anndata.read_h5ad): list(obs, var, X, layers,
# obsm, varm, obsp, varp, uns, raw) of the values h5ad-elements.R returns, whatever wrote the file.
# The older layouts become the current one as anndata's own reader makes them: anndata <= 0.6
# kept raw in `raw.X` / `raw.var` / `raw.varm`, obsm as one compound dataset, and categoricals as
# codes with their categories in `uns/<col>_categories` (anndata's _clean_uns). Shapes are
# checked against obs and var; files that cannot become a Seurat object are refused here with
# a message saying why.

.h5ad_open <- function(file) {
  if (!is.character(file) || length(file) != 1L || is.na(file)) stop("`file` must be one file path.", call. = FALSE)
  if (!file.exists(file)) stop("file '", file, "' does not exist.", call. = FALSE)
  if (dir.exists(file)) stop("'", file, "' is a directory, not an .h5ad file.", call. = FALSE)
  tryCatch(.h5r_open(file), error = function(e) {
    stop("'", file, "' could not be opened as an HDF5 (.h5ad) file (truncated, corrupt or not HDF5?): ",
         .h5ad_cond_msg(e), call. = FALSE)
  })
}

.h5ad_check_shape <- function(el, path, shape, ctx) {
  s <- if (inherits(el, "h5ad_sparse") || inherits(el, "h5ad_dense")) el$shape else
    if (inherits(el, "h5ad_df")) length(el$index) else NULL
  if (!is.null(s) && !isTRUE(all(as.numeric(s)[seq_along(shape)] == shape))) {
    .h5ad_fail(ctx, path, sprintf("has shape (%s); expected (%s) from obs and var.",
                                  paste(s, collapse = ", "), paste(shape, collapse = ", ")))
  }
  el
}

# The elements of a group (a dict of the file) read one by one; `each` gets (element, path).
.h5ad_group <- function(h5, path, ctx, each = function(el, p) el) {
  info <- .h5_info(h5, path, ctx, must = FALSE)
  if (info$kind == "missing") return(list())
  if (info$kind == "dataset" && identical(info$class, "compound")) {  # anndata <= 0.6: one table
    v <- .h5ad_read_elem(h5, path, ctx, info)$value
    out <- list()
    for (k in names(v)) {
      x <- v[[k]]
      if (is.null(dim(x))) x <- matrix(x, ncol = 1L)
      out[[k]] <- each(structure(list(value = t(x), shape = dim(x)), class = "h5ad_dense"), paste0(path, "/", k))
    }
    return(out)
  }
  if (info$kind != "group") .h5ad_fail(ctx, path, "is not a group.")
  out <- list()
  for (k in info$children) {
    p <- paste0(path, "/", k)
    out[k] <- list(each(.h5ad_read_elem(h5, p, ctx), p))
  }
  out
}

.h5ad_load <- function(file) {
  h5 <- .h5ad_open(file)
  on.exit(.h5_close(h5))
  .h5ad_load_group(h5, list(file = file))
}

# The AnnData stored at `prefix` of an open file ("" for an h5ad, "mod/<name>/" for a modality
# of an h5mu).
.h5ad_load_group <- function(h5, ctx, prefix = "") {
  P <- function(k) paste0(prefix, k)
  root <- .h5_info(h5, if (nzchar(prefix)) sub("/$", "", prefix) else "/", ctx)
  for (k in c("obs", "var")) {
    if (!k %in% root$children) .h5ad_fail(ctx, P(k), "is missing: this is not an AnnData h5ad file (or it is truncated).")
  }
  obs <- .h5ad_read_df(h5, P("obs"), ctx)
  var <- .h5ad_read_df(h5, P("var"), ctx)
  n_obs <- length(obs$index)
  n_vars <- length(var$index)
  where <- if (nzchar(prefix)) paste0(ctx$file, " (", sub("/$", "", prefix), ")") else ctx$file
  if (n_obs == 0L) {
    stop(where, ": the AnnData has 0 cells (n_obs = 0); a Seurat object needs at least one cell.", call. = FALSE)
  }
  if (n_vars == 0L) {
    stop(where, ": the AnnData has 0 features (n_vars = 0); a Seurat assay needs at least one.", call. = FALSE)
  }
  cells_by <- function(k) function(el, p) .h5ad_check_shape(el, p, k, ctx)
  ad <- list(file = ctx$file, obs = obs, var = var, n_obs = n_obs, n_vars = n_vars)
  ad$X <- if ("X" %in% root$children) .h5ad_check_shape(.h5ad_read_elem(h5, P("X"), ctx), P("X"), c(n_obs, n_vars), ctx)
  ad$layers <- .h5ad_group(h5, P("layers"), ctx, cells_by(c(n_obs, n_vars)))
  ad$obsm <- .h5ad_group(h5, P("obsm"), ctx, cells_by(n_obs))
  ad$varm <- .h5ad_group(h5, P("varm"), ctx, cells_by(n_vars))
  ad$obsp <- .h5ad_group(h5, P("obsp"), ctx, cells_by(c(n_obs, n_obs)))
  ad$varp <- .h5ad_group(h5, P("varp"), ctx, cells_by(c(n_vars, n_vars)))
  ad$uns <- if ("uns" %in% root$children) .h5ad_read_elem(h5, P("uns"), ctx) else list()
  raw <- if ("raw" %in% root$children) "raw/" else if ("raw.X" %in% root$children) "raw." else NULL
  if (!is.null(raw)) {  # anndata >= 0.7: group raw/{X, var, varm}; <= 0.6: raw.X, raw.var, raw.varm
    rp <- function(k) P(paste0(raw, k))
    if (.h5ad_exists(h5, rp("X"))) {
      rv <- .h5ad_read_df(h5, rp("var"), ctx)
      ad$raw <- list(var = rv, X = .h5ad_check_shape(.h5ad_read_elem(h5, rp("X"), ctx), rp("X"), c(n_obs, length(rv$index)), ctx))
    }
  }
  .h5ad_clean_legacy(ad)
}

# anndata <= 0.6 kept the categories of a categorical obs / var column in uns/<col>_categories and
# the column as its codes; anndata's reader (_clean_uns) turns them back into categoricals.
.h5ad_clean_legacy <- function(ad) {
  for (key in grep("_categories$", names(ad$uns), value = TRUE)) {
    cats <- ad$uns[[key]]
    if (!is.atomic(cats) || is.null(cats)) next
    col <- sub("_categories$", "", key)
    used <- FALSE
    for (axis in c("obs", "var")) {
      codes <- ad[[axis]]$columns[[col]]
      if (is.null(codes) || is.factor(codes) || !is.numeric(codes) || any(codes >= length(cats), na.rm = TRUE)) next
      ad[[axis]]$columns[[col]] <- .h5ad_factor(codes, as.character(cats), FALSE, list(file = ad$file), paste0(axis, "/", col))
      attr(ad[[axis]]$columns[[col]], "pybridge_note") <- NULL
      used <- TRUE
    }
    if (used) ad$uns[[key]] <- NULL
  }
  .h5ad_move_adj(ad)
}

# anndata < 0.7 kept the neighbour graphs in uns['neighbors']; anndata's reader moves them to obsp
# (anndata.compat._move_adj_mtx).
.h5ad_move_adj <- function(ad) {
  nb <- ad$uns$neighbors
  if (!is.list(nb) || inherits(nb, "h5ad_df")) return(ad)
  for (k in c("distances", "connectivities")) {
    el <- nb[[k]]
    if ((inherits(el, "h5ad_sparse") || inherits(el, "h5ad_dense")) && length(el$shape) == 2L && is.null(ad$obsp[[k]])) {
      ad$obsp[[k]] <- .h5ad_check_shape(el, paste0("uns/neighbors/", k), c(ad$n_obs, ad$n_obs), list(file = ad$file))
      ad$uns$neighbors[[k]] <- NULL
    }
  }
  ad
}
