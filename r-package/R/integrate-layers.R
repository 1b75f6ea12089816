# scVI as an integration method of Seurat v5's IntegrateLayers() (the contract is documented in
# Seurat's ?IntegrationMethods): receives the assay, returns a named list holding a DimReduc.
# The engine is the same as RunSCVI()'s (pybridge.tl.integrate_scvi).

# Arguments IntegrateLayers() passes to every method; the rest of `...` must be used or it is an error.
.integration_contract <- c("assay", "orig", "layers", "scale.layer", "features", "groups")

# The batch of each cell: `groups` (a data frame whose first column is the batch, or a named
# vector), else the split of `layers` (e.g. data.CTRL/data.STIM as IntegrateLayers passes them),
# else the split of the counts layers. NULL when there is no split.
.integration_batch <- function(object, assay, cells, groups, layers, counts_split) {
  if (!is.null(groups)) {
    if (is.data.frame(groups)) {
      if (ncol(groups) < 1L) stop("`groups` must be a data frame whose first column is the batch.", call. = FALSE)
      b <- stats::setNames(as.character(groups[[1]]), rownames(groups))
    } else if (is.atomic(groups) && !is.null(names(groups))) {
      b <- stats::setNames(as.character(groups), names(groups))
    } else {
      stop("`groups` must be a data frame (rows = cells, first column = batch) or a named vector, e.g. ",
           "groups = obj[[\"donor\"]].", call. = FALSE)
    }
    if (!all(cells %in% names(b))) {
      stop("`groups` has no batch for ", sum(!cells %in% names(b)), " of the ", length(cells),
           " cells (its row names must be the cell names).", call. = FALSE)
    }
    b <- b[cells]
    if (anyNA(b)) stop("`groups` has NA batches; every cell needs one.", call. = FALSE)
    return(factor(b))
  }
  if (.is_v5_assay(object) && length(layers) > 1L && all(layers %in% .Layers(object))) {
    lc <- lapply(layers, function(l) SeuratObject::Cells(object, layer = l))
    if (setequal(unlist(lc), cells) && !anyDuplicated(unlist(lc))) {
      nm <- sub("^[^.]*\\.", "", layers)  # data.CTRL -> CTRL
      b <- stats::setNames(rep(nm, lengths(lc)), unlist(lc))
      return(factor(b[cells], levels = unique(nm)))
    }
  }
  counts_split
}

