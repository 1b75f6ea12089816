# Writing files safely (WriteH5AD, and the .rds side of convert_file): a temporary file beside the
# target, renamed onto it when complete. Its name says who wrote it
# (.<name>.pybridge-tmp-<host>-<pid>-<random>.<ext>, the same pattern as pybridge/io/_atomic.py),
# so a write that was killed (kill -9, power loss) leaves a file the next write to that directory
# recognises and removes once its process is gone. Failures say what happened in words (disk
# full, read-only file system, no permission, a directory in the way) and leave an existing file
# untouched.

.tmp_host <- function() gsub("[^A-Za-z0-9]", "", Sys.info()[["nodename"]])

# The temporary path for `file`, owned by this process.
.tmp_path <- function(file) {
  base <- basename(file)
  stem <- sub("\\.[^.]*$", "", base)
  ext <- if (grepl(".", base, fixed = TRUE)) sub("^.*\\.", ".", base) else ""
  rand <- paste(sample(c(letters, 0:9), 8, TRUE), collapse = "")
  file.path(dirname(file), sprintf(".%s%s%s-%d-%s%s", stem, .h5ad_layout$tmp_marker, .tmp_host(), Sys.getpid(), rand, ext))
}

.pid_alive <- function(pid) {
  if (dir.exists("/proc/self")) return(dir.exists(file.path("/proc", pid)))
  TRUE  # no /proc: only files older than a day are taken as abandoned (below)
}

# Temporary files of interrupted writes in `dir` (this host's, whose process is gone): removed.
# Returns the names removed.
.clean_stale_tmp <- function(dir) {
  pat <- paste0("^\\..*", gsub(".", "\\.", .h5ad_layout$tmp_marker, fixed = TRUE), "([A-Za-z0-9]+)-([0-9]+)-[a-z0-9]+")
  cand <- list.files(dir, pattern = pat, all.files = TRUE)
  gone <- character(0)
  for (f in cand) {
    m <- regmatches(f, regexec(pat, f))[[1]]
    pid <- as.integer(m[3])
    old <- isTRUE(difftime(Sys.time(), file.mtime(file.path(dir, f)), units = "days") > 1)
    if (m[2] == .tmp_host() && pid != Sys.getpid() && (!.pid_alive(pid) || (!dir.exists("/proc/self") && old))) {
      if (isTRUE(unlink(file.path(dir, f)) == 0)) gone <- c(gone, f)
    }
  }
  gone
}

# An error of a write, in words: disk full, read-only, permission; else the original message.
.write_error <- function(e, file) {
  msg <- conditionMessage(e)
  dir <- dirname(file)
  probe <- file.path(dir, paste0(basename(.tmp_path(file)), ".probe"))  # HDF5 may not give the reason: ask the OS
  msg <- paste(msg, tryCatch({ close(file(probe, "wb")); "" }, warning = function(w) conditionMessage(w),
                             error = function(e) conditionMessage(e)))
  unlink(probe)
  free <- tryCatch(.Call(pyb_free_space, dir), error = function(e) NA_real_)
  why <- if (grepl("No space left on device|errno = 28\\b", msg) || isTRUE(free < 1e6)) {
    sprintf("the file system of '%s' is full (No space left on device: %s free)", dir,
            if (is.na(free)) "unknown" else format(structure(free, class = "object_size"), units = "auto"))
  } else if (grepl("Read-only file system|errno = 30\\b", msg)) {
    sprintf("'%s' is on a read-only file system", dir)
  } else if (grepl("Permission denied|errno = 13\\b", msg)) {
    sprintf("no permission to write in '%s'", dir)
  } else if (grepl("Disk quota exceeded|errno = 122\\b", msg)) {
    sprintf("the disk quota for '%s' is exceeded", dir)
  }
  if (is.null(why)) stop(e)
  stop("could not write '", file, "': ", why, ". ",
       if (file.exists(file)) "The existing file is untouched; " else "Nothing was written; ",
       "free space, or write elsewhere.", call. = FALSE)
}

