# Reading h5ad files from R without Python: the file read as anndata reads it (h5ad-load.R) becomes
# the parts that pybridge.io.anndata_to_parts() returns for the same AnnData (the same rules, keys
# from the shared table .h5ad_layout), assembled by .seurat_from_parts() (the function as.Seurat()
# uses). Files written by other tools follow their conventions where the table names them
# (zellkonverter: uns['X_name'], `logcounts`, DataFrame embeddings).

# A dgCMatrix from CSC arrays, built without Matrix's validity method (an O(nnz) R-level pass)
# after one C pass (src/h5io.c: pyb_csc_check); non-canonical input (unsorted or duplicated
# indices, which scipy allows) is sorted and summed as scipy's sum_duplicates() does.
.h5ad_dgc <- function(x, i, p, dims, ctx = NULL, path = "") {
  if (length(x) > .Machine$integer.max) {
    stop("the matrix has ", format(length(x), big.mark = ","), " non-zeros; an R dgCMatrix holds at most 2^31-1.", call. = FALSE)
  }
  if (!is.integer(i)) i <- as.integer(i)
  if (!is.integer(p)) p <- as.integer(p)
  dims <- as.integer(dims)
  status <- .Call(pyb_csc_check, i, p, dims[1])
  if (status == 2L) .h5ad_fail(ctx %||% list(file = "h5ad"), path, "has indices out of range or an invalid indptr (file corrupt?).")
  if (status == 1L) {
    m <- Matrix::sparseMatrix(i = i, p = p, x = x, dims = dims, index1 = FALSE, repr = "C")
    return(methods::as(m, "generalMatrix"))
  }
  .dgc_checked(list(x = x, i = i, p = p, dim = dims))
}

# A dgCMatrix from sparse parts already checked (.h5ad_dgc; .h5ad_read_sparse checked the lengths):
# slots set directly, without new()'s validity method (0.25 s for 1e8 non-zeros, measured), for
# the parts .h5ad_matrix_parts() marks and .matrix_from_parts() builds.
.dgc_checked <- function(s) {
  m <- methods::new("dgCMatrix")
  m@Dim <- as.integer(s$dim)
  m@p <- s$p
  m@i <- s$i
  m@x <- s$x
  m
}

# An element read from the file -> matrix parts in R orientation (pybridge/io/_parts.py:
# matrix_to_parts): transpose = TRUE gives the transpose of the AnnData matrix (cells x genes ->
# genes x cells: a CSR's arrays are reused as they are), FALSE the matrix itself.
.h5ad_matrix_parts <- function(el, transpose = TRUE, ctx = NULL, path = "") {
  if (inherits(el, "h5ad_sparse")) {
    shape <- el$shape
    direct <- (el$format == "csr") == transpose
    dims <- if (el$format == "csr") rev(shape) else shape
    m <- .h5ad_dgc(el$data, el$indices, el$indptr, dims, ctx, path)
    if (!direct) m <- Matrix::t(m)
    return(list(sparse = structure(list(x = m@x, i = m@i, p = m@p, dim = dim(m)), pybridge_checked = TRUE)))
  }
  if (inherits(el, "h5ad_dense")) {
    v <- el$value
    if (length(dim(v)) != 2L) .h5ad_fail(ctx, path, "is not a 2-d array.")
    if (!is.numeric(v) && !is.logical(v)) .h5ad_fail(ctx, path, "is not a numeric matrix.")
    storage.mode(v) <- "double"
    return(list(dense = if (transpose) v else t(v)))
  }
  .h5ad_fail(ctx, path, "is not a matrix (expected a csr_matrix, csc_matrix or 2-d array).")
}

# Non-negative integers (pybridge/io/_bridge.py: _is_counts); NaN / Inf are not counts.
.h5ad_is_counts <- function(el) {
  v <- if (inherits(el, "h5ad_sparse")) el$data else el$value
  v <- as.vector(v[seq_len(min(length(v), 1e6))])
  length(v) == 0L || (is.numeric(v) && all(is.finite(v)) && all(v >= 0) && all(abs(v - round(v)) < 1e-8))
}

# A dense cells x k matrix from an obsm/varm element (NULL when not numeric).
.h5ad_dense_rows <- function(el) {
  if (inherits(el, "h5ad_sparse")) {
    p <- .h5ad_matrix_parts(el, transpose = FALSE)$sparse
    return(as.matrix(.h5ad_dgc(p$x, p$i, p$p, p$dim)))
  }
  if (inherits(el, "h5ad_dense")) {
    v <- el$value
    if (length(dim(v)) != 2L || !(is.numeric(v) || is.logical(v))) return(NULL)
    v <- t(v)
    storage.mode(v) <- "double"
    return(v)
  }
  NULL
}

