# Writing h5ad files from R without Python: the parts of one Seurat assay (.seurat_to_parts(),
# the parts as.AnnData() sends to Python) laid out as pybridge.io.anndata_from_parts() lays them
# out in an AnnData (keys from the shared table .h5ad_layout, h5ad-layout.R), in anndata's on-disk
# format (https://anndata.readthedocs.io/en/latest/fileformat-prose.html).

# obsm key of a reduction and varm key of its loadings (pybridge/io/_layout.py: obsm_key, varm_key).
.h5ad_obsm_key <- function(name) paste0(.h5ad_layout$reduction_prefix, name)
.h5ad_varm_key <- function(name) .h5ad_layout$loadings_named[[name]] %||% paste0(name, .h5ad_layout$loadings_suffix)
.h5ad_reduction_name <- function(key) {
  p <- .h5ad_layout$reduction_prefix
  if (startsWith(key, p)) substring(key, nchar(p) + 1L) else key
}

.h5ad_write_sparse <- function(g, name, x, i, p, shape, format = "csr_matrix") {
  if (length(x) > .Machine$integer.max) stop("more than 2^31-1 non-zeros in '", name, "'", call. = FALSE)
  grp <- .h5_group(g, name, format)
  .h5_set_attr(grp, "shape", as.integer(shape), array = TRUE)
  .h5_write(grp, "data", if (is.double(x)) x else as.double(x))
  .h5_write(grp, "indices", if (is.integer(i)) i else as.integer(i))
  .h5_write(grp, "indptr", if (is.integer(p)) p else as.integer(p))
  grp$close()
  invisible(NULL)
}

# A matrix part (R orientation) written as anndata holds its transpose: a genes x cells dgCMatrix
# is a cells x genes CSR with the same arrays; a dense R matrix is written as it lies in memory.
.h5ad_write_matrix_part <- function(g, name, part) {
  if (!is.null(part$sparse)) {
    s <- part$sparse
    dims <- as.integer(as.vector(s$dim))
    .h5ad_write_sparse(g, name, as.vector(s$x), as.vector(s$i), as.vector(s$p), rev(dims))
  } else {
    m <- part$dense
    if (is.null(dim(m))) m <- matrix(m, ncol = 1L)
    storage.mode(m) <- "double"
    .h5_write(g, name, m, enc = "array")
  }
}

.h5ad_small_int_type <- function(n) {
  if (n < 128L) hdf5r::h5types$H5T_NATIVE_INT8 else if (n < 32768L) hdf5r::h5types$H5T_NATIVE_INT16 else
    hdf5r::h5types$H5T_NATIVE_INT32
}

.h5ad_write_categorical <- function(g, name, codes, levels, ordered, r.type = NULL) {
  grp <- .h5_group(g, name, "categorical")
  .h5_set_attr(grp, "ordered", isTRUE(ordered))
  if (!is.null(r.type)) .h5_set_attr(grp, .h5ad_layout$r_type_attr, r.type)
  codes <- as.integer(codes)
  codes[is.na(codes)] <- -1L
  .h5_write(grp, "codes", codes, enc = "array", dtype = .h5ad_small_int_type(length(levels)))
  .h5_write(grp, "categories", as.character(levels), enc = "string-array")
  grp$close()
}