#' scVI integration for Seurat v5 `IntegrateLayers()`
#'
#' An integration method for Seurat v5's [Seurat::IntegrateLayers()], as in Seurat's
#' integration vignette: split the layers by batch, normalise, find variable features, scale,
#' run PCA, then
#' `IntegrateLayers(obj, method = scVIIntegration, orig.reduction = "pca", new.reduction = "integrated.scvi")`.
#' It trains an scvi-tools scVI model (Lopez et al. 2018, Nat Methods 15:1053) on the raw
#' **counts** layers (`counts.<batch>`, joined in the object's cell order; whatever normalised
#' `layers` IntegrateLayers passes are used only to know each cell's batch), with one batch per
#' layer of the split (or per `groups`), on the `features` IntegrateLayers passes (its variable
#' features), and returns the latent space as the DimReduc `new.reduction` (its `misc` holds the
#' training parameters, genes, cells per batch and ELBO history). Runs on the GPU when there is
#' one. The engine is `pybridge.tl.integrate_scvi`, the same as [RunSCVI()]'s.
#'
#' **SeuratWrappers** has a function of the same name (`SeuratWrappers::scVIIntegration`): the
#' arguments, their defaults (`ndims = 30`, `nlayers = 2`, `gene_likelihood = "nb"`,
#' `new.reduction = "integrated.dr"`) and the result are the same, so a vignette call works
#' unchanged; this one runs scVI in pybridge's Python environment (no `conda_env`: given, it
#' is ignored with a warning), takes `groups` for a batch other than the split, adds
#' `batch.size`, `device`, `seed`, `verbose`, and any argument of
#' `pybridge.tl.integrate_scvi` (e.g. `kl_warmup_epochs`, `train_kwargs`). With both packages
#' attached, the one attached last masks the other: name it,
#' `IntegrateLayers(obj, method = pybridge::scVIIntegration, ...)`.
#'
#' @param object The assay, as `IntegrateLayers()` passes it: an `Assay5` with split counts
#'   layers (SeuratObject 5), or, called directly, a v3 `Assay` with `groups`.
#' @param assay Name of the assay (the DimReduc's assay).
#' @param orig The original reduction (passed by `IntegrateLayers`; scVI does not use it).
#' @param layers Layers `IntegrateLayers` passes (its `layers`, default the data layers): their
#'   split gives the batch when `groups` is `NULL`. The counts layers are what scVI trains on.
#' @param scale.layer Passed by `IntegrateLayers`; not used by scVI.
#' @param features Genes to train on (`IntegrateLayers` passes the variable features); `NULL`:
#'   `nfeatures` batch-aware highly variable genes chosen by the engine.
#' @param groups Batch of each cell instead of the layer split: a data frame (rows = cells,
#'   first column = batch), e.g. `groups = obj[["donor"]]`, or a named vector.
#' @param new.reduction Name of the returned reduction.
#' @param reduction.key Its key (default: `new.reduction` without punctuation, then `_`).
#' @param ndims Dimensions of the latent space (scVI's `n_latent`).
#' @param nlayers Hidden layers of the encoder and decoder (scVI's `n_layers`).
#' @param gene_likelihood `"nb"`, `"zinb"` or `"poisson"`.
#' @param max_epochs Training epochs; `NULL`: scvi-tools' heuristic (`min(400, 400 * 20000 / cells)`).
#' @param nfeatures Number of variable genes when `features` is `NULL`.
#' @param batch.size,device,seed As in [RunSCVI()].
#' @param verbose Progress and messages.
#' @param conda_env SeuratWrappers' argument; not used (pybridge runs its own Python), a warning.
#' @param ... Arguments of `pybridge.tl.integrate_scvi` in Python spelling (e.g.
#'   `kl_warmup_epochs = 15`, `n_hidden = 256`, `train_kwargs = list(...)`); any other
#'   argument (e.g. one meant for another integration method) is an error.
#' @return A named list: `new.reduction` = the scVI `DimReduc` (cells in the assay's order).
#'   `IntegrateLayers()` adds it to the object.
#' @seealso [RunSCVI()] (the same model on a Seurat object with a batch column),
#'   [IntegrationScores()] to measure batch mixing and cell-type separation.
#' @export
#' @examples
#' \dontrun{
#' obj[["RNA"]] <- split(obj[["RNA"]], f = obj$donor)
#' obj <- NormalizeData(obj); obj <- FindVariableFeatures(obj); obj <- ScaleData(obj); obj <- RunPCA(obj)
#' obj <- IntegrateLayers(obj, method = scVIIntegration, orig.reduction = "pca",
#'                        new.reduction = "integrated.scvi", max_epochs = 100)
#' obj <- FindNeighbors(obj, reduction = "integrated.scvi", dims = 1:30)
#' }
scVIIntegration <- function(object, assay = NULL, orig = NULL, layers = NULL, scale.layer = NULL, features = NULL,
                            groups = NULL, new.reduction = "integrated.dr", reduction.key = NULL, ndims = 30,
                            nlayers = 2, gene_likelihood = "nb", max_epochs = NULL, nfeatures = 2000,
                            batch.size = 128, device = "auto", seed = 0, verbose = TRUE, conda_env = NULL, ...) {
  if (!is.null(conda_env)) {
    warning("scVIIntegration: `conda_env` is not used: pybridge runs scVI in its own Python ",
            "(PYBRIDGE_PYTHON, or the 'r-pybridge' virtualenv).", call. = FALSE)
  }
  assay <- assay %||% "RNA"
  if (inherits(object, "SCTAssay")) {
    stop("scVIIntegration models raw counts; an SCT assay holds corrected counts. Integrate the RNA assay: ",
         "IntegrateLayers(obj, method = scVIIntegration, assay = \"RNA\", ...).", call. = FALSE)
  }
  if (!inherits(object, c("Assay", "StdAssay"))) {
    stop("`object` must be an assay (IntegrateLayers passes object[[assay]]), not ",
         paste(class(object), collapse = "/"), ".", call. = FALSE)
  }
  cells <- colnames(object)
  cj <- .layer_joined(object, assay, "counts", cells)
  if (is.null(cj)) {
    have <- if (.is_v5_assay(object)) .Layers(object) else .layer_bases(object)
    stop("scVIIntegration trains on raw counts, and assay '", assay, "' has no counts layers (layers: ",
         paste(have, collapse = ", "), "). Keep the counts when splitting: split(obj[[\"", assay,
         "\"]], f = obj$batch) splits counts and data.", call. = FALSE)
  }
  batch <- .integration_batch(object, assay, cells, groups, layers, cj$split)
  if (is.null(batch) || nlevels(droplevels(batch)) < 2L) {
    have <- if (.is_v5_assay(object)) paste(.Layers(object), collapse = ", ") else "counts, data"
    stop("scVIIntegration uses the layer split as the batch, and the layers of assay '", assay, "' are not ",
         "split (layers: ", have, "). Split them first: obj[[\"", assay, "\"]] <- split(obj[[\"", assay,
         "\"]], f = obj$batch), or pass groups = obj[[\"batch\"]].", call. = FALSE)
  }
  dots <- list(...)
  .check_integration_dots(dots)
  counts <- cj$m
  if (!is.null(features)) {
    features <- as.character(features)
    miss <- setdiff(features, rownames(counts))
    if (length(miss) == length(features)) stop("none of `features` is in the counts layers.", call. = FALSE)
    features <- setdiff(features, miss)
  }
  obs <- data.frame(batch = batch, row.names = cells)
  parts <- list(cells = .np(cells), features = .np(rownames(counts)), X = .matrix_parts(counts, TRUE),
                obs = local({p <- .df_parts(obs); p$notes <- NULL; p}))
  .check_python()
  adata <- .engine("io", convert = FALSE)$anndata_from_parts(parts)
  args <- c(list("integrate_scvi", adata = adata, batch_key = "batch", n_top_genes = nfeatures,
                 genes = if (!is.null(features)) as.list(features), n_latent = ndims, n_layers = nlayers,
                 gene_likelihood = gene_likelihood, max_epochs = max_epochs, batch_size = batch.size,
                 device = device, key_added = "X_scVI", random_state = seed),
            dots, list(verbose = verbose, .arg_names = c(n_latent = "ndims", n_layers = "nlayers",
                                                         max_epochs = "max_epochs", genes = "features",
                                                         gene_likelihood = "gene_likelihood",
                                                         n_top_genes = "nfeatures", batch_size = "batch.size",
                                                         random_state = "seed")))
  do.call(.engine_call, args)
  emb <- .py_obsm(adata, "X_scVI")[cells, , drop = FALSE]
  key <- reduction.key %||% paste0(gsub("[^[:alnum:]]", "", new.reduction), "_")
  colnames(emb) <- paste0(key, seq_len(ncol(emb)))
  info <- .misc_from_py(reticulate::py_to_r(reticulate::py_get_item(reticulate::py_get_attr(adata, "uns"), "X_scVI")))
  dr <- SeuratObject::CreateDimReducObject(embeddings = emb, key = key, assay = assay, misc = info)
  stats::setNames(list(dr), new.reduction)
}
attr(x = scVIIntegration, which = "Seurat.method") <- "integration"

