# h5ad files from R without Python (hdf5r), in anndata's on-disk format
# (https://anndata.readthedocs.io/en/latest/fileformat-prose.html).
#
# One mapping. The Seurat side is the bridge's: WriteH5AD() serialises the parts that
# .seurat_to_parts() makes (the same parts as.AnnData() sends to Python), laid out exactly as
# pybridge.io.anndata_from_parts() lays them out in an AnnData; ReadH5AD() reads an h5ad into the
# parts that pybridge.io.anndata_to_parts() returns and assembles them with .seurat_from_parts()
# (the same function as.Seurat() uses). This file mirrors only the AnnData-side layout of
# pybridge/io/_bridge.py; tests/testthat/test-h5ad.R checks that both paths give equal results.

# ============================================================================ HDF5 primitives
# hdf5r objects are slow to create (R6): the common types and the scalar space are made once.
.h5c <- new.env(parent = emptyenv())
.h5_cached <- function(key, make) {
  x <- .h5c[[key]]
  if (is.null(x) || !isTRUE(tryCatch(x$is_valid, error = function(e) FALSE))) x <- .h5c[[key]] <- make()
  x
}
.h5_str <- function() .h5_cached("str", function() hdf5r::H5T_STRING$new(size = Inf)$set_cset("UTF-8"))
.h5_bool <- function() .h5_cached("bool", function() hdf5r::H5T_LOGICAL$new(include_NA = FALSE))  # h5py's bool
.h5_scalar <- function() .h5_cached("scalar", function() hdf5r::H5S$new("scalar"))

.h5_set_attr <- function(obj, name, value, array = FALSE) {
  if (obj$attr_exists(name)) obj$attr_delete(name)
  n <- length(value)
  if (is.character(value)) {
    if (n == 0L) {  # h5py cannot store an empty string array: anndata writes an empty float64 array
      a <- obj$create_attr(name, dtype = hdf5r::h5types$H5T_IEEE_F64LE,
                           space = hdf5r::H5S$new("simple", dims = 0L, maxdims = 0L))
      a$close()
      return(invisible(NULL))
    }
    dt <- .h5_str()
  } else if (is.logical(value)) {
    dt <- .h5_bool()
  } else {
    dt <- hdf5r::h5types$H5T_NATIVE_INT64
    value <- as.integer(value)
  }
  space <- if (array) hdf5r::H5S$new("simple", dims = n, maxdims = n) else .h5_scalar()
  a <- obj$create_attr(name, robj = value, dtype = dt, space = space)
  a$close()
  invisible(NULL)
}

.h5_enc <- function(obj, type, version) {
  .h5_set_attr(obj, "encoding-type", type)
  .h5_set_attr(obj, "encoding-version", version)
}

# A dataset (no compression, contiguous: anndata's defaults). R matrices are written as they lie in
# memory, so an R matrix of dim (a, b) becomes an HDF5 dataset of shape (b, a).
.h5_write <- function(g, name, x, enc = NULL, dtype = NULL, scalar = FALSE) {
  if (is.null(dtype)) {
    dtype <- if (is.character(x)) .h5_str() else if (is.logical(x)) .h5_bool() else
      if (is.integer(x)) hdf5r::h5types$H5T_NATIVE_INT32 else hdf5r::h5types$H5T_NATIVE_DOUBLE
  }
  if (is.character(x) && anyNA(x)) x[is.na(x)] <- ""
  if (is.logical(x) && anyNA(x)) x[is.na(x)] <- FALSE
  ds <- if (scalar) {
    g$create_dataset(name, robj = x, dtype = dtype, space = .h5_scalar(), chunk_dims = NULL)
  } else {
    g$create_dataset(name, robj = x, dtype = dtype, chunk_dims = NULL)
  }
  if (!is.null(enc)) {
    .h5_enc(ds, enc, if (enc %in% c("array", "string-array", "numeric-scalar", "string")) "0.2.0" else "0.1.0")
  }
  ds$close()
  invisible(NULL)
}

.h5_group <- function(g, name, enc = "dict", version = "0.1.0") {
  grp <- g$create_group(name)
  .h5_enc(grp, enc, version)
  grp
}