# One data.frame column from its parts (pybridge/io/_parts.py: column_from_parts).
.h5ad_write_column <- function(g, name, p) {
  mask <- if (!is.null(p$mask)) as.logical(as.vector(p$mask)) else logical(0)
  has_na <- length(mask) > 0L && any(mask)
  switch(p$kind,
    factor = .h5ad_write_categorical(g, name, as.vector(p$values), as.character(unlist(p$levels)), p$ordered),
    logical = , integer = {
      v <- as.vector(p$values)
      if (p$kind == "logical") v <- as.logical(v) else v <- as.integer(v)
      if (has_na) {
        grp <- .h5_group(g, name, if (p$kind == "logical") "nullable-boolean" else "nullable-integer")
        v[mask] <- if (p$kind == "logical") FALSE else 0L
        .h5_write(grp, "values", v, enc = "array")
        .h5_write(grp, "mask", mask, enc = "array")
        grp$close()
      } else {
        .h5_write(g, name, v, enc = "array")
      }
    },
    double = {
      v <- as.double(as.vector(p$values))
      if (has_na) v[mask] <- NaN
      .h5_write(g, name, v, enc = "array")
    },
    character = {
      v <- as.character(unlist(p$values))
      if (has_na) {
        # a string column with missing values: anndata's write_h5ad stores it as a categorical
        # (readable by every anndata >= 0.8); the attribute lets ReadH5AD give character back.
        v[mask] <- NA_character_
        lv <- unique(v[!mask])
        codes <- match(v, lv) - 1L
        codes[is.na(codes)] <- -1L
        .h5ad_write_categorical(g, name, codes, lv, FALSE, r.type = "character")
      } else {
        .h5_write(g, name, v, enc = "string-array")
      }
    },
    stop("unknown column kind ", p$kind, call. = FALSE)
  )
  invisible(NULL)
}

# A dataframe element from row names and a list of column parts.
.h5ad_write_df <- function(g, name, index, names, columns, what = "column") {
  names <- as.character(unlist(names))
  grp <- .h5_group(g, name, "dataframe")
  on.exit(grp$close())
  idx_name <- "_index"
  while (idx_name %in% names) idx_name <- paste0("_", idx_name)
  .h5_set_attr(grp, "_index", idx_name)
  .h5_set_attr(grp, "column-order", names, array = TRUE)
  .h5_write(grp, idx_name, as.character(unlist(index)), enc = "string-array")
  for (j in seq_along(names)) {
    .h5ad_write_column(grp, .h5_check_name(names[j], what), columns[[j]])
  }
  invisible(NULL)
}

# An uns value (what .misc_to_py() makes for Python; pybridge/io/_bridge.py: uns_from_r).
.h5ad_write_uns <- function(g, name, x, path) {
  .h5_check_name(name, paste0("uns entry under '", path, "'"))
  if (is.null(x)) return(invisible(NULL))
  if (is.list(x) && !is.null(x[["__pybridge_dataframe__"]])) {
    p <- x[["__pybridge_dataframe__"]]
    return(.h5ad_write_df(g, name, p$index, p$names, p$columns, what = paste0("column of ", path, "/", name)))
  }
  if (is.list(x)) {
    grp <- .h5_group(g, name)
    on.exit(grp$close())
    nms <- names(x)
    if (is.null(nms)) nms <- as.character(seq_along(x) - 1L)
    for (k in seq_along(x)) .h5ad_write_uns(grp, nms[k], x[[k]], paste0(path, "/", name))
    return(invisible(NULL))
  }
  d <- dim(x)
  if (is.factor(x)) x <- as.character(x)
  if (is.null(d) && length(x) == 1L) {
    if (is.character(x)) return(.h5_write(g, name, x, enc = "string", scalar = TRUE))
    dt <- if (is.integer(x)) hdf5r::h5types$H5T_NATIVE_INT64 else NULL
    return(.h5_write(g, name, x, enc = "numeric-scalar", dtype = dt, scalar = TRUE))
  }
  enc <- if (is.character(x)) "string-array" else "array"
  if (length(d) >= 2L) {
    x <- aperm(x)  # numpy (C order) holds the same shape as the R array
  } else {
    x <- as.vector(x)
  }
  .h5_write(g, name, x, enc = enc)
}

