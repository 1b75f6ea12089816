# scVI / scANVI integration and scArches query mapping: thin wrappers around
# pybridge.tl.integrate_scvi / map_query_scvi (pybridge/tl/_scvi.py). Science lives in Python.

# Python errors -> R errors with the Python message only (no reticulate call frames).
.scvi_call <- function(f, args) {
  tryCatch(do.call(f, args), error = function(e) {
    msg <- conditionMessage(e)
    msg <- sub("^Error in py_call_impl\\(.*?\\) *: *\n?", "", msg)
    msg <- sub("\n*Run `?reticulate::py_last_error\\(\\)`? for details\\.?\\s*$", "", msg)
    msg <- sub("(?s)\n\\s*(Detailed traceback|See `reticulate::py_last_error).*$", "", msg, perl = TRUE)
    stop(msg, call. = FALSE)
  })
}

# Covariate columns -> categorical / continuous by their R type.
.split_covariates <- function(md, covariates) {
  if (is.null(covariates)) return(list(cat = NULL, cont = NULL))
  covariates <- as.character(covariates)
  missing <- setdiff(covariates, colnames(md))
  if (length(missing)) {
    stop("covariate column(s) ", paste0("'", missing, "'", collapse = ", "), " not in meta.data. Columns that exist: ",
         paste(colnames(md), collapse = ", "), ".", call. = FALSE)
  }
  cont <- covariates[vapply(covariates, function(k) is.numeric(md[[k]]), logical(1))]
  list(cat = as.list(setdiff(covariates, cont)), cont = as.list(cont))
}

.as_int_or_null <- function(x) if (is.null(x)) NULL else as.integer(x)

# Python argument names of integrate_scvi / map_query_scvi -> RunSCVI's, for the engine's errors.
.scvi_r_names <- c(batch_key = "batch", n_top_genes = "nfeatures", genes = "features", labels_key = "labels",
                   categorical_covariate_keys = "covariates", continuous_covariate_keys = "covariates",
                   save_path = "model.dir", random_state = "seed", adata = "object")

.r <- function(x) if (inherits(x, "python.builtin.object")) reticulate::py_to_r(x) else x

.uns_list <- function(adata, key) {
  .misc_from_py(.r(reticulate::py_get_item(reticulate::py_get_attr(adata, "uns"), key)))
}

.umap_key <- function(name) paste0(gsub("[^[:alnum:]]", "", name), "_")

