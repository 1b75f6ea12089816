# anndata's encodings read from an h5ad file (https://anndata.readthedocs.io/en/latest/fileformat-prose.html):
# one generic element reader that returns matrices, data frames, categoricals, nullable arrays and
# dicts as R values, and the conversions of those values into parts (pybridge/io/_parts.py).

.h5ad_known <- function() setdiff(names(.h5ad_encodings), "anndata")

.h5ad_unknown <- function(ctx, path, enc, obj) {
  ver <- .h5_attr_get(obj, "encoding-version")
  .h5ad_fail(ctx, path, sprintf("has encoding-type '%s'%s, which this reader does not know (it reads: %s).",
                                enc, if (!is.null(ver)) paste0(" (version ", as.character(ver)[1], ")") else "",
                                paste(.h5ad_known(), collapse = ", ")))
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
  if (identical(as.character(.h5_attr_get(obj, .h5ad_layout$r_type_attr, ctx, path)), "character")) {
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

