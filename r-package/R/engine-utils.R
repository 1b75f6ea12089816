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

# Progress and messages from Python follow `verbose`.
.py_verbosity <- function(verbose) {
  .check_python()  # first contact with Python: clear errors, and torch's BLAS set up (python.R)
  lg <- reticulate::import("logging")
  lg$getLogger("pybridge")$setLevel(if (isTRUE(verbose)) lg$INFO else lg$WARNING)
  invisible(NULL)
}
