# Small helpers every job wrapper uses: convert the inputs, pull results back, store them.
# Science lives in the Python engine; these only move data.

# AnnData of one assay for a job: the counts (or `layer`) and meta.data only, no copy of X.
# Returns a handle with conversion off (reticulate cannot convert scipy sparse itself): pass it
# to engine functions; read results with .py_obs(), .py_obsm(), .py_df(), .py_matrix().
.job_anndata <- function(object, assay = NULL, layer = "counts", arg = "object") {
  assay <- .check_seurat(object, assay, arg = arg)
  # X (the named layer) and meta.data only: no job reads the other layers, and carrying them
  # would copy data and densify scale.data
  parts <- .seurat_to_parts(object, assay = assay, layer = layer, reductions = FALSE, graphs = FALSE,
                            misc = FALSE, other.assays = FALSE, zero.copy = TRUE, other.layers = FALSE)
  .engine("io", convert = FALSE)$anndata_from_parts(parts)
}

# The reference's label column (AnnotateCells, Deconvolve): present, else an error listing columns.
.check_reference_labels <- function(reference, labels) {
  cols <- paste(colnames(reference[[]]), collapse = ", ")
  if (is.null(labels)) {
    stop("reference.labels is required: the meta.data column of the reference with the cell types. ",
         "Columns that exist: ", cols, ".", call. = FALSE)
  }
  if (!is.character(labels) || length(labels) != 1L || !labels %in% colnames(reference[[]])) {
    stop("reference.labels '", paste(labels, collapse = ", "), "' is not a meta.data column of the reference. ",
         "Columns that exist: ", cols, ".", call. = FALSE)
  }
  invisible(labels)
}

# A pandas DataFrame (Python) -> data.frame (R), through typed parts (keeps factors and NA).
.py_df <- function(df) {
  p <- .engine("io")$df_to_parts(df)
  p$notes <- NULL
  .df_from_parts(p)
}

# Columns of adata.obs -> data.frame with cell names as rownames.
.py_obs <- function(adata, columns = NULL) {
  obs <- reticulate::py_get_attr(adata, "obs")
  if (!is.null(columns)) obs <- reticulate::py_get_item(obs, reticulate::r_to_py(as.list(columns)))
  .py_df(obs)
}

# A NumPy array or scipy sparse matrix -> R matrix / dgCMatrix (same orientation).
.py_matrix <- function(x, rownames = NULL, colnames = NULL) {
  parts <- .engine("io")$matrix_to_parts(x, transpose = FALSE)
  .matrix_from_parts(parts, rownames = rownames, colnames = colnames)
}

# adata.obsm[key] -> R matrix (cells x k) with cell names.
.py_obsm <- function(adata, key) {
  obsm <- reticulate::py_get_attr(adata, "obsm")
  keys <- unlist(reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(obsm$keys())))
  if (!key %in% keys) stop("obsm has no '", key, "'. Keys that exist: ", paste(keys, collapse = ", "), call. = FALSE)
  m <- .py_matrix(reticulate::py_get_item(obsm, key))
  rownames(m) <- as.character(unlist(reticulate::py_to_r(reticulate::py_get_attr(adata, "obs_names")$tolist())))
  m
}

# Add a DimReduc built from an embedding matrix (cells x k).
.add_reduction <- function(object, embeddings, name, key, assay, stdev = numeric(0), loadings = new("matrix"),
                           misc = list()) {
  embeddings <- embeddings[colnames(object), , drop = FALSE]
  colnames(embeddings) <- paste0(key, seq_len(ncol(embeddings)))
  if (length(loadings)) colnames(loadings) <- colnames(embeddings)
  object[[name]] <- SeuratObject::CreateDimReducObject(
    embeddings = embeddings, loadings = loadings, stdev = stdev, key = key, assay = assay, misc = misc
  )
  object
}

# Progress and messages from Python follow `verbose` (for code that calls the engine directly;
# jobs go through .engine_call(), which sets the verbosity for the call only).
.py_verbosity <- function(verbose) {
  .check_python()  # first contact with Python: clear errors, and torch's BLAS set up (python.R)
  settings <- reticulate::py_get_attr(.engine(NULL, convert = FALSE), "settings")
  reticulate::py_set_attr(settings, "verbosity", if (isTRUE(verbose)) 2L else 1L)
  invisible(NULL)
}