# uns values -> misc (pybridge/io/_bridge.py: _uns_to_r, as .misc_from_py() expects them).
.h5ad_uns_to_misc <- function(x, path, report) {
  if (inherits(x, "h5ad_df")) {
    p <- .h5ad_df_parts(x)
    p$notes <- NULL
    return(list(value = list(`__pybridge_dataframe__` = p), report = report))
  }
  if (inherits(x, "h5ad_sparse")) {
    return(list(value = list(sparse_matrix = .h5ad_matrix_parts(x, transpose = FALSE)$sparse), report = report))
  }
  if (inherits(x, "h5ad_dense")) {
    v <- x$value
    return(list(value = if (length(dim(v)) == 2L) t(v) else aperm(v), report = report))
  }
  if (inherits(x, "h5ad_recarray")) {  # a table (e.g. rank_genes_groups): a data.frame
    cols <- Filter(function(v) !is.null(v) && is.null(dim(v)), x$value)
    n <- if (length(cols)) length(cols[[1]]) else 0L
    return(list(value = list(`__pybridge_dataframe__` = .h5ad_df_parts(
      list(index = as.character(seq_len(n) - 1L), columns = cols, notes = NULL))), report = report))
  }
  if (is.list(x)) {
    out <- list()
    for (k in names(x)) {
      r <- .h5ad_uns_to_misc(x[[k]], paste0(path, "/", k), report)
      report <- r$report
      if (!is.null(r$value)) out[[k]] <- r$value
    }
    return(list(value = out, report = report))
  }
  if (is.null(x)) return(list(value = NULL, report = report))
  if (is.atomic(x)) return(list(value = x, report = report))
  list(value = NULL, report = c(report, sprintf("uns entry '%s' (%s) has no R representation; not carried",
                                                 path, paste(class(x), collapse = "/"))))
}

# Names that collide with `taken` get `suffix` (noted; the notes ride along as attribute "report").
.h5ad_unique <- function(nms, taken, suffix, what, report) {
  nms <- as.character(nms)
  for (j in seq_along(nms)) {
    if (nms[j] %in% taken) {
      new <- make.unique(c(taken, nms[-j], paste0(nms[j], suffix)))[length(taken) + length(nms)]
      report <- c(report, sprintf("%s['%s'] became '%s' (the name is taken by an assay or reduction)", what, nms[j], new))
      nms[j] <- new
    }
  }
  structure(nms, report = report)
}

# Read an h5ad into the parts that pybridge.io.anndata_to_parts() returns (see there).
.h5ad_to_parts <- function(file, X.layer = NULL) .h5ad_adata_parts(.h5ad_load(file), X.layer = X.layer)

