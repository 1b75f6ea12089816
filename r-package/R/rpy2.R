# The R side of Python's Seurat .rds files (pybridge/io/_seurat_rds.py, through rpy2) and of the
# `pybridge convert` command line. Python calls these exported functions by name; the mapping is
# the bridge's (.seurat_to_parts() / .seurat_from_parts(), the functions as.AnnData() and
# as.Seurat() use), only the transport differs.

# Lists of one-string elements (cell and feature names, character columns, as the parts hold them
# for reticulate) become 1-d character arrays, so each crosses rpy2 as one vector.
.flat_parts <- function(x) {
  if (is.list(x) && !is.object(x)) {
    if (length(x) && is.null(names(x)) &&
        all(vapply(x, function(v) is.character(v) && length(v) == 1L && is.null(attributes(v)), logical(1)))) {
      v <- unlist(x, use.names = FALSE)
      dim(v) <- length(v)
      return(v)
    }
    for (k in seq_along(x)) if (!is.null(x[[k]])) x[[k]] <- .flat_parts(x[[k]])
    return(x)
  }
  x
}

# Run expr and return the messages it printed (the conversion notes), instead of printing them.
.collect_messages <- function(expr) {
  msgs <- character(0)
  withCallingHandlers(expr, message = function(m) {
    msgs <<- c(msgs, conditionMessage(m))
    invokeRestart("muffleMessage")
  })
  msgs
}

.read_seurat_rds <- function(file) {
  obj <- readRDS(file)
  if (!inherits(obj, "Seurat")) {
    stop(file, " holds a ", paste(class(obj), collapse = "/"), ", not a Seurat object.", call. = FALSE)
  }
  obj
}

#' Seurat .rds files and file conversion for Python (rpy2)
#'
#' Functions that Python's `pybridge.io.read_seurat()`, `pybridge.io.write_seurat()` and the
#' `pybridge convert` command line call through rpy2. `rds_to_parts()` reads a Seurat object
#' and splits it into the typed parts that `pybridge.io.anndata_from_parts()` assembles (as
#' [as.AnnData()] does in memory); `parts_to_rds()` builds a Seurat object from the parts of
#' `pybridge.io.anndata_to_parts()` (as [as.Seurat.anndata._core.anndata.AnnData()]) and saves
#' it; `convert_file()` converts `.rds` <-> `.h5ad` with [WriteH5AD()] / [ReadH5AD()].
#'
#' @param file,src Path of an existing `.rds` (or, for `convert_file()`, `.rds` or `.h5ad`) file.
#' @param dst,path Path of the file to write (written to a temporary file beside it, then renamed).
#' @param assay Assay to read (default: the default assay) or to create (default: recorded, else
#'   `"RNA"`).
#' @param layer For `rds_to_parts()` and `.rds -> .h5ad`: the layer that becomes `X` (default
#'   `"counts"`); for `.h5ad -> .rds`: the layer that receives `X` (`NULL`: automatic).
#' @param parts Parts from `pybridge.io.anndata_to_parts()`.
#' @param overwrite Replace an existing `dst`.
#' @return `rds_to_parts()`: a list of parts (names as 1-d character arrays). `parts_to_rds()`:
#'   the conversion notes (character). `convert_file()`: the notes printed by the conversion.
#' @keywords internal
#' @export
rds_to_parts <- function(file, assay = NULL, layer = "counts") {
  obj <- .read_seurat_rds(file)
  .flat_parts(.seurat_to_parts(obj, assay = assay, layer = layer, zero.copy = FALSE))
}

#' @rdname rds_to_parts
#' @export
parts_to_rds <- function(parts, path, assay = NULL) {
  obj <- .seurat_from_parts(parts, assay = assay, verbose = FALSE)
  saveRDS(obj, path)
  as.character(unlist(obj@misc[["pybridge.report"]]))
}

#' @rdname rds_to_parts
#' @export
convert_file <- function(src, dst, assay = NULL, layer = NULL, overwrite = FALSE) {
  ext <- function(f) tolower(sub(".*\\.", "", basename(f)))
  kinds <- c(ext(src), ext(dst))
  if (identical(kinds, c("rds", "h5ad"))) {
    obj <- .read_seurat_rds(src)
    return(.collect_messages(WriteH5AD(obj, dst, assay = assay, layer = layer %||% "counts", overwrite = overwrite,
                                       verbose = TRUE)))
  }
  if (identical(kinds, c("h5ad", "rds"))) {
    return(.collect_messages({
      obj <- ReadH5AD(src, assay = assay, X.layer = layer, verbose = TRUE)
      .atomic_write(dst, overwrite, function(tmp) saveRDS(obj, tmp))
    }))
  }
  stop("cannot convert ", basename(src), " to ", basename(dst), ": give one .rds and one .h5ad file ",
       "(.rds -> .h5ad or .h5ad -> .rds).", call. = FALSE)
}
