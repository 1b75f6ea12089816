# HDF5 primitives for the h5ad files (h5ad-write.R, h5ad-read.R): typed attributes, datasets and
# groups with anndata's encoding attributes, reading datasets and attributes, and errors that name
# the file and the element. hdf5r for files, groups, attributes and scalars; the package's C
# routines (src/h5io.c, over the same libhdf5) for arrays.

# ---------------------------------------------------------------------------- writing (C routines)
# Files and groups being written are ids from src/h5io.c (class "pyb_h5loc"; `$id` as an hdf5r
# object's, so the same primitives also write into objects hdf5r opened).
.h5w_loc <- function(id) structure(list(id = id), class = "pyb_h5loc")
.h5w_create <- function(file, userblock = 0L) .h5w_loc(.Call(pyb_h5_create, file, as.integer(userblock)))

# An attribute as h5py writes the Python value: character -> UTF-8 string (array = TRUE: a 1-d
# array; an empty one: an empty float64 array, as anndata), logical -> bool, numbers -> int64.
.h5_set_attr <- function(obj, name, value, array = FALSE) {
  if (!is.character(value) && !is.logical(value)) value <- as.double(value)
  .Call(pyb_h5_attr, obj$id, name, value, isTRUE(array))
  invisible(NULL)
}

.h5_enc <- function(obj, type, version) {
  .h5_set_attr(obj, "encoding-type", type)
  .h5_set_attr(obj, "encoding-version", version)
}

# A dataset, chunked and compressed as the current write asks (.h5_compression()) unless scalar
# (anndata never compresses scalars). `ftype`: the file type ("f64", "f32", "i64", "i32", "i16",
# "i8", "u8", "bool", "str"; default from the R type, as h5py stores NumPy's dtypes). R matrices
# are written as they lie in memory, so an R matrix of dim (a, b) becomes a dataset of shape (b, a).
.h5_write <- function(g, name, x, enc = NULL, ftype = NULL, scalar = FALSE) {
  if (is.character(x) && anyNA(x)) x[is.na(x)] <- ""
  if (is.logical(x) && anyNA(x)) x[is.na(x)] <- FALSE
  if (is.null(ftype)) ftype <- if (is.character(x)) "str" else if (is.logical(x)) "bool" else if (is.integer(x)) "i32" else "f64"
  if (!is.double(x) && !is.integer(x) && !is.logical(x) && !is.character(x)) storage.mode(x) <- "double"
  dims <- if (scalar) numeric(0) else if (is.null(dim(x))) length(x) else rev(dim(x))
  e <- if (is.null(enc)) character(0) else c(enc, .h5ad_encodings[[enc]])
  .Call(pyb_h5_write, g$id, name, x, as.numeric(dims), ftype, if (scalar) c(0L, 0L) else .h5_compression(), e)
  invisible(NULL)
}

# Compression of the arrays of the current write: c(kind, level), kind 0 none, 1 gzip (level 4, as
# h5py's compression = "gzip"), 2 lzf.
.h5c <- new.env(parent = emptyenv())
.h5_compression <- function() .h5c$compression %||% c(0L, 0L)
.h5_with_compression <- function(compression, expr) {
  old <- .h5c$compression
  on.exit(.h5c$compression <- old)
  .h5c$compression <- switch(compression, none = c(0L, 0L), gzip = c(1L, 4L), lzf = c(2L, 0L))
  expr
}

.h5_group <- function(g, name, enc = "dict") .h5w_loc(.Call(pyb_h5_group, g$id, name, c(enc, .h5ad_encodings[[enc]])))