.h5ad_adata_parts <- function(ad, X.layer = NULL) {
  ctx <- list(file = ad$file)
  L <- .h5ad_layout
  uns <- ad$uns
  meta <- uns[[L$meta]]
  if (!is.list(meta) || inherits(meta, "h5ad_df")) meta <- list()
  report <- character(0)
  features <- ad$var$index
  cells <- ad$obs$index
  zk <- .h5ad_zellkonverter(ad, meta)  # NULL, or the X_name of a file written by zellkonverter
  aliases <- unlist(L$layer_aliases)   # logcounts -> data
  layer_names <- names(ad$layers)
  target <- function(name) if (name %in% names(aliases)) aliases[[name]] else name

  X_layer <- X.layer
  if (is.null(X_layer)) X_layer <- as.character(meta$X_layer %||% "")
  if ((!length(X_layer) || !nzchar(X_layer)) && !is.null(zk) && target(zk) %in% c("counts", "data")) X_layer <- target(zk)
  if (!length(X_layer) || !nzchar(X_layer)) {
    X_layer <- if (!"counts" %in% vapply(layer_names, target, "") && !is.null(ad$X) && .h5ad_is_counts(ad$X)) "counts" else "data"
  }
  if (!X_layer %in% L$seurat_layers) {
    stop("X.layer must be 'counts', 'data' or 'scale.data', got '", X_layer, "'.", call. = FALSE)
  }

  layers <- list()
  extra_layers <- list()
  sfeat <- NULL
  if (!is.null(ad$X)) layers[[X_layer]] <- .h5ad_matrix_parts(ad$X, TRUE, ctx, "/X")
  ad$X <- NULL
  for (name in layer_names) {
    path <- paste0("/layers/", name)
    el <- ad$layers[[name]]
    ad$layers[name] <- list(NULL)
    to <- target(name)
    if (to %in% c("counts", "data")) {
      if (!is.null(layers[[to]])) {
        report <- c(report, sprintf("layers['%s'] not carried: X already fills Seurat's '%s' layer", name, to))
        next
      }
      layers[[to]] <- .h5ad_matrix_parts(el, TRUE, ctx, path)
      if (to != name) report <- c(report, sprintf("layers['%s'] became the '%s' layer", name, to))
    } else if (name == L$scale_data) {
      r <- .h5ad_scale_data(el, meta, features)
      layers[[L$scale_data]] <- r$part
      sfeat <- r$features
    } else {
      extra_layers[[name]] <- .h5ad_matrix_parts(el, TRUE, ctx, path)
      report <- c(report, sprintf("layers['%s'] became its own assay '%s' (a Seurat v4 assay has only counts/data/scale.data)", name, name))
    }
  }
  if (!is.null(ad$raw)) {
    rawX <- ad$raw$X
    if (is.null(layers$counts) && identical(ad$raw$var$index, features)) {
      layers$counts <- .h5ad_matrix_parts(rawX, TRUE, ctx, "/raw/X")
      report <- c(report, "raw.X became the 'counts' layer")
    } else {
      extra_layers$raw <- c(.h5ad_matrix_parts(rawX, TRUE, ctx, "/raw/X"), list(features = as.list(ad$raw$var$index)))
      report <- c(report, "raw became its own assay 'raw'")
    }
    ad$raw <- NULL
  }
  if (!length(layers)) {  # anndata allows an AnnData without X or layers; a Seurat assay needs a matrix
    layers$counts <- list(sparse = list(x = numeric(0), i = integer(0), p = integer(length(cells) + 1L),
                                        dim = c(length(features), length(cells))))
    X_layer <- "counts"
    report <- c(report, "the file has no X and no layers: the assay's counts are an empty (all-zero) matrix")
    meta$X_absent <- TRUE
  }

  red <- .h5ad_reductions(ad, meta, uns, zk, ctx)
  report <- c(report, red$report)
  # Seurat keeps assays, reductions and graphs under one set of names: the later ones give way
  taken <- c(as.character(meta$assay %||% "RNA"), names(extra_layers), names(red$assays))
  rn <- .h5ad_unique(names(red$reductions), taken, "_obsm", "obsm", report)
  report <- attr(rn, "report")
  names(red$reductions) <- as.vector(rn)
  for (k in names(ad$varp)) {
    report <- c(report, sprintf("varp['%s'] (features x features) not carried: a Seurat assay has no place for it", k))
  }

  graphs <- list()
  gn <- .h5ad_unique(names(ad$obsp), c(taken, names(red$reductions)), "_obsp", "obsp", report)
  report <- attr(gn, "report")
  names(ad$obsp) <- as.vector(gn)
  for (key in names(ad$obsp)) {
    el <- ad$obsp[[key]]
    if (inherits(el, "h5ad_dense")) {
      m <- methods::as(methods::as(t(el$value), "CsparseMatrix"), "generalMatrix")
      graphs[[key]] <- list(x = m@x, i = m@i, p = m@p, dim = dim(m))
    } else {
      graphs[[key]] <- .h5ad_matrix_parts(el, transpose = FALSE, ctx, paste0("/obsp/", key))$sparse
    }
  }

  generated <- as.character(unlist(meta$uns_generated))
  drop <- c(L$meta, generated, if (!is.null(zk)) L$zellkonverter_x_name)
  r <- .h5ad_uns_to_misc(uns[setdiff(names(uns), drop)], "uns", report)
  misc <- r$value %||% list()
  report <- r$report
  if (isTRUE(meta$X_absent)) misc[[L$misc_x_absent]] <- TRUE

  idents <- NULL
  if (is.list(meta$idents) && !is.null(meta$idents$codes)) {
    idents <- list(kind = "factor", values = .np(as.integer(meta$idents$codes)),
                   levels = as.list(as.character(meta$idents$levels)), ordered = FALSE)
  }

  var <- ad$var
  hv <- NULL
  hvcol <- var$columns[[L$highly_variable]]
  if (!is.null(hvcol) && is.logical(hvcol)) {
    hv <- features[!is.na(hvcol) & hvcol]
    recorded <- meta$variable_features
    if (!is.null(recorded) && setequal(as.character(recorded), hv) && length(recorded) == length(hv)) {
      hv <- as.character(recorded)
    }
    hv <- as.list(hv)
  }
  if (!is.null(meta$variable_features) && !is.null(hvcol)) var$columns[[L$highly_variable]] <- NULL
  obs_parts <- .h5ad_df_parts(ad$obs)
  var_parts <- .h5ad_df_parts(var)
  report <- c(report, obs_parts$notes, var_parts$notes)
  obs_parts$notes <- NULL
  var_parts$notes <- NULL
  list(
    cells = as.list(cells), features = as.list(features), assay = as.character(meta$assay %||% "RNA"),
    X_layer = X_layer, layers = layers, scale_data_features = if (!is.null(sfeat)) as.list(sfeat),
    extra_layers = extra_layers, obs = obs_parts, var = var_parts, variable_features = hv,
    reductions = red$reductions, graphs = graphs, misc = misc, assays_from_obsm = red$assays,
    idents = idents, assay_class = meta$assay_class, split = meta$split, report = as.list(report)
  )
}