# Atomic file writing: writer(tmp) writes the whole file to a temporary path in the target
# directory, which is then renamed onto `file`. A failure or an interruption leaves no partial
# file and an existing file untouched; an existing file is replaced only with overwrite.
# The bytes of the arrays in parts (matrix parts, reductions, graphs; nested lists): an estimate of
# the file's size, checked against the free space before writing (libhdf5 1.10 cannot close a file
# whose flush failed on a full disk, and then crashes when the process exits).
.parts_bytes <- function(x) {
  if (is.numeric(x) || is.logical(x)) return(as.numeric(length(x)) * if (is.integer(x) || is.logical(x)) 4 else 8)
  if (is.list(x)) return(sum(vapply(x, .parts_bytes, 0)))
  if (methods::is(x, "Matrix")) return(sum(vapply(c("x", "i", "p"), function(s) if (methods::.hasSlot(x, s)) .parts_bytes(methods::slot(x, s)) else 0, 0)))
  0
}

.atomic_write <- function(file, overwrite, writer, need = NULL) {
  if (!is.character(file) || length(file) != 1L || is.na(file) || !nzchar(file)) {
    stop("`file` must be one file path.", call. = FALSE)
  }
  file <- normalizePath(path.expand(file), mustWork = FALSE)
  dir <- dirname(file)
  if (!dir.exists(dir)) stop("directory '", dir, "' does not exist; create it first.", call. = FALSE)
  if (dir.exists(file)) {
    stop("'", file, "' is a directory; give the path of a file (e.g. '", file.path(file, "object.h5ad"), "').",
         call. = FALSE)
  }
  if (file.exists(file) && !isTRUE(overwrite)) {
    stop("'", file, "' already exists; use overwrite = TRUE to replace it.", call. = FALSE)
  }
  .clean_stale_tmp(dir)
  free <- tryCatch(.Call(pyb_free_space, dir), error = function(e) NA_real_)
  if (!is.null(need) && isTRUE(need > free)) {
    .write_error(simpleError(sprintf("No space left on device (about %.1f MiB needed)", need / 2^20)), file)
  }
  tmp <- .tmp_path(file)
  done <- FALSE
  on.exit(if (!done) unlink(tmp), add = TRUE)
  out <- tryCatch(writer(tmp), error = function(e) .write_error(e, file))
  if (file.exists(file) && !isTRUE(overwrite)) {
    stop("'", file, "' appeared while writing; not replaced (overwrite = FALSE).", call. = FALSE)
  }
  if (!isTRUE(suppressWarnings(file.rename(tmp, file)))) {
    stop("could not move the written file into place at '", file, "'.", call. = FALSE)
  }
  done <- TRUE
  invisible(out)
}

