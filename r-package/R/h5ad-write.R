# Writing h5ad files from R without Python: the parts of one Seurat assay (.seurat_to_parts(),
# the parts as.AnnData() sends to Python) laid out as pybridge.io.anndata_from_parts() lays them
# out in an AnnData (keys from the shared table .h5ad_layout, h5ad-layout.R), in anndata's on-disk
# format (https://anndata.readthedocs.io/en/latest/fileformat-prose.html).

# obsm key of a reduction and varm key of its loadings (pybridge/io/_layout.py: obsm_key, varm_key).
.h5ad_obsm_key <- function(name) paste0(.h5ad_layout$reduction_prefix, name)
.h5ad_varm_key <- function(name) .h5ad_layout$loadings_named[[name]] %||% paste0(name, .h5ad_layout$loadings_suffix)
.h5ad_reduction_name <- function(key) {
  p <- .h5ad_layout$reduction_prefix
  if (startsWith(key, p)) substring(key, nchar(p) + 1L) else key
}

.h5ad_write_sparse <- function(g, name, x, i, p, shape, format = "csr_matrix") {
  if (length(x) > .Machine$integer.max) stop("more than 2^31-1 non-zeros in '", name, "'", call. = FALSE)
  grp <- .h5_group(g, name, format)
  .h5_set_attr(grp, "shape", as.integer(shape), array = TRUE)
  .h5_write(grp, "data", if (is.double(x)) x else as.double(x))
  .h5_write(grp, "indices", if (is.integer(i)) i else as.integer(i))
  .h5_write(grp, "indptr", if (is.integer(p)) p else as.integer(p))
  .h5_close(grp)
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

.h5ad_small_int_type <- function(n) if (n < 128L) "i8" else if (n < 32768L) "i16" else "i32"  # as pandas' codes

.h5ad_write_categorical <- function(g, name, codes, levels, ordered, r.type = NULL) {
  grp <- .h5_group(g, name, "categorical")
  .h5_set_attr(grp, "ordered", isTRUE(ordered))
  if (!is.null(r.type)) .h5_set_attr(grp, .h5ad_layout$r_type_attr, r.type)
  codes <- as.integer(codes)
  codes[is.na(codes)] <- -1L
  .h5_write(grp, "codes", codes, enc = "array", ftype = .h5ad_small_int_type(length(levels)))
  .h5_write(grp, "categories", as.character(levels), enc = "string-array")
  .h5_close(grp)
}

# One data.frame column from its parts (pybridge/io/_parts.py: column_from_parts). `categorize`
# (obs and var): a character column with repeated values or NA is written as a categorical with
# sorted categories, as anndata's write_h5ad stores it (AnnData.strings_to_categoricals: the same
# file content, and far smaller than one string per cell); the attribute .h5ad_layout$r_type_attr
# lets ReadH5AD give character back.
.h5ad_write_column <- function(g, name, p, categorize = FALSE) {
  mask <- if (!is.null(p$mask)) as.logical(as.vector(p$mask)) else logical(0)
  has_na <- length(mask) > 0L && any(mask)
  switch(p$kind,
    factor = .h5ad_write_categorical(g, name, as.vector(p$values), as.character(unlist(p$levels)), p$ordered),
    logical = , integer = {
      v <- as.vector(p$values)
      if (p$kind == "logical") v <- as.logical(v) else v <- as.integer(v)
      if (has_na) {
        grp <- .h5_group(g, name, if (p$kind == "logical") "nullable-boolean" else "nullable-integer")
        v[mask] <- if (p$kind == "logical") FALSE else 0L
        .h5_write(grp, "values", v, enc = "array")
        .h5_write(grp, "mask", mask, enc = "array")
        .h5_close(grp)
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
      if (has_na) v[mask] <- NA_character_
      lv <- if (has_na || categorize) unique(v[!mask])
      if (has_na || (categorize && length(lv) < length(v))) {
        # a string column with missing values is a categorical in any case (pandas' string
        # arrays have no missing value that every anndata >= 0.8 reads)
        lv <- sort(lv, method = "radix")  # pandas' order (code points)
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
.h5ad_write_df <- function(g, name, index, names, columns, what = "column", categorize = FALSE) {
  names <- as.character(unlist(names))
  grp <- .h5_group(g, name, "dataframe")
  on.exit(.h5_close(grp))
  idx_name <- "_index"
  while (idx_name %in% names) idx_name <- paste0("_", idx_name)
  .h5_set_attr(grp, "_index", idx_name)
  .h5_set_attr(grp, "column-order", names, array = TRUE)
  .h5_write(grp, idx_name, as.character(unlist(index)), enc = "string-array")
  for (j in seq_along(names)) {
    .h5ad_write_column(grp, .h5_check_name(names[j], what), columns[[j]], categorize)
  }
  invisible(NULL)
}

# An uns value (what .misc_to_py() makes for Python; pybridge/io/_bridge.py: uns_from_r).
.h5ad_write_uns <- function(g, name, x, path) {
  .h5_check_name(name, paste0("uns entry under '", path, "'"))
  if (is.null(x)) return(invisible(NULL))
  if (is.list(x) && !is.null(x[["__pybridge_dataframe__"]])) {
    p <- x[["__pybridge_dataframe__"]]
    nms <- as.character(unlist(p$names))
    if (length(nms) && any(!nzchar(nms) | grepl("/", nms, fixed = TRUE) | nms %in% c(".", ".."))) {
      return(.h5ad_write_recarray(g, name, nms, p$columns))  # names HDF5 cannot hold as elements
    }
    return(.h5ad_write_df(g, name, p$index, p$names, p$columns, what = paste0("column of ", path, "/", name)))
  }
  if (is.list(x)) {
    grp <- .h5_group(g, name)
    on.exit(.h5_close(grp))
    nms <- names(x)
    if (is.null(nms)) nms <- as.character(seq_along(x) - 1L)
    for (k in seq_along(x)) .h5ad_write_uns(grp, nms[k], x[[k]], paste0(path, "/", name))
    return(invisible(NULL))
  }
  d <- dim(x)
  if (is.factor(x)) x <- as.character(x)
  if (is.null(d) && length(x) == 1L) {
    if (is.character(x)) return(.h5_write(g, name, x, enc = "string", scalar = TRUE))
    dt <- if (is.integer(x)) "i64" else NULL
    return(.h5_write(g, name, x, enc = "numeric-scalar", ftype = dt, scalar = TRUE))
  }
  enc <- if (is.character(x)) "string-array" else "array"
  if (length(d) >= 2L) {
    x <- aperm(x)  # numpy (C order) holds the same shape as the R array
  } else {
    x <- as.vector(x)
  }
  .h5_write(g, name, x, enc = enc)
}

# A table whose column names cannot be HDF5 element names (e.g. scanpy's rank_genes_groups
# tables, keyed by cluster names such as 'CD4+/CD25 T Reg', read from a rec-array): written as
# anndata's rec-array (a compound dataset, its columns as fields; the row names are 0..n-1).
.h5ad_write_recarray <- function(g, name, names, columns) {
  cols <- lapply(columns, function(p) {
    if (identical(p$kind, "factor")) {
      codes <- as.integer(as.vector(p$values))
      v <- as.character(unlist(p$levels))[ifelse(codes >= 0L, codes + 1L, NA_integer_)]
      v[is.na(v)] <- ""
    } else {
      v <- if (identical(p$kind, "character")) as.character(unlist(p$values)) else as.vector(p$values)
    }
    mask <- as.logical(as.vector(p$mask %||% logical(0)))
    if (length(mask) && any(mask)) {
      if (is.character(v)) v[mask] <- "" else { v <- as.double(v); v[mask] <- NaN }
    }
    if (!is.double(v) && !is.integer(v) && !is.logical(v) && !is.character(v)) v <- as.double(v)
    v
  })
  names(cols) <- names
  .Call(pyb_h5_write_compound, g$id, name, cols, .h5_compression(), c("rec-array", .h5ad_encodings[["rec-array"]]))
  invisible(NULL)
}

# Write the parts of one Seurat assay as an h5ad file (pybridge/io/_bridge.py: anndata_from_parts,
# then anndata's write_h5ad). Returns the conversion notes.
.h5ad_write_parts <- function(parts, file) {
  h5 <- .h5w_create(file)
  on.exit(.h5_close(h5))
  .h5_enc(h5, "anndata", .h5ad_encodings$anndata)
  .h5ad_write_adata(h5, parts)
}

# The AnnData of one assay's parts, written into the file or group h5 (an h5ad's root, or a
# modality of an .h5mu).
.h5ad_write_adata <- function(h5, parts) {
  L <- .h5ad_layout
  cells <- as.character(unlist(parts$cells))
  features <- as.character(unlist(parts$features))
  n_obs <- length(cells)
  n_vars <- length(features)
  report <- as.character(unlist(parts$report))
  meta <- list(assay = as.character(parts$assay %||% "RNA"), X_layer = as.character(parts$X_layer %||% "counts"),
               seurat_version = as.character(parts$seurat_version %||% ""), reductions = list())

  misc <- parts$misc
  if (isTRUE(misc[[L$misc_x_absent]])) {  # read from a file without X: none written back
    misc[[L$misc_x_absent]] <- NULL
  } else if (!is.null(parts$X)) {
    .h5ad_write_matrix_part(h5, "X", parts$X)
  }

  layers <- .h5_group(h5, "layers")
  for (name in names(parts$layers)) {
    part <- parts$layers[[name]]
    if (name == L$scale_data) {
      sfeat <- as.character(unlist(parts$scale_data_features))
      .h5ad_write_scale_data(layers, name, part, sfeat, features)
      meta$scale_data_features <- sfeat
    } else {
      .h5ad_write_matrix_part(layers, .h5_check_name(name, "layer"), part)
    }
  }
  .h5_close(layers)

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
    j <- match(L$highly_variable, var_names_cols)
    if (is.na(j)) {
      var_names_cols <- c(var_names_cols, L$highly_variable)
      var_cols <- c(var_cols, list(hv))
    } else {
      var_cols[[j]] <- hv
    }
    meta$variable_features <- vf
  }
  .h5ad_write_df(h5, "obs", cells, parts$obs$names, parts$obs$columns, what = "meta.data column", categorize = TRUE)
  .h5ad_write_df(h5, "var", var_names, var_names_cols, var_cols, what = "meta.features column", categorize = TRUE)

  obsm <- .h5_group(h5, "obsm")
  varm <- .h5_group(h5, "varm")
  uns_generated <- list()
  for (name in names(parts$reductions)) {
    red <- parts$reductions[[name]]
    emb <- red$embeddings
    if (is.null(dim(emb))) emb <- matrix(emb, ncol = 1L)
    storage.mode(emb) <- "double"
    .h5_write(obsm, .h5_check_name(.h5ad_obsm_key(name), "reduction"), t(emb), enc = "array")
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
      .h5_write(varm, .h5ad_varm_key(name), t(full), enc = "array")
      info$loadings_features <- var_names[pos[!is.na(pos)]]  # named as var_names (originals if restored)
    }
    pv <- L$pca_variance
    if (name == pv[1] && !is.null(info$stdev) && !pv[1] %in% names(misc)) {
      uns_generated[[pv[1]]] <- stats::setNames(list(.np(sd^2)), pv[2])  # scanpy's place for it
      meta$uns_generated <- pv[1]
    }
    meta$reductions[[name]] <- info
  }
  for (name in names(parts$other_assays)) {
    a <- parts$other_assays[[name]]
    fn <- as.character(unlist(a$features))
    if (length(fn) > L$obsm_assay_max_features || sum(nchar(fn, "bytes") + 1) > 60000) {
      report <- c(report, sprintf(paste0("assay '%s' (%d features) not written: an .h5ad keeps other assays as obsm ",
                                         "tables of at most %d features; write an .h5mu file (one modality per assay, ",
                                         "sparse) to keep it, or WriteH5AD(assay = '%s')"),
                                  name, length(fn), L$obsm_assay_max_features, name))
      next
    }
    m <- t(as.matrix(.matrix_from_parts(a$X)))  # cells x features
    cols <- lapply(seq_len(ncol(m)), function(k) list(kind = "double", values = m[, k], mask = logical(0)))
    .h5ad_write_df(obsm, .h5_check_name(name, "assay"), cells, fn, cols, what = paste0("feature of assay ", name))
    meta$assays_in_obsm <- c(meta$assays_in_obsm, name)
  }
  .h5_close(obsm)
  .h5_close(varm)

  obsp <- .h5_group(h5, "obsp")
  for (name in names(parts$graphs)) {
    g <- parts$graphs[[name]]
    tg <- Matrix::t(.matrix_from_parts(list(sparse = g)))  # CSR arrays of a graph = CSC arrays of its transpose
    .h5ad_write_sparse(obsp, .h5_check_name(name, "graph"), tg@x, tg@i, tg@p, dim(tg))
  }
  .h5_close(obsp)
  .h5_close(.h5_group(h5, "varp"))

  if (!is.null(parts$idents)) {
    meta$idents <- list(codes = .np(as.integer(as.vector(parts$idents$values))),
                        levels = .np(as.character(unlist(parts$idents$levels))))
  }
  meta$report <- .np(as.character(report))
  meta$assay_class <- parts$assay_class  # Seurat 5 records (layers.R): assay class, layer split
  if (!is.null(parts$split)) {
    meta$split <- list(key = as.character(parts$split$key), levels = .np(as.character(unlist(parts$split$levels))),
                       added = isTRUE(as.logical(parts$split$added)), layers = .np(as.character(unlist(parts$split$layers))))
  }
  uns <- .h5_group(h5, "uns")
  for (k in names(uns_generated)) .h5ad_write_uns(uns, k, uns_generated[[k]], "uns")
  for (k in names(misc)) .h5ad_write_uns(uns, k, misc[[k]], "uns")
  for (k in c("scale_data_features", "variable_features", "uns_generated", "assays_in_obsm")) {
    if (!is.null(meta[[k]])) meta[[k]] <- .np(meta[[k]])
  }
  stopifnot(all(names(meta) %in% L$meta_keys))  # the shared table lists every entry
  .h5ad_write_uns(uns, L$meta, meta, "uns")
  .h5_close(uns)
  report
}

# scale.data over its own features only, as a CSR layer of the assay's shape (cells x features)
# whose stored entries are exactly its values (explicit zeros kept): every reader sees an ordinary
# sparse layer equal to the padded dense one (0 outside its features); the features are listed in
# uns['pybridge']['scale_data_features'] (h5ad-read-obsm.R: .h5ad_scale_data reads both layouts).
.h5ad_write_scale_data <- function(g, name, part, sfeat, features) {
  m <- part$dense %||% as.matrix(.matrix_from_parts(part))  # scale features x cells
  pos <- match(sfeat, features)
  keep <- which(!is.na(pos))
  o <- keep[order(pos[keep])]
  n_obs <- ncol(m)
  k <- length(o)
  x <- as.vector(m[o, , drop = FALSE])  # for each cell, its values in feature order
  storage.mode(x) <- "double"
  .h5ad_write_sparse(g, name, x, rep.int(as.integer(pos[o] - 1L), n_obs), as.integer(seq.int(0, by = k, length.out = n_obs + 1L)),
                     c(n_obs, length(features)))
}