# Write the parts of one Seurat assay as an h5ad file (pybridge/io/_bridge.py: anndata_from_parts,
# then anndata's write_h5ad). Returns the notes added to the report.
.h5ad_write_parts <- function(parts, file) {
  h5 <- hdf5r::H5File$new(file, mode = "w")
  on.exit(.h5_close(h5))
  cells <- as.character(unlist(parts$cells))
  features <- as.character(unlist(parts$features))
  n_obs <- length(cells)
  n_vars <- length(features)
  report <- as.character(unlist(parts$report))
  .h5_enc(h5, "anndata", .h5ad_encodings$anndata)
  meta <- list(assay = as.character(parts$assay %||% "RNA"), X_layer = as.character(parts$X_layer %||% "counts"),
               seurat_version = as.character(parts$seurat_version %||% ""), reductions = list())

  if (!is.null(parts$X)) .h5ad_write_matrix_part(h5, "X", parts$X)

  layers <- .h5_group(h5, "layers")
  for (name in names(parts$layers)) {
    part <- parts$layers[[name]]
    if (name == .h5ad_layout$scale_data) {
      sfeat <- as.character(unlist(parts$scale_data_features))
      m <- part$dense %||% as.matrix(.matrix_from_parts(part))
      full <- matrix(0, n_vars, n_obs)  # features x cells in R = cells x features in the file
      pos <- match(sfeat, features)
      full[pos[!is.na(pos)], ] <- m[!is.na(pos), , drop = FALSE]
      .h5_write(layers, name, full, enc = "array")
      rm(full)
      meta$scale_data_features <- sfeat
    } else {
      .h5ad_write_matrix_part(layers, .h5_check_name(name, "layer"), part)
    }
  }
  layers$close()

  var_names <- features
  orig <- as.character(unlist(parts$original_features))
  if (length(orig) == n_vars && !identical(orig, features)) {
    var_names <- orig
    report <- c(report, "feature names restored to their names before Seurat replaced '_' by '-'")
  }
  var <- parts$var
  var_cols <- var$columns
  var_names_cols <- as.character(unlist(var$names))
  vf <- as.character(unlist(parts$variable_features))
  if (length(vf)) {
    hv <- list(kind = "logical", values = features %in% vf, mask = logical(0))
    j <- match(.h5ad_layout$highly_variable, var_names_cols)
    if (is.na(j)) {
      var_names_cols <- c(var_names_cols, .h5ad_layout$highly_variable)
      var_cols <- c(var_cols, list(hv))
    } else {
      var_cols[[j]] <- hv
    }
    meta$variable_features <- vf
  }
  .h5ad_write_df(h5, "obs", cells, parts$obs$names, parts$obs$columns, what = "meta.data column")
  .h5ad_write_df(h5, "var", var_names, var_names_cols, var_cols, what = "meta.features column")

  obsm <- .h5_group(h5, "obsm")
  varm <- .h5_group(h5, "varm")
  misc <- parts$misc
  uns_generated <- list()
  for (name in names(parts$reductions)) {
    red <- parts$reductions[[name]]
    emb <- red$embeddings
    if (is.null(dim(emb))) emb <- matrix(emb, ncol = 1L)
    storage.mode(emb) <- "double"
    .h5_write(obsm, .h5_check_name(.h5ad_obsm_key(name), "reduction"), t(emb), enc = "array")
    info <- list(key = as.character(red$key %||% ""), assay = as.character(red$assay %||% ""),
                 global = isTRUE(red$global))
    sd <- as.double(unlist(red$stdev))
    if (length(sd)) info$stdev <- .np(sd)
    if (!is.null(red$loadings)) {
      lf <- as.character(unlist(red$loadings_features))
      load <- red$loadings
      if (is.null(dim(load))) load <- matrix(load, ncol = 1L)
      pos <- match(lf, features)
      if (anyNA(pos)) {
        report <- c(report, sprintf("reduction '%s': loadings of %d features not in the assay dropped", name, sum(is.na(pos))))
      }
      full <- matrix(0, n_vars, ncol(load))
      full[pos[!is.na(pos)], ] <- load[!is.na(pos), , drop = FALSE]
      .h5_write(varm, .h5ad_varm_key(name), t(full), enc = "array")
      info$loadings_features <- var_names[pos[!is.na(pos)]]  # named as var_names (originals if restored)
    }
    pv <- .h5ad_layout$pca_variance
    if (name == pv[1] && !is.null(info$stdev) && !pv[1] %in% names(misc)) {
      uns_generated[[pv[1]]] <- stats::setNames(list(.np(sd^2)), pv[2])  # scanpy's place for it
      meta$uns_generated <- pv[1]
    }
    meta$reductions[[name]] <- info
  }
  for (name in names(parts$other_assays)) {
    a <- parts$other_assays[[name]]
    m <- t(as.matrix(.matrix_from_parts(a$X)))  # cells x features
    fn <- as.character(unlist(a$features))
    cols <- lapply(seq_len(ncol(m)), function(k) list(kind = "double", values = m[, k], mask = logical(0)))
    .h5ad_write_df(obsm, .h5_check_name(name, "assay"), cells, fn, cols, what = paste0("feature of assay ", name))
    meta$assays_in_obsm <- c(meta$assays_in_obsm, name)
  }
  obsm$close()
  varm$close()

  obsp <- .h5_group(h5, "obsp")
  for (name in names(parts$graphs)) {
    g <- parts$graphs[[name]]
    tg <- Matrix::t(.matrix_from_parts(list(sparse = g)))  # CSR arrays of a graph = CSC arrays of its transpose
    .h5ad_write_sparse(obsp, .h5_check_name(name, "graph"), tg@x, tg@i, tg@p, dim(tg))
  }
  obsp$close()
  .h5_group(h5, "varp")$close()

  if (!is.null(parts$idents)) {
    meta$idents <- list(codes = .np(as.integer(as.vector(parts$idents$values))),
                        levels = .np(as.character(unlist(parts$idents$levels))))
  }
  meta$report <- .np(as.character(report))
  meta$assay_class <- parts$assay_class  # Seurat 5 records (layers.R): assay class, layer split
  if (!is.null(parts$split)) {
    meta$split <- list(key = as.character(parts$split$key), levels = .np(as.character(unlist(parts$split$levels))),
                       added = isTRUE(as.logical(parts$split$added)), layers = .np(as.character(unlist(parts$split$layers))))
  }
  uns <- .h5_group(h5, "uns")
  for (k in names(uns_generated)) .h5ad_write_uns(uns, k, uns_generated[[k]], "uns")
  for (k in names(misc)) .h5ad_write_uns(uns, k, misc[[k]], "uns")
  for (k in c("scale_data_features", "variable_features", "uns_generated", "assays_in_obsm")) {
    if (!is.null(meta[[k]])) meta[[k]] <- .np(meta[[k]])
  }
  stopifnot(all(names(meta) %in% .h5ad_layout$meta_keys))  # the shared table lists every entry
  .h5ad_write_uns(uns, .h5ad_layout$meta, meta, "uns")
  uns$close()
  report
}

