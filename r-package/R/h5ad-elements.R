# anndata's encodings read from an h5ad file (https://anndata.readthedocs.io/en/latest/fileformat-prose.html),
# the current ones (anndata >= 0.8) and the older layouts anndata itself still reads: anndata 0.7
# (dataframes of encoding-version 0.1.0, categoricals as codes with their categories in
# `<df>/__categories/<col>`) and anndata <= 0.6 (obs / var / obsm as compound datasets,
# categoricals as codes with the categories in `uns/<col>_categories` (h5ad-load.R), sparse
# matrices marked `h5sparse_format`). One generic element reader returns matrices, data frames,
# categoricals, nullable arrays and dicts as R values.

.h5ad_known <- function() setdiff(names(.h5ad_encodings), "anndata")

.h5ad_unknown <- function(ctx, path, enc, info) {
  ver <- .h5_attr(info, "encoding-version")
  .h5ad_fail(ctx, path, sprintf("has encoding-type '%s'%s, which this reader does not know (it reads: %s).",
                                enc, if (!is.null(ver)) paste0(" (version ", as.character(ver)[1], ")") else "",
                                paste(.h5ad_known(), collapse = ", ")))
}

# Generic element reader. Matrices come back as
#   list(format = "csr"|"csc", data, indices, indptr, shape) (class "h5ad_sparse"), or
#   list(value = <R array with reversed dims>, shape) (class "h5ad_dense");
# data frames as list(index, columns = named list, notes) (class "h5ad_df"); compound datasets as
# a named list of fields (class "h5ad_recarray"); dicts as named lists; categoricals as factors;
# nullable arrays as vectors with NA.
.h5ad_read_elem <- function(h5, path, ctx, info = NULL) {
  if (is.null(info)) info <- .h5_info(h5, path, ctx)
  enc <- .h5_enc_type(info)
  if (info$kind == "dataset") {
    if (!enc %in% c("", "array", "string-array", "numeric-scalar", "string", "rec-array", "null")) {
      .h5ad_unknown(ctx, path, enc, info)
    }
    if (enc == "null") return(NULL)
    if (identical(info$class, "compound")) {
      v <- tryCatch(.Call(pyb_h5_read_compound, h5$id, path), error = function(e) {
        .h5ad_fail(ctx, path, paste0("could not be read (file truncated or corrupt?): ", .h5ad_cond_msg(e)))
      })
      return(structure(list(value = v), class = "h5ad_recarray"))
    }
    v <- .h5_read_ds(h5, path, ctx)
    if (length(dim(v)) >= 2L) return(structure(list(value = v, shape = rev(dim(v))), class = "h5ad_dense"))
    if (!is.null(dim(v))) v <- as.vector(v)
    return(v)
  }
  if (!nzchar(enc)) {  # groups without attributes: plain dicts, or sparse matrices of anndata <= 0.6
    fmt <- .h5_attr(info, "h5sparse_format")
    enc <- if (!is.null(fmt)) paste0(as.character(fmt)[1], "_matrix") else "dict"
  }
  switch(enc,
    csr_matrix = , csc_matrix = .h5ad_read_sparse(h5, path, ctx, info, enc),
    dataframe = .h5ad_read_df(h5, path, ctx, info),
    categorical = .h5ad_read_categorical(h5, path, ctx, info),
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
      for (k in info$children) out[k] <- list(.h5ad_read_elem(h5, paste0(path, "/", k), ctx))
      out
    },
    .h5ad_unknown(ctx, path, enc, info)
  )
}

.h5ad_read_sparse <- function(h5, path, ctx, info, enc) {
  need <- c("data", "indices", "indptr")
  if (!all(need %in% info$children)) {
    .h5ad_fail(ctx, path, paste0("is a ", enc, " without ", paste(setdiff(need, info$children), collapse = ", "),
                                 " (file truncated or corrupt?)."))
  }
  shape <- as.numeric(.h5_attr(info, "shape") %||% .h5_attr(info, "h5sparse_shape"))
  if (length(shape) != 2L) .h5ad_fail(ctx, path, "has no valid 'shape' attribute.")
  part <- function(k, as) .h5_read_ds(h5, paste0(path, "/", k), ctx, as = as)
  el <- list(format = substr(enc, 1L, 3L), data = part("data", "double"), indices = part("indices", "integer"),
             indptr = part("indptr", "auto"), shape = shape)
  if (length(el$indptr) && el$indptr[length(el$indptr)] > .Machine$integer.max) {
    .h5ad_fail(ctx, path, sprintf("has %s non-zeros; an R dgCMatrix holds at most 2^31-1.",
                                  format(el$indptr[length(el$indptr)], big.mark = ",")))
  }
  if (!is.integer(el$indptr)) el$indptr <- as.integer(el$indptr)
  np <- if (el$format == "csr") shape[1] else shape[2]
  if (length(el$indptr) != np + 1 || length(el$indices) != length(el$data) ||
      (length(el$indptr) && el$indptr[length(el$indptr)] != length(el$data))) {
    .h5ad_fail(ctx, path, "has inconsistent data/indices/indptr lengths (file truncated or corrupt?).")
  }
  structure(el, class = "h5ad_sparse")
}

