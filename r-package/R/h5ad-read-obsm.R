# Reading h5ad files (h5ad-read.R): obsm -> reductions and assays, scale.data, and the conventions
# of files that zellkonverter wrote (the names come from the shared table .h5ad_layout).

# The X_name that zellkonverter records (uns['X_name']: the SingleCellExperiment assay that became
# X), or NULL for files from elsewhere (and for pybridge's own files).
.h5ad_zellkonverter <- function(ad, meta) {
  xn <- ad$uns[[.h5ad_layout$zellkonverter_x_name]]
  if (length(meta) || !is.character(xn) || length(xn) != 1L) return(NULL)
  xn
}

# scale.data: dense (the bridge's in-memory layout: 0 outside its features) or sparse (pybridge's
# file layout: entries only in its features' columns, h5ad-write.R); its features from
# uns['pybridge']['scale_data_features'], else the columns that hold values.
.h5ad_scale_data <- function(el, meta, features) {
  if (!is.null(meta$scale_data_features)) {
    sfeat <- as.character(meta$scale_data_features)
  } else if (inherits(el, "h5ad_sparse")) {
    p <- .h5ad_matrix_parts(el, transpose = TRUE)$sparse
    sfeat <- features[sort(unique(p$i)) + 1L]
  } else {
    sfeat <- features
  }
  pos <- match(sfeat, features)
  sfeat <- sfeat[!is.na(pos)]
  pos <- pos[!is.na(pos)]
  if (inherits(el, "h5ad_sparse")) {
    m <- .h5ad_matrix_parts(el, transpose = TRUE)$sparse
    v <- as.matrix(.h5ad_dgc(m$x, m$i, m$p, m$dim)[pos, , drop = FALSE])
  } else {
    v <- el$value[pos, , drop = FALSE]
    storage.mode(v) <- "double"
  }
  list(part = list(dense = v), features = sfeat)
}

# obsm -> reductions (with loadings from varm, keys and stdev from uns['pybridge']) and assays
# (data frames of numbers, e.g. protein counts; pybridge records its own in assays_in_obsm).
# zellkonverter writes reducedDims with column names as data frames: those are reductions.
.h5ad_reductions <- function(ad, meta, uns, zk, ctx) {
  L <- .h5ad_layout
  features <- ad$var$index
  n_obs <- ad$n_obs
  n_vars <- ad$n_vars
  report <- character(0)
  reductions <- list()
  assays <- list()
  red_meta <- if (is.list(meta$reductions)) meta$reductions else list()
  assays_obsm <- as.character(unlist(meta$assays_in_obsm))
  for (key in names(ad$obsm)) {
    el <- ad$obsm[[key]]
    if (inherits(el, "h5ad_df")) {
      isnum <- vapply(el$columns, function(v) (is.numeric(v) || is.logical(v)) && !is.factor(v), logical(1))
      if (!is.null(zk) && length(isnum) && all(isnum) && !key %in% assays_obsm) {
        m <- matrix(unlist(lapply(el$columns, as.double), use.names = FALSE), nrow = n_obs)
        el <- structure(list(value = t(m), shape = dim(m)), class = "h5ad_dense")
        report <- c(report, sprintf("obsm['%s'] (a data frame, as zellkonverter writes reducedDims) became reduction '%s'", key, key))
      } else if (key %in% assays_obsm || all(isnum)) {
        m <- if (length(el$columns)) do.call(rbind, lapply(el$columns, as.double)) else matrix(0, 0, n_obs)
        m <- methods::as(methods::as(m, "CsparseMatrix"), "generalMatrix")
        assays[[key]] <- list(sparse = list(x = m@x, i = m@i, p = m@p, dim = dim(m)), features = as.list(names(el$columns)))
        if (!key %in% assays_obsm) report <- c(report, sprintf("obsm['%s'] (a DataFrame) became assay '%s'", key, key))
        next
      } else {
        report <- c(report, sprintf("obsm['%s'] is a DataFrame with non-numeric columns; not carried", key))
        next
      }
    }
    name <- .h5ad_reduction_name(key)
    emb <- .h5ad_dense_rows(el)
    if (is.null(emb)) {
      report <- c(report, sprintf("obsm['%s'] is not a numeric matrix; not carried", key))
      next
    }
    info <- if (is.list(red_meta[[name]])) red_meta[[name]] else list()
    r <- list(embeddings = emb, key = as.character(info$key %||% ""), assay = as.character(info$assay %||% ""),
              global = isTRUE(as.logical(info$global)))
    if (!is.null(info$stdev)) r$stdev <- .np(as.double(info$stdev))
    load <- ad$varm[[.h5ad_varm_key(name)]]
    load <- if (!is.null(load)) .h5ad_dense_rows(load)
    if (!is.null(load) && ncol(load) == ncol(emb) && nrow(load) == n_vars) {
      lf <- if (!is.null(info$loadings_features)) as.character(info$loadings_features) else
        features[rowSums(load != 0) > 0]
      pos <- match(lf, features)
      if (anyNA(pos)) {  # files that named loadings features with Seurat's '-' for '_'
        pos2 <- match(lf, gsub("_", "-", features, fixed = TRUE))
        lf[is.na(pos) & !is.na(pos2)] <- features[pos2[is.na(pos) & !is.na(pos2)]]
        pos[is.na(pos)] <- pos2[is.na(pos)]
      }
      lf <- lf[!is.na(pos)]
      r$loadings <- load[pos[!is.na(pos)], , drop = FALSE]
      r$loadings_features <- as.list(lf)
    }
    pv <- L$pca_variance
    if (name == pv[1] && is.null(r$stdev) && is.list(uns[[pv[1]]]) && !is.null(uns[[pv[1]]][[pv[2]]])) {
      r$stdev <- .np(sqrt(as.double(uns[[pv[1]]][[pv[2]]])))
    }
    reductions[[name]] <- r
  }
  used_varm <- vapply(names(reductions), .h5ad_varm_key, "")
  for (k in setdiff(names(ad$varm), used_varm)) {
    report <- c(report, sprintf("varm['%s'] has no matching reduction (obsm['X_...']); not carried", k))
  }
  list(reductions = reductions, assays = assays, report = report)
}

# The key of an assay made from an AnnData name (layers['csc_counts'], obsm['dense_X'], a modality):
# what both SeuratObject 4 ('^[[:alnum:]]+_$') and 5 ('^[a-zA-Z][a-zA-Z0-9]*_$') accept as is, so that
# Seurat neither warns ("Keys should be one or more alphanumeric characters followed by an
# underscore") nor picks a random key: ASCII letters and digits of the name, lower case, starting
# with a letter, unique among `taken` (the object's keys so far).
.seurat_key <- function(name, taken = character(0)) {
  base <- tolower(gsub("[^A-Za-z0-9]", "", name))
  if (!grepl("^[a-z]", base)) base <- paste0("x", base)
  key <- paste0(base, "_")
  if (key %in% taken) {
    more <- paste0(base, seq_len(length(taken) + 1L), "_")
    key <- more[!more %in% taken][1]
  }
  key
}
