# MuData (.h5mu) files: scverse's format for several modalities (https://mudata.readthedocs.io/en/latest/io/spec.html),
# the layout for Seurat objects with several assays. Every assay is a modality mod/<assay>: the
# AnnData that WriteH5AD writes for that assay alone (all its layers, scale.data compact, its
# reductions and graphs), whatever its number of features; meta.data is the global obs, Misc the
# global uns. Reading gives the Seurat object back, one assay per modality.

# The parts of each assay (its own reductions and graphs) and the global tables.
.h5mu_parts <- function(object, assay, layer, reductions, graphs, misc, other.assays) {
  assays <- SeuratObject::Assays(object)
  assays <- c(assay, if (isTRUE(other.assays)) setdiff(assays, assay))
  report <- if (!isTRUE(other.assays)) {
    sprintf("assay '%s' not carried (other.assays = FALSE)", setdiff(SeuratObject::Assays(object), assay))
  } else character(0)
  red_assay <- vapply(SeuratObject::Reductions(object), function(r) SeuratObject::DefaultAssay(object[[r]]), "")
  graph_assay <- vapply(SeuratObject::Graphs(object), function(g) {
    da <- SeuratObject::DefaultAssay(object[[g]])
    if (length(da) == 1L && !is.na(da)) da else assay
  }, "")
  mods <- list()
  for (a in assays) {
    have <- .layer_names(object, a)
    l <- if (a == assay) layer else if ("counts" %in% have) "counts" else have[1]
    p <- .seurat_to_parts(object, assay = a, layer = l, reductions = reductions, graphs = graphs, misc = FALSE,
                          other.assays = FALSE, zero.copy = NA)
    own <- if (a == assay) !red_assay %in% setdiff(assays, assay) else red_assay == a
    p$reductions <- p$reductions[intersect(names(p$reductions), names(red_assay)[own])]
    gown <- if (a == assay) !graph_assay %in% setdiff(assays, assay) else graph_assay == a
    p$graphs <- p$graphs[intersect(names(p$graphs), names(graph_assay)[gown])]
    rep <- as.character(unlist(p$report))
    rep <- rep[!grepl("^assay '.*' not carried \\(other.assays = FALSE\\)$", rep)]
    if (a != assay) rep <- rep[!startsWith(rep, "command log") & !startsWith(rep, "images")]
    p$report <- rep
    mods[[a]] <- p
  }
  main <- mods[[assay]]
  m0 <- object@misc
  m0[["pybridge.report"]] <- NULL
  mm <- if (isTRUE(misc)) .misc_to_py(m0, "misc", character(0)) else list(value = list(), report = character(0))
  list(mods = mods, cells = as.character(unlist(main$cells)), obs = main$obs, idents = main$idents,
       misc = mm$value, report = c(report, mm$report), default = assay)
}

.h5mu_write <- function(plan, file) {
  h5 <- .h5w_create(file, userblock = 512L)
  closed <- FALSE
  on.exit(if (!closed) .h5_close(h5))
  cells <- plan$cells
  report <- plan$report
  .h5ad_write_df(h5, "obs", cells, plan$obs$names, plan$obs$columns, what = "meta.data column", categorize = TRUE)
  feats <- lapply(plan$mods, function(p) as.character(unlist(p$features)))
  .h5ad_write_df(h5, "var", unlist(feats, use.names = FALSE), list(), list(), what = "feature")
  for (g in c("obsm", "varm", "obsp", "varp")) .h5_close(.h5_group(h5, g))
  obsmap <- .h5_group(h5, "obsmap")
  varmap <- .h5_group(h5, "varmap")
  mod <- .h5_group(h5, "mod", enc = "dict")
  .h5_set_attr(mod, "mod-order", names(plan$mods), array = TRUE)
  offset <- 0L
  n_var <- sum(lengths(feats))
  for (a in names(plan$mods)) {
    p <- plan$mods[[a]]
    p$obs <- list(names = list(), columns = list())  # meta.data lives in the global obs
    p$misc <- list()
    g <- .h5_group(mod, .h5_check_name(a, "assay"), enc = "anndata")
    r <- .h5ad_write_adata(g, p)
    .h5_close(g)
    report <- c(report, if (a == plan$default) r else sprintf("assay '%s': %s", a, r))
    .h5_write(obsmap, a, seq_along(cells), enc = "array")  # 1-based positions, as mudata writes them
    vm <- integer(n_var)
    vm[offset + seq_along(feats[[a]])] <- seq_along(feats[[a]])
    .h5_write(varmap, a, vm, enc = "array")
    offset <- offset + length(feats[[a]])
  }
  .h5_close(mod)
  .h5_close(obsmap)
  .h5_close(varmap)
  uns <- .h5_group(h5, "uns")
  for (k in names(plan$misc)) .h5ad_write_uns(uns, k, plan$misc[[k]], "uns")
  meta <- list(assay = plan$default)
  if (!is.null(plan$idents)) {
    meta$idents <- list(codes = .np(as.integer(as.vector(plan$idents$values))),
                        levels = .np(as.character(unlist(plan$idents$levels))))
  }
  .h5ad_write_uns(uns, .h5ad_layout$meta, meta, "uns")
  .h5_close(uns)
  .h5_set_attr(h5, "axis", 0L)
  .h5_set_attr(h5, "encoding-type", "MuData")
  .h5_set_attr(h5, "encoding-version", .h5ad_layout$mudata_version)
  .h5_set_attr(h5, "encoder", "pybridge")
  .h5_set_attr(h5, "encoder-version", as.character(utils::packageVersion("pybridge")))
  .h5_close(h5)
  closed <- TRUE
  sig <- charToRaw(sprintf("MuData (format-version=%s;creator=pybridge;creator-version=%s)",
                           .h5ad_layout$mudata_version, utils::packageVersion("pybridge")))
  con <- file(file, "r+b")
  on.exit(close(con), add = TRUE)
  writeBin(c(sig, raw(512L - length(sig))), con)
  unique(report)
}

