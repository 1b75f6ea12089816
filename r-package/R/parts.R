# Typed parts that cross between R and Python (see pybridge/io/_parts.py for the contract).
# The R side only splits and assembles; the mapping rules live in the Python engine.

`%||%` <- function(a, b) if (is.null(a)) b else a

# A 1-d R array: reticulate hands it to Python as a NumPy array (not a list).
.np <- function(x) {
  x <- as.vector(x)
  if (is.null(x)) x <- character(0)  # SeuratObject 5 returns NULL for "none" (VariableFeatures, Stdev)
  dim(x) <- length(x)
  x
}

# Column parts for one data.frame column; returns list(part, note).
.column_parts <- function(x, name) {
  note <- NULL
  if (is.factor(x)) {
    if (anyNA(levels(x))) {  # factor(..., exclude = NULL) / addNA(): a pandas category cannot be NA
      n_na <- sum(is.na(levels(x))[as.integer(x)], na.rm = TRUE)
      x <- factor(x, levels = levels(x)[!is.na(levels(x))], ordered = is.ordered(x))
      note <- sprintf("column '%s': the factor level NA (%d values) became missing values (a pandas category cannot be NA; addNA() restores it)",
                      name, n_na)
    }
    codes <- as.integer(x) - 1L
    codes[is.na(codes)] <- -1L
    part <- list(kind = "factor", values = .np(codes), levels = .np(as.character(levels(x))),
                 ordered = is.ordered(x))
  } else if (is.logical(x)) {
    na <- is.na(x)
    part <- list(kind = "logical", values = .np(!na & x), mask = .np(na))
  } else if (is.integer(x)) {
    na <- is.na(x)
    v <- x
    v[na] <- 0L
    part <- list(kind = "integer", values = .np(v), mask = .np(na))
  } else if (is.numeric(x)) {
    part <- list(kind = "double", values = .np(as.double(x)), mask = .np(is.na(x)))
    if (any(is.nan(x))) note <- sprintf("column '%s': NaN and NA both become missing (NaN in pandas)", name)
  } else if (is.character(x)) {
    na <- is.na(x)
    v <- x
    v[na] <- ""
    part <- list(kind = "character", values = .np(v), mask = .np(na))
  } else {
    na <- is.na(x)
    v <- as.character(x)
    v[na] <- ""
    part <- list(kind = "character", values = .np(v), mask = .np(na))
    note <- sprintf("column '%s' (%s) has no pandas type here; carried as character",
                    name, paste(class(x), collapse = "/"))
  }
  list(part = part, note = note)
}

.df_parts <- function(df) {
  cols <- lapply(seq_along(df), function(j) .column_parts(df[[j]], names(df)[j]))
  list(
    index = .np(as.character(rownames(df))),
    names = .np(as.character(names(df))),
    columns = lapply(cols, `[[`, "part"),
    notes = unlist(lapply(cols, `[[`, "note"))
  )
}

.column_from_parts <- function(p) {
  v <- p$values
  mask <- if (!is.null(p$mask)) as.logical(as.vector(p$mask)) else NULL
  out <- switch(p$kind,
    factor = {
      codes <- as.integer(as.vector(v)) + 1L
      codes[codes < 1L] <- NA_integer_
      lv <- as.character(unlist(p$levels))
      structure(codes, levels = lv, class = c(if (isTRUE(p$ordered)) "ordered", "factor"))
    },
    logical = as.logical(as.vector(v)),
    integer = as.integer(as.vector(v)),
    double = as.double(as.vector(v)),
    character = as.character(unlist(v)),
    stop("unknown column kind ", p$kind)
  )
  if (!is.null(mask) && length(mask) == length(out) && any(mask)) out[mask] <- NA
  out
}

.df_from_parts <- function(p) {
  idx <- as.character(unlist(p$index))
  nm <- as.character(unlist(p$names))
  cols <- lapply(p$columns, .column_from_parts)
  df <- data.frame(row.names = idx)
  if (length(idx) == 0L) df <- data.frame()[integer(0), , drop = FALSE]
  for (j in seq_along(nm)) df[[nm[j]]] <- cols[[j]]
  if (length(idx)) rownames(df) <- idx
  df
}