# One R value -> what the engine expects: a whole-number length-1 double becomes an integer
# (R's 100 is 100.0, Python's range/epochs want 100); everything else as reticulate converts it
# (NULL -> None, length > 1 -> list, named list -> dict, Python handles unchanged).
.py_arg <- function(x) {
  if (is.double(x) && length(x) == 1L && is.null(dim(x)) && is.null(names(x)) && !is.na(x) &&
      is.finite(x) && x == round(x) && abs(x) < .Machine$integer.max) {
    return(as.integer(x))
  }
  x
}

#' Call a job of the Python engine (internal)
#'
#' The one way the R package reaches the engine's functions: converts the arguments, sets
#' `pybridge.settings.verbosity` for the call (2 when `verbose`, else 1), re-issues the
#' engine's warnings as R warnings, and turns a Python exception into an R error that reads
#' like R: no Python class name or traceback (those stay in `reticulate::py_last_error()`),
#' and R argument names instead of Python's.
#'
#' @param fun Function name in `pybridge.<.module>`.
#' @param ... Arguments with their Python names.
#' @param .module Submodule (`"tl"`, `"pp"`, `"io"`, ...), `NULL` for the package.
#' @param verbose Progress and notes from the engine.
#' @param .arg_names Named character: Python name -> R name for error messages, for names that
#'   do not follow the default rule `reference_layer` -> `reference.layer`.
#' @param .convert Convert the result to R (`FALSE`: a reticulate handle, e.g. an AnnData).
#' @param .call The call errors are reported against (default: the calling function's).
#' @return The function's result.
#' @keywords internal
.engine_call <- function(fun, ..., .module = "tl", verbose = TRUE, .arg_names = NULL, .convert = TRUE,
                         .call = sys.call(-1)) {
  .check_python()
  args <- lapply(list(...), .py_arg)
  rcall <- reticulate::import("pybridge._core._rcall", convert = FALSE)
  reticulate::py_clear_last_error()
  map <- .name_map(names(args), .arg_names)
  res <- tryCatch(
    rcall$call(.module, fun, reticulate::r_to_py(args), if (isTRUE(verbose)) 2L else 1L,
               reticulate::r_to_py(as.list(map))),
    error = function(e) .engine_error(e, names(args), .arg_names, .call)
  )
  warns <- as.character(unlist(reticulate::py_to_r(reticulate::py_get_item(res, 1L))))
  for (w in warns) warning(.r_names(w, names(args), .arg_names), call. = FALSE)
  out <- reticulate::py_get_item(res, 0L)
  if (.convert) reticulate::py_to_r(out) else out
}

# Python argument name -> R's: `reference_layer` -> `reference.layer`, or as `arg_names` says.
.name_map <- function(py_names, arg_names = NULL) {
  map <- stats::setNames(gsub("_", ".", py_names), py_names)
  if (length(arg_names)) map[names(arg_names)] <- unname(arg_names)
  map[names(map) != map]
}

# Python argument names in a message -> R's (errors and warnings; notes are renamed in Python).
.r_names <- function(msg, py_names, arg_names = NULL) {
  map <- .name_map(py_names, arg_names)
  for (p in names(map)[order(-nchar(names(map)))]) {
    msg <- gsub(paste0("(?<![A-Za-z0-9_.])", p, "(?![A-Za-z0-9_])"), map[[p]], msg, perl = TRUE)
  }
  msg
}

# A Python exception -> an R error in R's words; other errors pass unchanged.
.engine_error <- function(e, py_names, arg_names, call) {
  pe <- reticulate::py_last_error()
  if (is.null(pe)) stop(e)
  msg <- trimws(as.character(pe$value))
  if (identical(pe$type, "KeyError") && grepl("^([\'\"]).*\\1$", msg)) msg <- substr(msg, 2L, nchar(msg) - 1L)
  if (!nzchar(msg)) msg <- paste0("the engine failed (", pe$type, ")")
  msg <- .r_names(msg, py_names, arg_names)
  stop(simpleError(paste0(msg, "\n(Python details: reticulate::py_last_error())"), call = call))
}