# Named arguments of pybridge.tl.integrate_scvi a user may add through `...` (those the method
# sets itself are named by their R argument); anything else is an error, never ignored.
.check_integration_dots <- function(dots) {
  if (!length(dots)) return(invisible(NULL))
  nm <- names(dots) %||% rep("", length(dots))
  if (any(!nzchar(nm))) stop("scVIIntegration: unnamed extra argument(s).", call. = FALSE)
  sig <- reticulate::import("inspect", convert = FALSE)$signature(.engine("tl", convert = FALSE)$integrate_scvi)
  params <- as.character(unlist(reticulate::import_builtins(convert = TRUE)$list(sig$parameters$keys())))
  own <- c(adata = "object", batch_key = "groups", n_top_genes = "nfeatures", genes = "features",
           n_latent = "ndims", n_layers = "nlayers", max_epochs = "max_epochs", batch_size = "batch.size",
           random_state = "seed", key_added = "new.reduction", gene_likelihood = "gene_likelihood",
           device = "device", verbose = "verbose", progress_bar = "verbose")
  set_here <- intersect(nm, names(own))
  if (length(set_here)) {
    stop("scVIIntegration: ", paste(set_here, collapse = ", "), " is set through ",
         paste(unique(own[set_here]), collapse = ", "), ".", call. = FALSE)
  }
  unknown <- setdiff(nm, params)
  if (length(unknown)) {
    stop("scVIIntegration: unused argument", if (length(unknown) > 1L) "s", " ", paste(unknown, collapse = ", "),
         " (not an argument of scVIIntegration or of pybridge.tl.integrate_scvi; arguments of other ",
         "integration methods do not apply).", call. = FALSE)
  }
  invisible(NULL)
}
