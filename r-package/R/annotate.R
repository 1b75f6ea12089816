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
#' @param key Name of the annotation: results are `predicted.<key>`, `predicted.<key>.score` and
#'   the assay `prediction.score.<key>`, as Seurat's `MapQuery()` names them, so two runs with
#'   different keys (e.g. two references or label levels) coexist. Default `"celltype"`.
#' @param assay,reference.assay Assays holding the counts (default: the default assays).
#' @param gene.sets tosica only: `NULL` (embedded human GO-BP), the path of a GMT file, or a
#'   named list of character vectors (gene symbols). With no usable gene set the model uses
#'   learned tokens instead and warns.
#' @param unknown.threshold `"auto"` (default): a cell is `"Unknown"` when it does not resemble
#'   the reference cells of its predicted type (correlation of its standardised profile with
#'   their mean below that type's own threshold, calibrated on its held-out reference cells
#'   and lowered when the query's cells of that type resemble it less, e.g. another platform),
#'   so query cell types the reference lacks become `"Unknown"`; a number in \[0, 1\]: cells whose highest class
#'   probability is below it are `"Unknown"` (0: never).
#' @param max.epochs Training epochs (`NULL`: the method's default; tosica 20, scanvi 100
#'   for SCVI then 20 for SCANVI).
#' @param model.dir tosica/celltypist: where the trained model is saved; when it already
#'   holds a model trained on the same reference and labels, that model is loaded and not
#'   trained again; a model trained on another reference or other labels is an error.
#' @param device `"auto"` (GPU when present), `"cpu"` or `"cuda"`.
#' @param verbose Print progress from the engine.
#' @param ... Further options for the Python engine, with its names, e.g. `batch_size`,
#'   `learning_rate`, `random_state`, `n_top_genes`, `max_gene_sets`, `token_dim`,
#'   `n_layers` (tosica), `n_latent`, `scanvi_epochs` (scanvi), `C`, `max_iter`
#'   (celltypist); see `pybridge.tl.annotate`.
#'
#' @return `query` with meta.data columns `predicted.<key>` (factor, incl. `"Unknown"`) and
#'   `predicted.<key>.score` (the highest class probability, in \[0, 1\]); an assay
#'   `prediction.score.<key>` (classes x cells: every class's probability, plus a row `max`,
#'   as `TransferData()`'s; underscores in class names become dashes as Seurat requires); for
#'   tosica an assay `pathway` (`pathway.<key>` for another key; gene sets x cells: `counts`
#'   = the class token's raw attention, rows of a cell summing to <= 1, `data` = its
#'   `LogNormalize()` (attention per 10,000, log1p), so `FindMarkers()` and `DotPlot()` work
#'   with their default arguments; underscores in set names become dashes, the original names
#'   are in the assay's meta.features column `gene.set`); the run's parameters, gene counts
#'   and "Unknown" threshold in `Misc(query, "predicted.<key>")`; the command in the command
#'   log.
#' @export
#' @examples
#' \dontrun{
#' ref <- subset(pbmc, subset = stim == "CTRL")
#' qry <- subset(pbmc, subset = stim == "STIM")
#' qry <- AnnotateCells(qry, ref, reference.labels = "seurat_annotations", model.dir = "ifnb_tosica")
#' table(qry$predicted.celltype)
#' # a second annotation with another label level coexists with the first
#' qry <- AnnotateCells(qry, ref, reference.labels = "seurat_clusters", key = "cluster")
#' Seurat::DotPlot(qry, assay = "pathway", features = head(rownames(qry[["pathway"]])),
#'                 group.by = "predicted.celltype")
#' # later, another query, without retraining:
#' qry2 <- AnnotateCells(qry2, "ifnb_tosica")
#' }
AnnotateCells <- function(query, reference, reference.labels = NULL, method = c("tosica", "scanvi", "celltypist"),
                          key = "celltype", assay = NULL, reference.assay = NULL, gene.sets = NULL,
                          unknown.threshold = "auto", max.epochs = NULL, model.dir = NULL, device = "auto",
                          verbose = TRUE, ...) {
  method <- match.arg(method)
  if (!is.character(key) || length(key) != 1L || is.na(key) || !grepl("^[A-Za-z][A-Za-z0-9._]*$", key)) {
    stop("key must be one name made of letters, digits, '.' or '_' (starting with a letter), e.g. ",
         "\"celltype\" or \"celltype.l2\"; got ", deparse(key), ".", call. = FALSE)
  }
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
  label.col <- paste0("predicted.", key)
  md <- data.frame(factor(as.character(res$predicted_celltype), levels = levels(res$predicted_celltype)),
                   as.numeric(res$predicted_celltype_probability), row.names = colnames(query))
  names(md) <- c(label.col, paste0(label.col, ".score"))
  query <- Seurat::AddMetaData(query, metadata = md)
  info <- .r_value(reticulate::py_get_item(qa$uns, "predicted_celltype"))
  # per-class probabilities as an assay, as Seurat's TransferData / MapQuery (classes + "max")
  probs <- .py_df(reticulate::py_get_item(qa$obsm, "predicted_celltype_probabilities"))
  probs <- as.matrix(probs)[colnames(query), , drop = FALSE]
  score.assay <- paste0("prediction.score.", key)
  sm <- t(cbind(probs, max = apply(probs, 1L, max)))
  rownames(sm) <- gsub("_", "-", rownames(sm), fixed = TRUE)
  query[[score.assay]] <- .keyed_assay(SeuratObject::CreateAssayObject(data = sm), score.assay)
  info$prediction.assay <- score.assay
  if (!is.null(att)) {
    pw.assay <- if (identical(key, "celltype")) "pathway" else paste0("pathway.", key)
    query[[pw.assay]] <- .keyed_assay(.pathway_assay(att, colnames(query)), pw.assay)
    info$pathway.assay <- pw.assay
  }
  SeuratObject::Misc(query, slot = label.col) <- info
  if (isTRUE(verbose)) {
    message("AnnotateCells (", method, "): ", ncol(query), " cells, ", info$n_shared_genes, " shared genes; ",
            sum(query[[label.col]][, 1] == "Unknown"), " Unknown (", info$unknown_rule$rule, " below ",
            signif(info$unknown_threshold, 3), "); meta.data ", label.col, ", assay ", score.assay,
            if (!is.null(att)) paste0(", assay ", info$pathway.assay) else "")
  }
  query <- Seurat::LogSeuratCommand(object = query)
  query
}