#' Read an h5ad file into a Seurat object (no Python needed)
#'
#' Reads an AnnData `.h5ad` file with libhdf5 (the package's C routines over the library hdf5r
#' uses) and builds a Seurat object with the same mapping as `as.Seurat()` on an in-memory
#' AnnData: `X` becomes the `counts` layer when it holds non-negative integers (else `data`),
#' `layers$counts`/`data`/`scale.data` fill those layers, other layers and `raw` become assays,
#' `obs` -> meta.data (categoricals -> factors with levels, order and ordered flag; nullable
#' integer/boolean/string -> NA kept), `var` -> meta.features and VariableFeatures
#' (`highly_variable`), `obsm$X_<name>` -> DimReduc `<name>` (1-column ones too; loadings from
#' `varm`, keys and stdev from `uns$pybridge`), `obsm` data frames -> assays, `obsp` -> Graphs,
#' `uns` -> Misc; `varp` is listed in the notes (a Seurat assay has no place for it). Seurat
#' replaces `_` by `-` in feature names; the originals are kept in the assay's misc (and
#' restored by [WriteH5AD()]).
#'
#' Files read: anndata >= 0.8 (scanpy, anndata 0.8-0.12, anndataR, [WriteH5AD()]), the older
#' layouts anndata still reads (0.7: categories in `__categories`; <= 0.6: tables as compound
#' datasets, categoricals as codes + `uns/<col>_categories`, `raw.X`; SeuratDisk's output), and
#' gzip- or lzf-compressed datasets (lzf: h5py's filter, built into the package). Files written
#' by zellkonverter (`uns/X_name`): `logcounts` fills the `data` layer, `counts` the `counts`
#' layer, and data-frame embeddings (`PCA`, `UMAP`) become reductions. A file without `X` or
#' layers gets an all-zero counts matrix (noted, and [WriteH5AD()] writes no `X` back); a file
#' with 0 cells or 0 features is refused. Any other encoding, a truncated or corrupt file give
#' an error naming the file and the element.
#'
#' An `.h5mu` file (MuData, e.g. from [WriteH5AD()] or mudata/muon) gives one assay per
#' modality (named as the modalities), all with the cells of the global `obs` (meta.data);
#' a modality whose cells differ is not carried (noted).
#'
#' @param file Path of an `.h5ad` or `.h5mu` file.
#' @param assay Name of the assay to create (default: the one recorded by pybridge, else
#'   `"RNA"`; for an `.h5mu`, the assays are named as the modalities).
#' @param X.layer Seurat layer that receives `X`: `"counts"`, `"data"`, or `NULL` (the recorded
#'   one, else `"counts"` when `X` holds non-negative integers and there is no
#'   `layers/counts`, else `"data"`).
#' @param verbose Print what could not be carried.
#' @param ... Unused.
#' @return A Seurat object (features x cells).
#' @seealso [WriteH5AD()], [as.Seurat.anndata._core.anndata.AnnData()]
#' @export
ReadH5AD <- function(file, assay = NULL, X.layer = NULL, verbose = TRUE, ...) {
  h5 <- .h5ad_open(file)
  on.exit(.h5_close(h5))
  ctx <- list(file = file)
  if (.h5mu_is(h5, ctx)) {
    return(tryCatch(.h5mu_read(h5, ctx, X.layer = X.layer, verbose = verbose), error = function(e) {
      m <- conditionMessage(e)
      stop(if (startsWith(m, file)) m else paste0(file, ": ", m), call. = FALSE)
    }))
  }
  parts <- .h5ad_adata_parts(.h5ad_load_group(h5, ctx), X.layer = X.layer)
  .h5_close(h5)
  on.exit()
  tryCatch(.seurat_from_parts(parts, assay = assay, verbose = verbose),
           error = function(e) stop(file, ": ", conditionMessage(e), call. = FALSE))
}