#' Integrate batches with scVI (or scANVI) from a Seurat object
#'
#' Trains an scvi-tools scVI model (Lopez et al. 2018, Nat Methods 15:1053) on the raw
#' counts of `assay`, restricted to batch-aware highly variable genes (Seurat v3 flavour,
#' selected per batch by scanpy), and adds its latent space as the reduction
#' `reduction.name` (and a UMAP of it). With `labels`, the model is refined into scANVI
#' (Xu et al. 2021, Mol Syst Biol 17:e9620) and predicted labels are added to meta.data.
#' Runs on the GPU when one is available (`device = "auto"`). The engine is
#' `pybridge.tl.integrate_scvi` (Python); the same call is available to AnnData users.
#'
#' @param object A Seurat object with raw UMI counts in the `counts` slot/layer of `assay`.
#' @param batch Name of the meta.data column holding the batch (sample, chemistry, donor...).
#' @param assay Assay to use (default: the default assay).
#' @param features Genes to train on; `NULL` selects `nfeatures` highly variable genes per batch.
#' @param nfeatures Number of highly variable genes (all genes when the assay has fewer).
#' @param reduction.name,reduction.key Name and key of the new DimReduc.
#' @param n.latent Dimensions of the latent space.
#' @param n.layers Hidden layers of encoder and decoder.
#' @param max.epochs Training epochs; `NULL` = scvi-tools' heuristic
#'   (`min(400, 400 * 20000 / cells)`).
#' @param batch.size Minibatch size (cells). `NULL` (default): the device rule
#'   (`pybridge._device.scvi_training`): 128 on the CPU, scvi-tools' default; on a GPU the
#'   largest power of two between 128 and 1024 that keeps at least 32 minibatches per epoch,
#'   with the learning rate scaled by `sqrt(batch.size / 128)` and the training matrix held on
#'   the GPU when it fits. The values used are in the reduction's `misc$params`.
#' @param covariates meta.data columns regressed out in addition to `batch`; numeric columns
#'   are continuous covariates, others categorical.
#' @param labels meta.data column with cell labels: trains scANVI (cells with `NA` or
#'   `"Unknown"` are unlabelled) and adds columns `<labels>_scanvi` (prediction) and
#'   `<labels>_scanvi_prob` (its probability).
#' @param device `"auto"` (GPU when available), `"cpu"`, `"cuda"` or `"cuda:N"`.
#' @param run.umap Also run [Seurat::RunUMAP()] on the latent space (as `umap.name`).
#' @param umap.name Name of the UMAP reduction.
#' @param model.dir Directory to save the model into (`model.pt` + `pybridge_scvi.json`, which
#'   holds the training genes and parameters); needed by [MapQuerySCVI()].
#' @param seed Random seed (Python, NumPy, torch; and the UMAP).
#' @param verbose Show progress bars and messages.
#' @param ... Further arguments of `pybridge.tl.integrate_scvi` in Python spelling, e.g.
#'   `n_hidden = 256L`, `gene_likelihood = "zinb"`, `normalized_key`, `model_kwargs = list(...)`,
#'   `devices = 4L, strategy = "ddp_notebook"` (multi-GPU, untested), `min_cells_per_batch`.
#' @return `object` with the reduction `reduction.name` (its `misc` holds `params`, the
#'   training `genes`, cells per batch and the per-epoch ELBO), `umap.name` when
#'   `run.umap`, scANVI predictions in meta.data when `labels`, and the command logged.
#'   Errors (object unchanged) on non-count data, a missing batch column, a batch with too
#'   few cells, or NA/negative values.
#' @seealso [MapQuerySCVI()] to map new cells into the saved model; [IntegrationScores()].
#' @export
#' @examples
#' \dontrun{
#' obj <- RunSCVI(obj, batch = "donor", max.epochs = 100, model.dir = "scvi_model")
#' DimPlot(obj, reduction = "umap.scvi", group.by = "donor")
#' }
RunSCVI <- function(object, batch, assay = NULL, features = NULL, nfeatures = 2000, reduction.name = "scvi",
                    reduction.key = "scVI_", n.latent = 10, n.layers = 1, max.epochs = NULL, batch.size = NULL,
                    covariates = NULL, labels = NULL, device = "auto", run.umap = TRUE, umap.name = "umap.scvi",
                    model.dir = NULL, seed = 0, verbose = TRUE, ...) {
  assay <- .check_seurat(object, assay)
  if (missing(batch) || !is.character(batch) || length(batch) != 1L) {
    stop("`batch` must name one meta.data column holding the batch. Columns that exist: ",
         paste(colnames(object[[]]), collapse = ", "), ".", call. = FALSE)
  }
  cov <- .split_covariates(object[[]], covariates)
  adata <- .job_anndata(object, assay = assay, layer = "counts")
  # numbers go as they are: the engine checks them before any work (max.epochs >= 1, ...)
  args <- list(
    "integrate_scvi", adata = adata, batch_key = batch, n_top_genes = nfeatures,
    genes = if (!is.null(features)) as.list(as.character(features)),
    categorical_covariate_keys = cov$cat, continuous_covariate_keys = cov$cont,
    n_latent = n.latent, n_layers = n.layers, max_epochs = max.epochs, batch_size = batch.size, device = device,
    labels_key = labels, method = if (is.null(labels)) "scvi" else "scanvi",
    save_path = if (!is.null(model.dir)) normalizePath(model.dir, mustWork = FALSE),
    key_added = "X_scVI", random_state = seed
  )
  extra <- list(...)
  if (length(extra)) args[names(extra)] <- extra
  do.call(.engine_call, c(args, list(verbose = isTRUE(verbose), .call = sys.call(), .arg_names = .scvi_r_names)),
          quote = TRUE)  # quote: .call is a call, not to be evaluated

  emb <- .py_obsm(adata, "X_scVI")
  info <- .uns_list(adata, "X_scVI")
  object <- .add_reduction(object, emb, reduction.name, reduction.key, assay, misc = info)
  if (!is.null(labels)) {
    cols <- paste0(labels, c("_scanvi", "_scanvi_prob"))
    object <- SeuratObject::AddMetaData(object, .py_obs(adata, cols)[colnames(object), , drop = FALSE])
  }
  if (isTRUE(run.umap)) {
    object <- .run_seurat_umap(object, reduction = reduction.name, dims = seq_len(ncol(emb)),
                              reduction.name = umap.name, reduction.key = .umap_key(umap.name),
                              seed.use = seed, verbose = isTRUE(verbose))
  }
  object <- Seurat::LogSeuratCommand(object = object)
  object
}