# Close a group or file being written (a file: with everything still open in it), or a file
# hdf5r opened. hdf5r's close_all() starts with a full gc() (about 0.5 s with Seurat loaded):
# when every object in the file is already closed (as the reader's code does), flush and close
# the file id directly, else fall back to close_all().
.h5_close <- function(h5) {
  if (inherits(h5, "pyb_h5loc")) {
    .Call(pyb_h5_close, h5$id)
    return(invisible(NULL))
  }
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

# ---------------------------------------------------------------------------- reading (C routines)
.h5ad_fail <- function(ctx, path, msg) {
  if (!startsWith(path, "/")) path <- paste0("/", path)
  stop(sprintf("%s: element '%s' %s", ctx$file, path, msg), call. = FALSE)
}

# The useful part of an HDF5 error: the messages of HDF5's error stack (src/h5io.c collects them;
# hdf5r's format is also understood).
.h5ad_cond_msg <- function(e) {
  m <- conditionMessage(e)
  if (startsWith(m, "HDF5 could not")) return(sub("^HDF5 could not [^']*'[^']*': ", "", m))
  m <- strsplit(m, "\n", fixed = TRUE)[[1]]
  m <- trimws(m[nzchar(trimws(m))])
  hits <- regmatches(m, regexpr("error #[0-9]+:.* line [0-9]+: .*$", m))
  if (length(hits)) return(paste(unique(sub("^.* line [0-9]+: ", "", hits)), collapse = "; "))
  paste(utils::head(m, 3L), collapse = " ")
}

# A file opened read-only (a "pyb_h5loc"; close with .h5_close()).
.h5r_open <- function(file) .h5w_loc(.Call(pyb_h5_open, normalizePath(file)))

# One object of the file: list(kind = "group" | "dataset" | "missing" | "unreadable", attrs = named
# list, children = names (groups), class = "float" | "integer" | "string" | "enum" | "compound",
# shape = HDF5 dims (datasets)). Attributes, children and type in one call (src/h5read.c).
.h5_info <- function(h5, path, ctx, must = TRUE) {
  info <- .Call(pyb_h5_info, h5$id, path)
  if (must && info$kind %in% c("missing", "unreadable")) {
    .h5ad_fail(ctx, path, if (info$kind == "missing") "is missing (file truncated or corrupt?)." else
      "could not be opened (file truncated or corrupt?).")
  }
  info
}

.h5ad_exists <- function(h5, path) !.Call(pyb_h5_info, h5$id, path)$kind %in% c("missing", "unreadable")

# An attribute of an object (from .h5_info()); NULL when absent.
.h5_attr <- function(info, name) info$attrs[[name]]

.h5_enc_type <- function(info) {
  e <- .h5_attr(info, "encoding-type")
  if (is.null(e) || !length(e)) "" else as.character(e)[1]
}

# Read dataset `path` as R vector or matrix (an HDF5 shape (a, b) gives an R matrix of dim (b, a)).
# as: "auto" (R's type for the file type), "double" or "integer" (numbers converted by HDF5 while
# reading, no second copy). Numbers and strings through the C routine; compound and other enum
# datasets through hdf5r.
.h5_read_ds <- function(h5, path, ctx, as = "auto") {
  a <- match(as, c("auto", "double", "integer")) - 1L
  v <- tryCatch(.Call(pyb_h5_read, h5$id, path, a), error = function(e) {
    .h5ad_fail(ctx, path, paste0("could not be read (file truncated or corrupt?): ", .h5ad_cond_msg(e)))
  })
  if (!is.null(v)) return(v)
  f <- hdf5r::H5File$new(ctx$file, mode = "r")
  on.exit(f$close_all())
  ds <- f[[path]]
  dims <- ds$dims
  cls <- tryCatch(as.character(ds$get_type()$get_class()), error = function(e) "")
  if (length(dims) && any(dims == 0)) return(if (cls == "H5T_STRING") character(0) else numeric(0))
  v <- tryCatch(ds$read(), error = function(e) {
    .h5ad_fail(ctx, path, paste0("could not be read (file truncated or corrupt?): ", .h5ad_cond_msg(e)))
  })
  if (inherits(v, "integer64")) v <- as.double(v)
  if (cls == "H5T_ENUM" && is.factor(v)) v <- as.character(v)
  v
}