# The class token's attention (AnnData cells x gene sets) as a Seurat assay: counts = the raw
# attention (rows sum to <= 1), data = LogNormalize of it (attention per 10,000, log1p), so that
# FindMarkers / DotPlot with their default arguments read it as they read expression.
.pathway_assay <- function(att, cells) {
  m <- .r_value(att$X)
  if (!is.matrix(m)) m <- .py_matrix(m)
  sets <- as.character(unlist(.r_value(att$var_names$tolist())))
  m <- t(m)
  feats <- gsub("_", "-", sets, fixed = TRUE)
  dimnames(m) <- list(feats, as.character(unlist(.r_value(att$obs_names$tolist()))))
  m <- m[, cells, drop = FALSE]
  pw <- .create_assay(counts = m, data = Seurat::LogNormalize(m, verbose = FALSE))  # Assay5 under SeuratObject 5
  SeuratObject::AddMetaData(pw, metadata = data.frame(
    gene.set = sets,
    n.genes = as.integer(.py_df(reticulate::import_builtins(convert = FALSE)$getattr(att, "var"))$n_genes),
    row.names = feats
  ))
}

# An assay with the key Seurat would derive from its name (letters and digits, then "_"),
# set before storing it so that Seurat does not warn that it changed the key.
.keyed_assay <- function(a, name) {
  SeuratObject::Key(a) <- paste0(tolower(gsub("[^A-Za-z0-9]", "", name)), "_")
  a
}

# A value from Python as an R value, whether or not reticulate already converted it.
.r_value <- function(x) if (inherits(x, "python.builtin.object")) reticulate::py_to_r(x) else x