# A factor from 0-based codes (-1 = missing) and categories.
.h5ad_factor <- function(codes, cats, ordered, ctx, path) {
  note <- NULL
  if (!is.character(cats)) {
    note <- sprintf("categories of '%s' (%s) became character levels", basename(path), typeof(cats))
    cats <- as.character(cats)
  }
  codes <- as.integer(codes) + 1L
  codes[codes < 1L] <- NA_integer_
  if (length(codes) && any(codes > length(cats), na.rm = TRUE)) .h5ad_fail(ctx, path, "has codes beyond its categories.")
  structure(codes, levels = cats, class = c(if (isTRUE(ordered)) "ordered", "factor"), pybridge_note = note)
}

.h5ad_read_categorical <- function(h5, path, ctx, info) {
  codes <- .h5ad_read_elem(h5, paste0(path, "/codes"), ctx)
  cats <- .h5ad_read_elem(h5, paste0(path, "/categories"), ctx)
  f <- .h5ad_factor(codes, cats, as.logical(.h5_attr(info, "ordered")), ctx, path)
  if (identical(as.character(.h5_attr(info, .h5ad_layout$r_type_attr)), "character")) {
    return(structure(levels(f)[f], pybridge_note = attr(f, "pybridge_note")))
  }
  f
}

.h5ad_read_df <- function(h5, path, ctx, info = NULL) {
  if (is.null(info)) info <- .h5_info(h5, path, ctx)
  if (info$kind == "dataset" && identical(info$class, "compound")) return(.h5ad_compound_df(h5, path, ctx))
  enc <- .h5_enc_type(info)
  if (enc != "dataframe") {
    .h5ad_fail(ctx, path, paste0("is not a dataframe (encoding-type '", enc, "'; file corrupt or not an AnnData h5ad?)."))
  }
  legacy <- identical(as.character(.h5_attr(info, "encoding-version") %||% ""), "0.1.0")  # anndata 0.7
  idx_name <- as.character(.h5_attr(info, "_index") %||% "_index")
  order <- as.character(.h5_attr(info, "column-order") %||% character(0))
  index <- as.character(.h5ad_read_elem(h5, paste0(path, "/", idx_name), ctx))
  cols <- list()
  notes <- character(0)
  for (nm in order) {
    p <- paste0(path, "/", nm)
    ci <- .h5_info(h5, p, ctx)
    if (legacy && ci$kind == "dataset" && paste0("__categories") %in% info$children &&
        .h5ad_exists(h5, paste0(path, "/__categories/", nm))) {
      cp <- paste0(path, "/__categories/", nm)
      v <- .h5ad_factor(.h5_read_ds(h5, p, ctx), .h5_read_ds(h5, cp, ctx),
                        as.logical(.h5_attr(.h5_info(h5, cp, ctx), "ordered")), ctx, p)
    } else {
      v <- .h5ad_read_elem(h5, p, ctx, ci)
    }
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

# A data frame of anndata <= 0.6: a compound dataset whose field `index` holds the row names
# (its categoricals are codes until h5ad-load.R applies uns/<col>_categories).
.h5ad_compound_df <- function(h5, path, ctx) {
  v <- .h5ad_read_elem(h5, path, ctx)$value
  if (!"index" %in% names(v)) .h5ad_fail(ctx, path, "is a table without an 'index' field (row names).")
  cols <- v[setdiff(names(v), "index")]
  bad <- vapply(cols, function(x) is.null(x) || !is.null(dim(x)), logical(1))
  notes <- if (any(bad)) sprintf("column '%s' of '%s' is not 1-d; not carried", names(cols)[bad], path) else character(0)
  structure(list(index = as.character(v$index), columns = cols[!bad], notes = notes), class = "h5ad_df")
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