#' Map query cells into a saved scVI / scANVI model (scArches)
#'
#' Places the cells of `query` in the latent space of a model saved by [RunSCVI()]
#' (`model.dir`), with scArches surgery (Lotfollahi et al. 2022, Nat Biotechnol 40:121):
#' the query's batches are added to the frozen reference model and trained briefly. Model
#' genes missing from the query are zero-filled. For scANVI models, predicted labels are
#' added. With `reference` and `refdata`, labels of the reference are also transferred by
#' k-nearest neighbours in the shared latent space (`predicted.<column>` and
#' `predicted.<column>.score`, the fraction of agreeing neighbours).
#'
#' @param query A Seurat object with raw counts in `assay`.
#' @param model.dir Directory given as `model.dir` to [RunSCVI()].
#' @param assay Assay of `query` with counts.
#' @param batch meta.data column of `query` holding its batch; default: the column named as
#'   the model's batch column. Batch values new to the model become new batches.
#' @param labels For scANVI models: column with known labels of query cells (optional).
#' @param reduction.name,reduction.key Name and key of the new DimReduc.
#' @param max.epochs Query training epochs (default 200; `0` = no training).
#' @param batch.size,device,seed,verbose As in [RunSCVI()].
#' @param reference Optional Seurat object used to train the model, with the reduction
#'   `reference.reduction` (its scVI latent space), for kNN label transfer.
#' @param reference.reduction Reduction of `reference` holding the scVI latent space.
#' @param refdata meta.data columns of `reference` to transfer to the query by kNN.
#' @param k Neighbours for the label transfer.
#' @param run.umap Run [Seurat::RunUMAP()] on the query's latent space.
#' @param umap.name Name of that UMAP reduction.
#' @param ... Further arguments of `pybridge.tl.map_query_scvi` in Python spelling.
#' @return `query` with the reduction `reduction.name`, predictions when available, and
#'   the command logged.
#' @export
MapQuerySCVI <- function(query, model.dir, assay = NULL, batch = NULL, labels = NULL, reduction.name = "scvi",
                         reduction.key = "scVI_", max.epochs = 200, batch.size = NULL, device = "auto",
                         reference = NULL, reference.reduction = "scvi", refdata = NULL, k = 15,
                         run.umap = FALSE, umap.name = "umap.scvi", seed = 0, verbose = TRUE, ...) {
  assay <- .check_seurat(query, assay, arg = "query")
  if (!is.null(refdata)) {
    if (is.null(reference)) stop("`refdata` needs `reference` (the Seurat object the model was trained on).", call. = FALSE)
    .check_seurat(reference, NULL, arg = "reference")
    if (!reference.reduction %in% SeuratObject::Reductions(reference)) {
      stop("reduction '", reference.reduction, "' is not in `reference`. Reductions that exist: ",
           paste(SeuratObject::Reductions(reference), collapse = ", "), ".", call. = FALSE)
    }
    missing <- setdiff(refdata, colnames(reference[[]]))
    if (length(missing)) {
      stop("`refdata` column(s) ", paste(missing, collapse = ", "), " not in reference meta.data. Columns that exist: ",
           paste(colnames(reference[[]]), collapse = ", "), ".", call. = FALSE)
    }
  }
  adata <- .job_anndata(query, assay = assay, layer = "counts", arg = "query")
  args <- list("map_query_scvi", query = adata, model_path = normalizePath(model.dir, mustWork = FALSE),
               batch_key = batch, labels_key = labels, max_epochs = max.epochs, batch_size = batch.size,
               device = device, key_added = "X_scVI", random_state = seed)
  extra <- list(...)
  if (length(extra)) args[names(extra)] <- extra
  do.call(.engine_call, c(args, list(verbose = isTRUE(verbose), .call = sys.call(),
                                     .arg_names = c(.scvi_r_names, query = "query", model_path = "model.dir"))),
          quote = TRUE)
  emb <- .py_obsm(adata, "X_scVI")
  info <- .uns_list(adata, "X_scVI")
  query <- .add_reduction(query, emb, reduction.name, reduction.key, assay, misc = info)
  obs_cols <- as.character(unlist(.r(reticulate::py_get_attr(reticulate::py_get_attr(adata, "obs"), "columns")$tolist())))
  pred <- grep("_scanvi(_prob)?$", obs_cols, value = TRUE)
  if (length(pred)) query <- SeuratObject::AddMetaData(query, .py_obs(adata, pred)[colnames(query), , drop = FALSE])
  if (!is.null(refdata)) {
    ref.emb <- SeuratObject::Embeddings(reference[[reference.reduction]])
    if (ncol(ref.emb) != ncol(emb)) {
      stop("reduction '", reference.reduction, "' of `reference` has ", ncol(ref.emb), " dimensions, the model ",
           ncol(emb), ": is it the model's latent space?", call. = FALSE)
    }
    for (col in refdata) {
      tr <- .engine("tl")$knn_label_transfer(ref.emb, as.character(reference[[]][[col]]),
                                              emb[colnames(query), , drop = FALSE], k = as.integer(k))
      df <- data.frame(factor(unlist(tr[[1]])), as.numeric(tr[[2]]), row.names = colnames(query))
      names(df) <- paste0("predicted.", col, c("", ".score"))
      query <- SeuratObject::AddMetaData(query, df)
    }
  }
  if (isTRUE(run.umap)) {
    query <- .run_seurat_umap(query, reduction = reduction.name, dims = seq_len(ncol(emb)),
                             reduction.name = umap.name, reduction.key = .umap_key(umap.name),
                             seed.use = seed, verbose = isTRUE(verbose))
  }
  query <- Seurat::LogSeuratCommand(object = query)
  query
}