#' Write a Seurat object to an h5ad or h5mu file (no Python needed)
#'
#' Writes one assay of a Seurat object as an AnnData `.h5ad` file, or every assay as a MuData
#' `.h5mu` file (one modality per assay), with libhdf5 (the package's C routines over the
#' library hdf5r uses), in anndata's on-disk format (encoding-type/encoding-version attributes;
#' files open in anndata >= 0.8, scanpy, mudata and muon). The layout is the one [as.AnnData()]
#' produces in memory, so a file written here reads in Python like `as.AnnData(object)`:
#'
#' * `X`: the chosen `layer` (cells x features CSR: the dgCMatrix arrays themselves); the
#'   other layers in `layers`. `scale.data` covers only its own features: it is written as a
#'   CSR layer whose stored entries are exactly its values (every reader sees the dense matrix
#'   with 0 for the features it does not cover); the covered features are listed in
#'   `uns/pybridge/scale_data_features`.
#' * `obs` = meta.data: factors -> categoricals (all levels, order, ordered flag); logical or
#'   integer with NA -> nullable-boolean / nullable-integer; character -> string array, or
#'   a categorical when values repeat or are NA (as anndata's own write stores string columns),
#'   marked so that [ReadH5AD()] returns character. `var` = meta.features, `var$highly_variable` from VariableFeatures.
#' * Reductions -> `obsm/X_<name>`, loadings -> `varm/PCs` (pca) or `varm/<name>_loadings`,
#'   keys/stdev in `uns/pybridge/reductions` (and `uns/pca/variance`); graphs -> `obsp`;
#'   Misc -> `uns`; Idents and the conversion report -> `uns/pybridge`.
#' * Other assays: in an `.h5ad`, the counts of those of at most 1,000 features as
#'   `obsm/<assay>` tables (features as columns, as scanpy keeps protein counts); larger ones are
#'   not written (noted): write an `.h5mu` to keep them. In an `.h5mu`, every assay is a
#'   modality `mod/<assay>` (an AnnData with all its layers, its reductions and graphs), with
#'   meta.data as the global `obs`.
#'
#' The write is atomic: the file is written to a temporary file in the same directory and
#' renamed; on failure or interruption nothing is left behind and an existing file is
#' untouched. A temporary file left by a killed process is removed by the next write to that
#' directory. A full disk, a read-only file system or a directory in place of `file` give
#' errors that say so.
#'
#' @param object A Seurat object (v4 tested; v5 Assay5 untested).
#' @param file Path of the `.h5ad` (one assay) or `.h5mu` (every assay) file to write.
#' @param assay Assay to write (default: the default assay); in an `.h5mu`, the first modality.
#' @param layer Layer that becomes `X`: `"counts"` (default), `"data"` or `"scale.data"`.
#' @param compression Compression of the arrays: `"none"` (default, as anndata), `"gzip"`
#'   (level 4, as anndata's `compression = "gzip"`) or `"lzf"` (h5py's filter, faster, larger
#'   files; anndata and h5py read it). Compressed arrays are chunked as h5py chunks them.
#' @param overwrite Replace an existing `file` (default `FALSE`: error).
#' @param verbose Print what could not be carried (command log, images, ...).
#' @param reductions,graphs,misc,other.assays Carry reductions, graphs, Misc and the other
#'   assays (default `TRUE`).
#' @param ... Unused.
#' @return The path of the written file, invisibly.
#' @seealso [ReadH5AD()], [as.AnnData()]; anndata's file format:
#'   <https://anndata.readthedocs.io/en/latest/fileformat-prose.html>; MuData's:
#'   <https://mudata.readthedocs.io/en/latest/io/spec.html>.
#' @export
WriteH5AD <- function(object, file, assay = NULL, layer = "counts", compression = c("none", "gzip", "lzf"),
                      overwrite = FALSE, verbose = TRUE, reductions = TRUE, graphs = TRUE, misc = TRUE,
                      other.assays = TRUE, ...) {
  assay <- .check_seurat(object, assay)
  if (!is.character(file) || length(file) != 1L || is.na(file)) stop("`file` must be one file path.", call. = FALSE)
  if (!is.character(compression) || !length(compression) || !compression[1] %in% c("none", "gzip", "lzf")) {
    stop("`compression` must be \"none\", \"gzip\" or \"lzf\".", call. = FALSE)
  }
  compression <- compression[1]
  if (dir.exists(file)) {
    stop("'", file, "' is a directory; give the path of a file (e.g. '", file.path(file, "object.h5ad"), "').", call. = FALSE)
  }
  if (file.exists(file) && !isTRUE(overwrite)) {
    stop("'", file, "' already exists; use overwrite = TRUE to replace it.", call. = FALSE)
  }
  h5mu <- grepl("\\.h5mu$", file, ignore.case = TRUE)
  write <- if (h5mu) {
    plan <- .h5mu_parts(object, assay, layer, reductions, graphs, misc, other.assays)
    function(tmp) .h5mu_write(plan, tmp)
  } else {
    parts <- .seurat_to_parts(object, assay = assay, layer = layer, reductions = reductions, graphs = graphs,
                              misc = misc, other.assays = other.assays, zero.copy = NA)
    function(tmp) .h5ad_write_parts(parts, tmp)
  }
  need <- .parts_bytes(if (h5mu) plan$mods else parts) / if (compression == "none") 1 else 4
  report <- .h5_with_compression(compression, .atomic_write(file, overwrite, write, need = need))
  .print_report(report, verbose)
  invisible(normalizePath(file))
}