# Close a file. hdf5r's close_all() starts with a full gc() (about 0.5 s with Seurat loaded);
# when every object in the file is already closed (as this file's code does), flush and close
# the file id directly, else fall back to close_all().
.h5_close <- function(h5) {
  if (!isTRUE(tryCatch(h5$is_valid, error = function(e) FALSE))) return(invisible(NULL))
  ids <- tryCatch(h5$get_obj_ids(), error = function(e) NULL)
  sup <- tryCatch(h5$.__enclos_env__$super, error = function(e) NULL)
  if (length(ids) == 1L && !is.null(sup) && is.function(sup$close)) {
    h5$flush()
    sup$close()
  } else {
    h5$close_all()
  }
  invisible(NULL)
}

.h5_check_name <- function(name, what) {
  if (!nzchar(name) || grepl("/", name, fixed = TRUE) || name %in% c(".", "..")) {
    stop(what, " '", name, "': h5ad element names cannot be empty or contain '/'; rename it before writing.",
         call. = FALSE)
  }
  name
}

# ============================================================================ writer (parts -> h5ad)
.h5ad_write_sparse <- function(g, name, x, i, p, shape, format = "csr_matrix") {
  if (length(x) > .Machine$integer.max) stop("more than 2^31-1 non-zeros in '", name, "'", call. = FALSE)
  grp <- .h5_group(g, name, format, "0.1.0")
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
  grp <- .h5_group(g, name, "categorical", "0.2.0")
  .h5_set_attr(grp, "ordered", isTRUE(ordered))
  if (!is.null(r.type)) .h5_set_attr(grp, "pybridge-r-type", r.type)
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
        grp <- .h5_group(g, name, if (p$kind == "logical") "nullable-boolean" else "nullable-integer", "0.1.0")
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
  grp <- .h5_group(g, name, "dataframe", "0.2.0")
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
  .h5_enc(h5, "anndata", "0.1.0")
  meta <- list(assay = as.character(parts$assay %||% "RNA"), X_layer = as.character(parts$X_layer %||% "counts"),
               seurat_version = as.character(parts$seurat_version %||% ""), reductions = list())

  if (!is.null(parts$X)) .h5ad_write_matrix_part(h5, "X", parts$X)

  layers <- .h5_group(h5, "layers")
  for (name in names(parts$layers)) {
    part <- parts$layers[[name]]
    if (name == "scale.data") {
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
    j <- match("highly_variable", var_names_cols)
    if (is.na(j)) {
      var_names_cols <- c(var_names_cols, "highly_variable")
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
    .h5_write(obsm, .h5_check_name(paste0("X_", name), "reduction"), t(emb), enc = "array")
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
      .h5_write(varm, if (name == "pca") "PCs" else paste0(name, "_loadings"), t(full), enc = "array")
      info$loadings_features <- var_names[pos[!is.na(pos)]]  # named as var_names (originals if restored)
    }
    if (name == "pca" && !is.null(info$stdev) && !"pca" %in% names(misc)) {
      uns_generated$pca <- list(variance = .np(sd^2))  # scanpy's place for it
      meta$uns_generated <- "pca"
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
  uns <- .h5_group(h5, "uns")
  for (k in names(uns_generated)) .h5ad_write_uns(uns, k, uns_generated[[k]], "uns")
  for (k in names(misc)) .h5ad_write_uns(uns, k, misc[[k]], "uns")
  for (k in c("scale_data_features", "variable_features", "uns_generated", "assays_in_obsm")) {
    if (!is.null(meta[[k]])) meta[[k]] <- .np(meta[[k]])
  }
  .h5ad_write_uns(uns, "pybridge", meta, "uns")
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

# ============================================================================ reader (h5ad -> parts)
.h5ad_fail <- function(ctx, path, msg) {
  if (!startsWith(path, "/")) path <- paste0("/", path)
  stop(sprintf("%s: element '%s' %s", ctx$file, path, msg), call. = FALSE)
}

# The useful part of an hdf5r error: the messages of HDF5's error stack, innermost last.
.h5ad_cond_msg <- function(e) {
  m <- strsplit(conditionMessage(e), "\n", fixed = TRUE)[[1]]
  m <- trimws(m[nzchar(trimws(m))])
  hits <- regmatches(m, regexpr("error #[0-9]+:.* line [0-9]+: .*$", m))
  if (length(hits)) return(paste(unique(sub("^.* line [0-9]+: ", "", hits)), collapse = "; "))
  paste(utils::head(m, 3L), collapse = " ")
}

.h5_attr_get <- function(obj, name, ctx = NULL, path = NULL) {
  tryCatch({
    if (!obj$attr_exists(name)) return(NULL)
    a <- obj$attr_open(name)
    on.exit(a$close())
    dims <- a$get_space()$dims
    if (length(dims) && any(dims == 0)) return(character(0))
    v <- a$read()
    if (is.raw(v)) v <- rawToChar(v)
    v
  }, error = function(e) {
    if (is.null(ctx)) stop(e)
    .h5ad_fail(ctx, path %||% obj$get_obj_name(), paste0("has an attribute '", name,
                                                          "' that could not be read (file corrupt?): ", .h5ad_cond_msg(e)))
  })
}

.h5_enc_type <- function(obj, ctx = NULL, path = NULL) {
  e <- .h5_attr_get(obj, "encoding-type", ctx, path)
  if (is.null(e)) "" else as.character(e)[1]
}

.h5_is_group <- function(obj) inherits(obj, "H5Group") || inherits(obj, "H5File")

.h5_open <- function(h5, path, ctx) {
  tryCatch(h5[[path]], error = function(e) .h5ad_fail(ctx, path, paste0("could not be opened (file truncated or corrupt?): ",
                                                                         .h5ad_cond_msg(e))))
}

.h5_children <- function(obj) {
  n <- tryCatch(names(obj), error = function(e) character(0))
  as.character(n)
}

# Read a dataset as R vector/matrix (an HDF5 shape (a, b) gives an R matrix of dim (b, a)).
.h5_read_ds <- function(ds, path, ctx) {
  dims <- ds$dims
  cls <- tryCatch(as.character(ds$get_type()$get_class()), error = function(e) "")
  if (length(dims) && any(dims == 0)) {
    return(if (cls == "H5T_STRING") character(0) else if (cls == "H5T_INTEGER") integer(0) else numeric(0))
  }
  v <- tryCatch(ds$read(), error = function(e) {
    .h5ad_fail(ctx, path, paste0("could not be read (file truncated or corrupt?): ", .h5ad_cond_msg(e)))
  })
  if (inherits(v, "integer64")) v <- as.double(v)
  if (cls == "H5T_ENUM" && is.factor(v)) v <- as.character(v)
  v
}

.h5ad_known <- c("array", "string-array", "numeric-scalar", "string", "csr_matrix", "csc_matrix", "dataframe",
                 "categorical", "nullable-integer", "nullable-boolean", "nullable-string-array", "dict", "raw",
                 "null", "rec-array")

.h5ad_unknown <- function(ctx, path, enc, obj) {
  ver <- .h5_attr_get(obj, "encoding-version")
  .h5ad_fail(ctx, path, sprintf("has encoding-type '%s'%s, which this reader does not know (it reads: %s).",
                                enc, if (!is.null(ver)) paste0(" (version ", as.character(ver)[1], ")") else "",
                                paste(.h5ad_known, collapse = ", ")))
}

# Generic element reader. Matrices come back as
#   list(format = "csr"|"csc", data, indices, indptr, shape) (class "h5ad_sparse"), or
#   list(value = <R array with reversed dims>, shape) (class "h5ad_dense");
# data frames as list(index, columns = named list, notes) (class "h5ad_df"); dicts as named lists;
# categoricals as factors; nullable arrays as vectors with NA.
.h5ad_read_elem <- function(h5, path, ctx) {
  obj <- .h5_open(h5, path, ctx)
  on.exit(try(obj$close(), silent = TRUE))
  enc <- .h5_enc_type(obj, ctx, path)
  if (.h5_is_group(obj) && !nzchar(enc)) enc <- "dict"  # groups without attributes: plain dicts
  if (!.h5_is_group(obj)) {
    if (!enc %in% c("", "array", "string-array", "numeric-scalar", "string", "rec-array", "null")) {
      .h5ad_unknown(ctx, path, enc, obj)
    }
    if (enc == "null") return(NULL)
    v <- .h5_read_ds(obj, path, ctx)
    if (is.data.frame(v)) return(structure(list(value = v), class = "h5ad_recarray"))
    if (length(dim(v)) >= 2L) return(structure(list(value = v, shape = rev(dim(v))), class = "h5ad_dense"))
    if (!is.null(dim(v))) v <- as.vector(v)
    return(v)
  }
  switch(enc,
    csr_matrix = , csc_matrix = {
      need <- c("data", "indices", "indptr")
      have <- .h5_children(obj)
      if (!all(need %in% have)) {
        .h5ad_fail(ctx, path, paste0("is a ", enc, " without ", paste(setdiff(need, have), collapse = ", "),
                                     " (file truncated or corrupt?)."))
      }
      shape <- as.numeric(.h5_attr_get(obj, "shape", ctx, path))
      if (length(shape) != 2L) .h5ad_fail(ctx, path, "has no valid 'shape' attribute.")
      part <- function(k) {
        p <- paste0(path, "/", k)
        d <- .h5_open(h5, p, ctx)
        on.exit(d$close())
        .h5_read_ds(d, p, ctx)
      }
      el <- list(format = substr(enc, 1L, 3L), data = part("data"), indices = part("indices"),
                 indptr = part("indptr"), shape = shape)
      if (!is.double(el$data)) el$data <- as.double(el$data)
      np <- if (el$format == "csr") shape[1] else shape[2]
      if (length(el$indptr) != np + 1 || length(el$indices) != length(el$data) ||
          (length(el$indptr) && el$indptr[length(el$indptr)] != length(el$data))) {
        .h5ad_fail(ctx, path, "has inconsistent data/indices/indptr lengths (file truncated or corrupt?).")
      }
      structure(el, class = "h5ad_sparse")
    },
    dataframe = .h5ad_read_df(h5, path, ctx, obj),
    categorical = .h5ad_read_categorical(h5, path, ctx, obj),
    `nullable-integer` = , `nullable-boolean` = , `nullable-string-array` = {
      v <- .h5ad_read_elem(h5, paste0(path, "/values"), ctx)
      mask <- as.logical(.h5ad_read_elem(h5, paste0(path, "/mask"), ctx))
      if (length(mask) != length(v)) .h5ad_fail(ctx, path, "has values and mask of different lengths.")
      if (enc == "nullable-boolean") v <- as.logical(v)
      v[mask] <- NA
      v
    },
    dict = , raw = {
      out <- list()
      for (k in .h5_children(obj)) out[k] <- list(.h5ad_read_elem(h5, paste0(path, "/", k), ctx))
      out
    },
    .h5ad_unknown(ctx, path, enc, obj)
  )
}

.h5ad_read_categorical <- function(h5, path, ctx, obj) {
  codes <- .h5ad_read_elem(h5, paste0(path, "/codes"), ctx)
  cats <- .h5ad_read_elem(h5, paste0(path, "/categories"), ctx)
  note <- NULL
  if (!is.character(cats)) {
    note <- sprintf("categories of '%s' (%s) became character levels", basename(path), typeof(cats))
    cats <- as.character(cats)
  }
  codes <- as.integer(codes) + 1L
  codes[codes < 1L] <- NA_integer_
  if (length(codes) && max(codes, na.rm = TRUE) > length(cats)) .h5ad_fail(ctx, path, "has codes beyond its categories.")
  if (identical(as.character(.h5_attr_get(obj, "pybridge-r-type", ctx, path)), "character")) {
    return(structure(cats[codes], pybridge_note = note))
  }
  ordered <- isTRUE(as.logical(.h5_attr_get(obj, "ordered", ctx, path)))
  structure(codes, levels = cats, class = c(if (ordered) "ordered", "factor"), pybridge_note = note)
}

.h5ad_read_df <- function(h5, path, ctx, obj = NULL) {
  if (is.null(obj)) {
    obj <- .h5_open(h5, path, ctx)
    on.exit(try(obj$close(), silent = TRUE))
  }
  enc <- .h5_enc_type(obj, ctx, path)
  if (enc != "dataframe") {
    .h5ad_fail(ctx, path, paste0("is not a dataframe (encoding-type '", enc, "'; file corrupt, or not written by anndata >= 0.8?)."))
  }
  ver <- as.character(.h5_attr_get(obj, "encoding-version", ctx, path) %||% "")
  if (identical(ver, "0.1.0")) {
    .h5ad_fail(ctx, path, "is a dataframe in the format of anndata < 0.8 (encoding-version 0.1.0); re-save the file with a current anndata.")
  }
  idx_name <- as.character(.h5_attr_get(obj, "_index", ctx, path) %||% "_index")
  order <- as.character(.h5_attr_get(obj, "column-order", ctx, path) %||% character(0))
  index <- as.character(.h5ad_read_elem(h5, paste0(path, "/", idx_name), ctx))
  cols <- list()
  notes <- character(0)
  for (nm in order) {
    p <- paste0(path, "/", nm)
    v <- .h5ad_read_elem(h5, p, ctx)
    if (!is.null(attr(v, "pybridge_note"))) {
      notes <- c(notes, attr(v, "pybridge_note"))
      attr(v, "pybridge_note") <- NULL
    }
    if (is.list(v) || !is.null(dim(v)) || length(v) != length(index)) {
      .h5ad_fail(ctx, p, "is not a column of length nrow (a 1-d array) and cannot be a data.frame column.")
    }
    cols[[nm]] <- v
  }
  structure(list(index = index, columns = cols, notes = notes), class = "h5ad_df")
}

# Column parts of a data frame read from the file (pybridge/io/_parts.py: df_to_parts).
.h5ad_df_parts <- function(df) {
  cols <- lapply(names(df$columns), function(nm) {
    p <- .column_parts(df$columns[[nm]], nm)
    if (identical(p$part$kind, "double")) p$note <- NULL  # a file has only NaN: no NA/NaN distinction lost
    p
  })
  list(index = as.list(df$index), names = as.list(names(df$columns)), columns = lapply(cols, `[[`, "part"),
       notes = c(df$notes, unlist(lapply(cols, `[[`, "note"))))
}

.h5ad_exists <- function(h5, path) isTRUE(tryCatch(h5$exists(path), error = function(e) FALSE))

# A dgCMatrix from CSC arrays; non-canonical input (unsorted or duplicated indices, which
# scipy allows) is sorted and summed as scipy's sum_duplicates() does.
.h5ad_dgc <- function(x, i, p, dims) {
  if (length(x) > .Machine$integer.max) {
    stop("the matrix has ", format(length(x), big.mark = ","), " non-zeros; an R dgCMatrix holds at most 2^31-1.", call. = FALSE)
  }
  i <- as.integer(i)
  p <- as.integer(p)
  dims <- as.integer(dims)
  tryCatch(new("dgCMatrix", x = x, i = i, p = p, Dim = dims), error = function(e) {
    m <- Matrix::sparseMatrix(i = i, p = p, x = x, dims = dims, index1 = FALSE, repr = "C")
    methods::as(m, "generalMatrix")
  })
}

# An element read from the file -> matrix parts in R orientation (pybridge/io/_parts.py:
# matrix_to_parts): transpose = TRUE gives the transpose of the AnnData matrix (cells x genes ->
# genes x cells: a CSR's arrays are reused as they are), FALSE the matrix itself.
.h5ad_matrix_parts <- function(el, transpose = TRUE, ctx = NULL, path = "") {
  if (inherits(el, "h5ad_sparse")) {
    shape <- el$shape
    direct <- (el$format == "csr") == transpose
    dims <- if (el$format == "csr") rev(shape) else shape
    m <- .h5ad_dgc(el$data, el$indices, el$indptr, dims)
    if (!direct) m <- Matrix::t(m)
    return(list(sparse = list(x = m@x, i = m@i, p = m@p, dim = dim(m))))
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

.h5ad_is_counts <- function(el) {
  v <- if (inherits(el, "h5ad_sparse")) el$data else el$value
  v <- as.vector(v[seq_len(min(length(v), 1e6))])
  length(v) == 0L || (is.numeric(v) && all(v >= 0) && all(abs(v - round(v)) < 1e-8))
}

# A dense cells x k matrix from an obsm/varm element (NULL when not numeric).
.h5ad_dense_rows <- function(el) {
  if (inherits(el, "h5ad_sparse")) {
    p <- .h5ad_matrix_parts(el, transpose = FALSE)$sparse
    return(as.matrix(new("dgCMatrix", x = p$x, i = p$i, p = p$p, Dim = as.integer(p$dim))))
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
  if (inherits(x, "h5ad_recarray")) {
    return(list(value = list(`__pybridge_dataframe__` = .h5ad_df_parts(
      list(index = as.character(seq_len(nrow(x$value)) - 1L), columns = as.list(x$value), notes = NULL))),
      report = report))
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

.h5ad_open <- function(file) {
  if (!is.character(file) || length(file) != 1L) stop("`file` must be one file path.", call. = FALSE)
  if (!file.exists(file)) stop("file '", file, "' does not exist.", call. = FALSE)
  h5 <- tryCatch(hdf5r::H5File$new(file, mode = "r"), error = function(e) {
    stop("'", file, "' could not be opened as an HDF5 (.h5ad) file (truncated, corrupt or not HDF5?): ",
         .h5ad_cond_msg(e), call. = FALSE)
  })
  h5
}

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
  meta <- if (is.list(uns$pybridge) && !inherits(uns$pybridge, "h5ad_df")) uns$pybridge else list()
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
    } else if (name == "scale.data") {
      el <- check_shape(read(path), path, c(n_obs, n_vars))
      sfeat <- if (!is.null(meta$scale_data_features)) as.character(meta$scale_data_features) else features
      pos <- match(sfeat, features)
      sfeat <- sfeat[!is.na(pos)]
      pos <- pos[!is.na(pos)]
      v <- if (inherits(el, "h5ad_dense")) el$value else t(.h5ad_dense_rows(el))
      storage.mode(v) <- "double"
      layers[["scale.data"]] <- list(dense = v[pos, , drop = FALSE])
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
    name <- if (startsWith(key, "X_")) substring(key, 3L) else key
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
    vkey <- if (name == "pca") "PCs" else paste0(name, "_loadings")
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
    if (name == "pca" && is.null(r$stdev) && is.list(uns$pca) && !is.null(uns$pca$variance)) {
      r$stdev <- .np(sqrt(as.double(uns$pca$variance)))
    }
    reductions[[name]] <- r
  }
  used_varm <- vapply(names(reductions), function(n) if (n == "pca") "PCs" else paste0(n, "_loadings"), "")
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
  uns_keep <- uns[setdiff(names(uns), c("pybridge", generated))]
  r <- .h5ad_uns_to_misc(uns_keep, "uns", report)
  misc <- r$value %||% list()
  report <- r$report

  idents <- NULL
  if (is.list(meta$idents) && !is.null(meta$idents$codes)) {
    idents <- list(kind = "factor", values = .np(as.integer(meta$idents$codes)),
                   levels = as.list(as.character(meta$idents$levels)), ordered = FALSE)
  }

  hv <- NULL
  hvcol <- var$columns$highly_variable
  if (!is.null(hvcol) && is.logical(hvcol)) {
    hv <- features[!is.na(hvcol) & hvcol]
    recorded <- meta$variable_features
    if (!is.null(recorded) && setequal(as.character(recorded), hv) && length(recorded) == length(hv)) {
      hv <- as.character(recorded)
    }
    hv <- as.list(hv)
  }
  if (!is.null(meta$variable_features) && !is.null(hvcol)) var$columns$highly_variable <- NULL
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
    idents = idents, report = as.list(report)
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