# Atomic file writing: a temporary file in the target directory, then rename. A failure leaves
# no partial file and an existing file untouched; an existing file is replaced only with overwrite.
.atomic_write <- function(file, overwrite, writer) {
  if (!is.character(file) || length(file) != 1L || is.na(file) || !nzchar(file)) {
    stop("`file` must be one file path.", call. = FALSE)
  }
  file <- normalizePath(path.expand(file), mustWork = FALSE)
  dir <- dirname(file)
  if (!dir.exists(dir)) stop("directory '", dir, "' does not exist; create it first.", call. = FALSE)
  if (dir.exists(file)) stop("'", file, "' is a directory.", call. = FALSE)
  if (file.exists(file) && !isTRUE(overwrite)) {
    stop("'", file, "' already exists; use overwrite = TRUE to replace it.", call. = FALSE)
  }
  ext <- sub("^[^.]*", "", basename(file))
  tmp <- tempfile(pattern = paste0(".", sub("\\..*$", "", basename(file)), ".pybridge-tmp-"), tmpdir = dir,
                  fileext = if (nzchar(ext)) paste0(".", sub(".*\\.", "", ext)) else "")
  done <- FALSE
  on.exit(if (!done) unlink(tmp), add = TRUE)
  out <- writer(tmp)
  if (file.exists(file) && !isTRUE(overwrite)) {
    stop("'", file, "' appeared while writing; not replaced (overwrite = FALSE).", call. = FALSE)
  }
  if (!isTRUE(suppressWarnings(file.rename(tmp, file)))) {
    stop("could not move the written file into place at '", file, "'.", call. = FALSE)
  }
  done <- TRUE
  invisible(out)
}