#' Integration quality of a reduction: batch mixing and cell-type separation
#'
#' Standard scIB measures (Luecken et al. 2022, Nat Methods 19:41) computed by
#' `pybridge.tl.integration_scores`: LISI (Korsunsky et al. 2019) of batch (iLISI) and of
#' labels (cLISI), silhouettes of labels and of batch within labels, and leave-one-out kNN
#' label accuracy.
#'
#' @param object A Seurat object.
#' @param reduction Reduction to score (e.g. `"pca"`, `"scvi"`).
#' @param batch,labels meta.data columns with the batch and the cell labels.
#' @param dims Dimensions of the reduction to use (default all).
#' @param perplexity LISI perplexity (3 x perplexity neighbours).
#' @return Named numeric vector: `ilisi` (median, 1..batches), `ilisi_norm` (0..1, 1 =
#'   mixed), `clisi`, `clisi_norm` (1 = types apart), `asw_label`, `asw_batch` (1 = mixed),
#'   `knn_label_accuracy`, `n_cells`, `n_batches`, `n_labels`.
#' @export
IntegrationScores <- function(object, reduction, batch, labels, dims = NULL, perplexity = 30) {
  .check_seurat(object, NULL)
  if (!reduction %in% SeuratObject::Reductions(object)) {
    stop("reduction '", reduction, "' is not in the object. Reductions that exist: ",
         paste(SeuratObject::Reductions(object), collapse = ", "), ".", call. = FALSE)
  }
  md <- object[[]]
  for (col in c(batch, labels)) {
    if (!col %in% colnames(md)) {
      stop("column '", col, "' is not in meta.data. Columns that exist: ", paste(colnames(md), collapse = ", "), ".",
           call. = FALSE)
    }
  }
  emb <- SeuratObject::Embeddings(object[[reduction]])
  if (!is.null(dims)) emb <- emb[, dims, drop = FALSE]
  res <- .engine("tl")$integration_scores_arrays(emb, as.character(md[rownames(emb), batch]),
                                                 as.character(md[rownames(emb), labels]), perplexity = perplexity)
  unlist(res)
}
