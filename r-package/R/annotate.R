# Cell-type annotation by label transfer (TOSICA-style transformer, scANVI, CellTypist).
# Thin wrapper: the science is pybridge.tl.annotate in Python.

#' Annotate cell types by transfer from a labelled reference
#'
#' Trains a classifier on a labelled reference and labels the cells of `query`, from the
#' raw counts of both. Methods (all run in the pybridge Python engine):
#'
#' * `"tosica"` (default): a TOSICA-style transformer whose tokens are gene sets (Chen et
#'   al. 2023, Nat Commun 14:223; pybridge's own implementation). Gene sets default to the
#'   human GO biological-process sets embedded in pybridge; the class token's attention
#'   over gene sets is returned per cell as the assay `pathway`, so `FindMarkers()` and
#'   `DotPlot()` work on pathways.
#' * `"scanvi"`: scvi-tools scANVI (Xu et al. 2021, Mol Syst Biol 17:e9620) trained on
#'   reference + query.
#' * `"celltypist"`: a custom CellTypist model (Dominguez Conde et al. 2022, Science
#'   376:eabl5197) trained on the reference; nothing is downloaded.
#'
#' Counts are normalised inside (per-cell total 1e4 over the shared genes, then log1p),
#' identically for reference and query. Only genes present in both are used; the call stops
#' with both gene counts when too few are shared (e.g. symbols vs Ensembl ids).
#'
#' @param query Seurat object to annotate (raw counts in the `counts` slot of `assay`).
#' @param reference A Seurat object with raw counts and a label column, or the path of a
#'   saved model: a directory written through `model.dir` (tosica), or a CellTypist `.pkl`
#'   / a directory holding `celltypist_model.pkl` (celltypist).
#' @param reference.labels Name of the `reference` meta.data column holding the cell types
#'   (needed to train).
#' @param method `"tosica"`, `"scanvi"` or `"celltypist"`.
#' @param assay,reference.assay Assays holding the counts (default: the default assays).
#' @param gene.sets tosica only: `NULL` (embedded human GO-BP), the path of a GMT file, or a
#'   named list of character vectors (gene symbols). With no usable gene set the model uses
#'   learned tokens instead and warns.
#' @param unknown.threshold Cells whose highest class probability is below this are labelled
#'   `"Unknown"`.
#' @param max.epochs Training epochs (`NULL`: the method's default; tosica 20, scanvi 100
#'   for SCVI then 20 for SCANVI).
#' @param model.dir tosica/celltypist: where the trained model is saved; when it already
#'   holds a model, that model is loaded and the reference is not trained again.
#' @param device `"auto"` (GPU when present), `"cpu"` or `"cuda"`.
#' @param verbose Print progress from the engine.
#' @param ... Further options for the Python engine, with its names, e.g. `batch_size`,
#'   `learning_rate`, `random_state`, `n_top_genes`, `max_gene_sets`, `token_dim`,
#'   `n_layers` (tosica), `n_latent`, `scanvi_epochs` (scanvi), `C`, `max_iter`
#'   (celltypist); see `pybridge.tl.annotate`.
#'
#' @return `query` with meta.data columns `predicted.celltype` (factor; `"Unknown"` below
#'   `unknown.threshold`) and `predicted.celltype.score` (the highest class probability, in
#'   \[0, 1\]); for tosica an assay `pathway` (gene sets x cells; `data` = class-token
#'   attention; underscores in set names become dashes as Seurat requires, the original
#'   names are in the assay's meta.features column `gene.set`); the run's parameters and
#'   gene counts in `Misc(query, "predicted.celltype")`; the command in the command log.
#' @export
#' @examples
#' \dontrun{
#' ref <- subset(pbmc, subset = stim == "CTRL")
#' qry <- subset(pbmc, subset = stim == "STIM")
#' qry <- AnnotateCells(qry, ref, reference.labels = "seurat_annotations", model.dir = "ifnb_tosica")
#' table(qry$predicted.celltype)
#' Seurat::DotPlot(qry, assay = "pathway", features = head(rownames(qry[["pathway"]])),
#'                 group.by = "predicted.celltype")
#' # later, another query, without retraining:
#' qry2 <- AnnotateCells(qry2, "ifnb_tosica")
#' }
AnnotateCells <- function(query, reference, reference.labels = NULL, method = c("tosica", "scanvi", "celltypist"),
                          assay = NULL, reference.assay = NULL, gene.sets = NULL, unknown.threshold = 0.5,
                          max.epochs = NULL, model.dir = NULL, device = "auto", verbose = TRUE, ...) {
  method <- match.arg(method)
  assay <- .check_seurat(query, assay, arg = "query")
  if (is.character(reference) && length(reference) == 1L) {
    if (!file.exists(reference)) stop("reference model '", reference, "' does not exist.", call. = FALSE)
    ref <- normalizePath(reference)
  } else {
    reference.assay <- .check_seurat(reference, reference.assay, arg = "reference")
    .check_reference_labels(reference, reference.labels)
    ref <- .job_anndata(reference, assay = reference.assay, layer = "counts", arg = "reference")
  }
  if (is.list(gene.sets)) {
    if (is.null(names(gene.sets)) || any(!nzchar(names(gene.sets)))) {
      stop("`gene.sets` as a list must be named (one name per gene set).", call. = FALSE)
    }
    gene.sets <- lapply(gene.sets, function(g) as.list(as.character(g)))
  } else if (!is.null(gene.sets)) {
    if (!is.character(gene.sets) || length(gene.sets) != 1L) {
      stop("`gene.sets` must be NULL, the path of a GMT file, or a named list of gene vectors.", call. = FALSE)
    }
    if (!file.exists(gene.sets) && gene.sets != "GO_BP_human") {
      stop("GMT file '", gene.sets, "' does not exist.", call. = FALSE)
    }
    if (file.exists(gene.sets)) gene.sets <- normalizePath(gene.sets)
  }
  if (!is.null(model.dir)) model.dir <- normalizePath(model.dir, mustWork = FALSE)
  qa <- .job_anndata(query, assay = assay, layer = "counts", arg = "query")
  att <- .engine_call(
    "annotate", query = qa, reference = ref, labels_key = reference.labels, method = method, gene_sets = gene.sets,
    unknown_threshold = unknown.threshold, max_epochs = max.epochs, model_path = model.dir, device = device,
    key_added = "predicted_celltype", ..., verbose = verbose, .convert = FALSE,
    .arg_names = c(labels_key = "reference.labels", model_path = "model.dir", layer = "assay",
                   reference_layer = "reference.assay", key_added = "key")
  )
  if (inherits(att, "python.builtin.NoneType")) att <- NULL
  res <- .py_obs(qa, c("predicted_celltype", "predicted_celltype_probability"))
  res <- res[colnames(query), , drop = FALSE]
  query <- Seurat::AddMetaData(query, metadata = data.frame(
    predicted.celltype = factor(as.character(res$predicted_celltype), levels = levels(res$predicted_celltype)),
    predicted.celltype.score = as.numeric(res$predicted_celltype_probability),
    row.names = colnames(query)
  ))
  info <- .r_value(reticulate::py_get_item(qa$uns, "predicted_celltype"))
  if (!is.null(att)) {
    m <- .r_value(att$X)
    if (!is.matrix(m)) m <- .py_matrix(m)
    sets <- as.character(unlist(.r_value(att$var_names$tolist())))
    cells <- as.character(unlist(.r_value(att$obs_names$tolist())))
    m <- t(m)
    feats <- gsub("_", "-", sets, fixed = TRUE)
    dimnames(m) <- list(feats, cells)
    m <- m[, colnames(query), drop = FALSE]
    pw <- SeuratObject::CreateAssayObject(data = m)
    pw <- SeuratObject::AddMetaData(pw, metadata = data.frame(
      gene.set = sets,
      n.genes = as.integer(.py_df(reticulate::import_builtins(convert = FALSE)$getattr(att, "var"))$n_genes),
      row.names = feats
    ))
    query[["pathway"]] <- pw
    info$pathway.assay <- "pathway"
  }
  SeuratObject::Misc(query, slot = "predicted.celltype") <- info
  if (isTRUE(verbose)) {
    message("AnnotateCells (", method, "): ", ncol(query), " cells, ", info$n_shared_genes,
            " shared genes; ", sum(query$predicted.celltype == "Unknown"), " Unknown below ",
            unknown.threshold, if (!is.null(att)) "; assay 'pathway' added" else "")
  }
  query <- Seurat::LogSeuratCommand(object = query)
  query
}

# A value from Python as an R value, whether or not reticulate already converted it.
.r_value <- function(x) if (inherits(x, "python.builtin.object")) reticulate::py_to_r(x) else x