.h5mu_is <- function(h5, ctx) {
  info <- .h5_info(h5, "/", ctx)
  identical(.h5_enc_type(info), "MuData") || ("mod" %in% info$children && !"X" %in% info$children)
}

# An h5mu read into the parts of its default modality, plus the Seurat objects of the others.
.h5mu_read <- function(h5, ctx, X.layer = NULL, verbose = TRUE) {
  mod <- .h5_info(h5, "mod", ctx)
  order <- as.character(.h5_attr(mod, "mod-order") %||% mod$children)
  order <- order[order %in% mod$children]
  obs <- .h5ad_read_df(h5, "obs", ctx)
  uns <- if (.h5ad_exists(h5, "uns")) .h5ad_read_elem(h5, "uns", ctx) else list()
  meta <- uns[[.h5ad_layout$meta]]
  if (!is.list(meta)) meta <- list()
  default <- as.character(meta$assay %||% order[1])
  if (!default %in% order) default <- order[1]
  order <- c(default, setdiff(order, default))
  report <- character(0)
  objs <- list()
  for (a in order) {
    ad <- .h5ad_load_group(h5, ctx, paste0("mod/", a, "/"))
    keep <- match(obs$index, ad$obs$index)
    if (anyNA(keep) || length(ad$obs$index) != length(obs$index)) {
      report <- c(report, sprintf("modality '%s' not carried: it does not have the same cells as the object (Seurat assays share their cells)", a))
      next
    }
    ad$obs <- obs  # meta.data: the global obs
    p <- .h5ad_adata_parts(ad, X.layer = if (a == default) X.layer)
    p$assay <- a
    if (a == default) {
      p$misc <- .h5ad_uns_to_misc(uns[setdiff(names(uns), .h5ad_layout$meta)], "uns", character(0))$value %||% list()
      if (is.list(meta$idents)) {
        p$idents <- list(kind = "factor", values = .np(as.integer(meta$idents$codes)),
                         levels = as.list(as.character(meta$idents$levels)), ordered = FALSE)
      }
    } else {
      p$obs <- list(index = as.list(obs$index), names = list(), columns = list())
    }
    report <- c(report, if (a == default) unlist(p$report) else sprintf("assay '%s': %s", a, unlist(p$report)))
    p$report <- list()
    objs[[a]] <- .seurat_from_parts(p, assay = a, verbose = FALSE)
  }
  object <- objs[[1]]
  for (a in names(objs)[-1]) {
    o <- objs[[a]]
    taken <- c(SeuratObject::Assays(object), SeuratObject::Reductions(object), SeuratObject::Graphs(object))
    for (x in SeuratObject::Assays(o)) {
      if (x %in% taken) { report <- c(report, sprintf("assay '%s' of modality '%s' not carried: the name is taken", x, a)); next }
      object[[x]] <- o[[x]]
    }
    for (x in c(SeuratObject::Reductions(o), SeuratObject::Graphs(o))) {
      nm <- if (x %in% taken) paste0(a, "_", x) else x
      object[[nm]] <- o[[x]]
    }
  }
  object@misc[["pybridge.report"]] <- NULL
  if (length(report)) object@misc[["pybridge.report"]] <- report
  .print_report(report, verbose)
  object
}