# Sparse matrix parts (dgCMatrix slots). zero.copy = TRUE sends addresses of R memory plus a
# closure that keeps the matrix alive, so Python views the arrays without a copy. zero.copy = FALSE
# sends copies as 1-d arrays (reticulate/rpy2); zero.copy = NA the slot vectors themselves (for R).
.sparse_parts <- function(m, zero.copy = TRUE) {
  if (!inherits(m, "dgCMatrix")) m <- methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix")
  if (!inherits(m, "dgCMatrix")) m <- methods::as(m, "dgCMatrix")
  dims <- as.integer(dim(m))
  if (is.na(zero.copy)) {  # for R consumers (WriteH5AD): the slots themselves, no copy
    return(list(x = m@x, i = m@i, p = m@p, dim = dims))
  }
  if (!zero.copy) {
    return(list(x = .np(m@x), i = .np(m@i), p = .np(m@p), dim = .np(dims)))
  }
  keep <- local({
    held <- m
    function() invisible(NULL)
  })
  list(
    x_address = .Call(pyb_address, m@x), x_length = length(m@x), x_type = "double",
    i_address = .Call(pyb_address, m@i), i_length = length(m@i), i_type = "integer",
    p_address = .Call(pyb_address, m@p), p_length = length(m@p), p_type = "integer",
    dim = .np(dims), keepalive = keep
  )
}

.matrix_parts <- function(m, zero.copy = TRUE) {
  if (inherits(m, "Matrix")) return(list(sparse = .sparse_parts(m, zero.copy)))
  m <- as.matrix(m)
  storage.mode(m) <- "double"
  list(dense = m)
}

# Assemble a matrix from parts sent by Python (already in R orientation).
.matrix_from_parts <- function(p, rownames = NULL, colnames = NULL) {
  if (!is.null(p$sparse)) {
    s <- p$sparse
    dims <- as.integer(as.vector(s$dim))
    m <- if (isTRUE(attr(s, "pybridge_checked"))) .dgc_checked(s) else  # read from an h5ad (h5ad-read.R)
      new("dgCMatrix", x = as.double(as.vector(s$x)), i = as.integer(as.vector(s$i)),
          p = as.integer(as.vector(s$p)), Dim = dims)
  } else {
    m <- p$dense
    if (is.null(dim(m))) m <- matrix(m, ncol = 1L)
    storage.mode(m) <- "double"
  }
  dimnames(m) <- list(rownames, colnames)
  m
}

# Misc (R) -> uns (Python): representable values only; the rest is reported.
.misc_to_py <- function(x, path, report) {
  if (is.data.frame(x)) {
    p <- .df_parts(x)
    p$notes <- NULL
    return(list(value = list(`__pybridge_dataframe__` = p), report = report))
  }
  if (is.list(x) && !is.object(x)) {
    out <- list()
    nms <- names(x)
    if (is.null(nms)) nms <- as.character(seq_along(x) - 1L)
    for (k in seq_along(x)) {
      r <- .misc_to_py(x[[k]], paste0(path, "/", nms[k]), report)
      report <- r$report
      if (!is.null(r$value)) out[[nms[k]]] <- r$value
    }
    return(list(value = out, report = report))
  }
  if (is.atomic(x) && !is.object(x) && (is.numeric(x) || is.logical(x) || is.character(x))) {
    if (is.matrix(x)) return(list(value = x, report = report))
    if (length(x) == 1L) return(list(value = x, report = report))
    return(list(value = .np(x), report = report))
  }
  if (is.factor(x)) return(list(value = .np(as.character(x)), report = report))
  list(value = NULL, report = c(report, sprintf("misc entry '%s' (%s) has no AnnData representation; not carried",
                                                 path, paste(class(x), collapse = "/"))))
}

.misc_from_py <- function(x) {
  if (is.list(x) && !is.null(x[["__pybridge_dataframe__"]])) return(.df_from_parts(x[["__pybridge_dataframe__"]]))
  if (is.list(x) && !is.null(x[["sparse_matrix"]]) && length(x) == 1L) {
    return(.matrix_from_parts(list(sparse = x[["sparse_matrix"]])))
  }
  if (is.list(x)) return(lapply(x, .misc_from_py))
  if (is.array(x) && length(dim(x)) == 1L) return(as.vector(x))
  x
}