#' Write a Seurat object to an h5ad file (no Python needed)
#'
#' Writes one assay of a Seurat object as an AnnData `.h5ad` file with hdf5r, in anndata's
#' on-disk format (encoding-type/encoding-version attributes; files open in anndata >= 0.8 and
#' scanpy). The layout is the one [as.AnnData()] produces in memory, so a file written here
#' reads in Python exactly like `as.AnnData(object)`:
#'
#' * `X`: the chosen `layer` (cells x features CSR: the dgCMatrix arrays themselves);
#'   the other layers in `layers` (`scale.data` dense, 0 for features it does not cover, the
#'   covered features in `uns/pybridge/scale_data_features`).
#' * `obs` = meta.data: factors -> categoricals (all levels, order, ordered flag); logical or
#'   integer with NA -> nullable-boolean / nullable-integer; character -> string array
#'   (with NA: a categorical, as anndata itself writes it, marked so [ReadH5AD()] returns
#'   character). `var` = meta.features, `var$highly_variable` from VariableFeatures.
#' * Reductions -> `obsm/X_<name>`, loadings -> `varm/PCs` (pca) or `varm/<name>_loadings`,
#'   keys/stdev in `uns/pybridge/reductions` (and `uns/pca/variance`); graphs -> `obsp`;
#'   counts of other assays -> `obsm/<assay>` (a dataframe); Misc -> `uns`; Idents and
#'   the conversion report -> `uns/pybridge`.
#'
#' The write is atomic: the file is written to a temporary file in the same directory and
#' renamed; on failure nothing is left behind and an existing file is untouched.
#'
#' @param object A Seurat object (v4 tested; v5 Assay5 untested).
#' @param file Path of the `.h5ad` file to write.
#' @param assay Assay to write (default: the default assay).
#' @param layer Layer that becomes `X`: `"counts"` (default), `"data"` or `"scale.data"`.
#' @param overwrite Replace an existing `file` (default `FALSE`: error).
#' @param verbose Print what could not be carried (command log, images, ...).
#' @param reductions,graphs,misc,other.assays Carry reductions, graphs, Misc and the counts of
#'   the other assays (default `TRUE`).
#' @param ... Unused.
#' @return The path of the written file, invisibly.
#' @seealso [ReadH5AD()], [as.AnnData()]; anndata's file format:
#'   <https://anndata.readthedocs.io/en/latest/fileformat-prose.html>.
#' @export
WriteH5AD <- function(object, file, assay = NULL, layer = "counts", overwrite = FALSE, verbose = TRUE,
                      reductions = TRUE, graphs = TRUE, misc = TRUE, other.assays = TRUE, ...) {
  assay <- .check_seurat(object, assay)
  if (!is.character(file) || length(file) != 1L) stop("`file` must be one file path.", call. = FALSE)
  if (file.exists(file) && !isTRUE(overwrite)) {
    stop("'", file, "' already exists; use overwrite = TRUE to replace it.", call. = FALSE)
  }
  parts <- .seurat_to_parts(object, assay = assay, layer = layer, reductions = reductions, graphs = graphs,
                            misc = misc, other.assays = other.assays, zero.copy = NA)
  report <- .atomic_write(file, overwrite, function(tmp) .h5ad_write_parts(parts, tmp))
  .print_report(report, verbose)
  invisible(normalizePath(file))
}
