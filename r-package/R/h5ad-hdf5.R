# HDF5 primitives over hdf5r for the h5ad files (h5ad-write.R, h5ad-read.R): typed attributes,
# datasets and groups with anndata's encoding attributes, reading datasets and attributes, and
# errors that name the file and the element.
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
  if (!is.null(enc)) .h5_enc(ds, enc, .h5ad_encodings[[enc]])
  ds$close()
  invisible(NULL)
}

.h5_group <- function(g, name, enc = "dict") {
  grp <- g$create_group(name)
  .h5_enc(grp, enc, .h5ad_encodings[[enc]])
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

.h5ad_exists <- function(h5, path) isTRUE(tryCatch(h5$exists(path), error = function(e) FALSE))
