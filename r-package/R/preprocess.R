# RunPreprocess: Seurat's standard chain computed by the pybridge engine (GPU when present),
# stored where Seurat's own functions store it. The engine (pybridge.pp.run_chain) decides the
# steps, checks the arguments and reports what it ran; this file converts and stores.

# Python argument names -> RunPreprocess's, for the engine's messages.
.preprocess_r_names <- c(n_top_genes = "nfeatures", n_comps = "npcs", n_pcs = "max(dims)", random_state = "seed")

# A Python object attribute without reticulate's automatic conversion.
.py_attr <- function(x, name) reticulate::py_get_attr(x, name, silent = FALSE)

.py_key <- function(mapping, key) {
  keys <- as.character(reticulate::py_to_r(reticulate::import_builtins(convert = FALSE)$list(mapping$keys())))
  if (!key %in% keys) {
    stop("the engine's result has no '", key, "'. Keys that exist: ", paste(keys, collapse = ", "), call. = FALSE)
  }
  reticulate::py_get_item(mapping, key)
}

.py_names <- function(index) as.character(unlist(reticulate::py_to_r(index$tolist())))

# Any matrix (cells x genes in Python) -> R in the given orientation.
.py_to_r_matrix <- function(x, transpose, rownames = NULL, colnames = NULL) {
  .matrix_from_parts(.engine("io")$matrix_to_parts(x, transpose = transpose), rownames, colnames)
}

.set_layer <- function(object, assay, layer, value) .store_layer(object, assay, layer, value)  # layers.R

# Seurat::RunUMAP; when not verbose, without Seurat's once-per-session notice that its default
# method changed to uwot (the notice stays for the next verbose call).
.run_seurat_umap <- function(object, ..., verbose = TRUE) {
  if (!isTRUE(verbose)) {
    old <- options(Seurat.warn.umap.uwot = FALSE)
    on.exit(options(old), add = TRUE)
  }
  Seurat::RunUMAP(object, ..., verbose = isTRUE(verbose))
}

#' Seurat's standard preprocessing chain, on the GPU when there is one
#'
#' Runs the equivalent of `NormalizeData()` -> `FindVariableFeatures(selection.method = "vst")`
#' -> `ScaleData()` -> `RunPCA()` -> `FindNeighbors()` -> `RunUMAP()` -> `FindClusters()` in
#' the pybridge Python engine (`pybridge.pp.run_chain`): on a CUDA GPU through cupy when one is
#' present (the same code runs on the CPU with NumPy/SciPy otherwise), and writes the results
#' where Seurat's own functions write them, so every downstream Seurat function
#' (`FindMarkers()`, `DimPlot()`, `FindClusters()` at another resolution, ...) works on the result.
#'
#' Methods: log-normalisation with scale factor 1e4 (Seurat `LogNormalize`); variable genes by
#' the vst of Stuart et al. 2019 (Cell 177:1888) on the counts, with the same loess (netlib
#' `dloess`, span 0.3) as R's `stats::loess`; scaling to unit variance, clipped at 10; exact
#' PCA of the scaled variable genes (eigenvectors of the gene-gene Gram matrix; Seurat uses
#' irlba); k-nearest neighbours (k = 20, the cell included) and Seurat's shared-nearest-neighbour
#' graph (Jaccard index, pruned below 1/15); UMAP (McInnes et al. 2018; `min_dist` 0.3) and
#' Leiden clustering (Traag et al. 2019) of the SNN graph, by rapids-singlecell on a GPU or
#' scanpy on the CPU. Seurat clusters with Louvain by default, so cluster labels are close to,
#' not identical to, `FindClusters()`'s.
#'
#' @param object A Seurat object with raw counts in the `counts` layer of `assay`.
#' @param assay Assay to use (default: `DefaultAssay(object)`).
#' @param nfeatures Number of variable features (`FindVariableFeatures(nfeatures = )`); more than
#'   there are features takes all of them, with a note (as `FindVariableFeatures()`).
#' @param npcs Number of principal components (`RunPCA(npcs = )`).
#' @param dims PCs used for the graph and UMAP, `1:k` (`FindNeighbors(dims = )`, `RunUMAP(dims = )`).
#' @param resolution Clustering resolution (`FindClusters(resolution = )`).
#' @param steps Which steps to run, a subset of `c("normalize", "hvg", "scale", "pca",
#'   "neighbors", "umap", "clusters")`. Steps left out are read from the object: the `data`
#'   layer, `VariableFeatures()` (all features when there are none), `scale.data`, the `pca`
#'   reduction; `"umap"` and `"clusters"` need `"neighbors"`.
#' @param device `"auto"` (GPU when cupy sees one, else CPU), `"cpu"` or `"cuda"`.
#' @param seed Random seed (PCA start, UMAP, clustering).
#' @param verbose Print the engine's progress (one line per step with its seconds) and notes.
#' @param ... Further arguments of the engine's `pybridge.pp.run_chain()`, e.g.
#'   `batch_key = "sample"` (variable genes per batch, as `SelectIntegrationFeatures()`),
#'   `n_neighbors = 30`, `min_dist = 0.5`, `cluster_on = "connectivities"`.
#' @return The Seurat object with: the `data` layer; `VariableFeatures()` and the `vst.*` columns
#'   of the assay's feature metadata; `scale.data` for the variable features; the `pca`
#'   reduction (embeddings, loadings of the variable features, `stdev`, `misc$total.variance`);
#'   graphs `<assay>_nn` (binary kNN) and `<assay>_snn`; the `umap` reduction; meta.data columns
#'   `<assay>_snn_res.<resolution>` and `seurat_clusters` (factor, largest cluster `"0"`) set as
#'   `Idents()`; `Misc(object, "pybridge_preprocess")` (device and seconds per step); and the
#'   command in `object@commands`.
#' @export
#' @examples
#' \dontrun{
#' obj <- RunPreprocess(obj)                 # GPU when present
#' DimPlot(obj, reduction = "umap")
#' FindMarkers(obj, ident.1 = "0")
#' }
RunPreprocess <- function(object, assay = NULL, nfeatures = 2000, npcs = 50, dims = 1:30,
                          resolution = 0.8,
                          steps = c("normalize", "hvg", "scale", "pca", "neighbors", "umap", "clusters"),
                          device = "auto", seed = 42, verbose = TRUE, ...) {
  assay <- .check_seurat(object, assay)
  dims <- suppressWarnings(as.integer(dims))
  if (!length(dims) || anyNA(dims) || !identical(dims, seq_len(max(dims)))) {
    stop("dims must be 1:k (the first k principal components), e.g. dims = 1:30.", call. = FALSE)
  }
  call <- sys.call()
  extra <- names(list(...))  # engine arguments passed through `...` keep their (Python) names in messages
  r_names <- c(.preprocess_r_names, stats::setNames(extra, extra))
  engine <- function(fun, ...) {
    .engine_call(fun, ..., .module = "pp", verbose = verbose, .arg_names = r_names, .call = call)
  }
  # what the steps read from the object (the steps left out), as the engine defines it
  need <- engine("chain_inputs", steps = steps)
  adata <- .job_anndata(object, assay = assay, layer = if (isTRUE(need$counts)) "counts" else "data")
  cells <- colnames(object)
  genes <- .py_names(.py_attr(adata, "var_names"))
  hvf <- SeuratObject::VariableFeatures(object, assay = assay)
  data_layer <- NULL
  if (isTRUE(need$data) && isTRUE(need$counts)) {
    data_ad <- .job_anndata(object, assay = assay, layer = "data")
    reticulate::py_set_item(.py_attr(adata, "layers"), "data", .py_attr(data_ad, "X"))
    data_layer <- "data"
  }
  if (isTRUE(need$highly_variable) && length(hvf)) {
    reticulate::py_set_item(.py_attr(adata, "var"), "highly_variable", reticulate::r_to_py(genes %in% hvf))
  }
  if (isTRUE(need$scaled)) {
    sd <- .get_layer(object, assay, "scale.data")
    use <- if (length(hvf)) genes[genes %in% hvf] else genes
    if (!is.null(sd) && all(use %in% rownames(sd))) {
      reticulate::py_set_item(.py_attr(adata, "obsm"), "X_scaled", t(as.matrix(sd[use, cells, drop = FALSE])))
    }
  }
  if (isTRUE(need$pca) && "pca" %in% SeuratObject::Reductions(object)) {
    reticulate::py_set_item(.py_attr(adata, "obsm"), "X_pca", SeuratObject::Embeddings(object, "pca")[cells, , drop = FALSE])
  }
  engine("run_chain", adata = adata, steps = unlist(need$steps), data_layer = data_layer, target_sum = 1e4,
         n_top_genes = nfeatures, n_comps = npcs, n_pcs = max(dims), resolution = resolution,
         random_state = seed, device = device, ...)

  report <- reticulate::py_to_r(.py_key(.py_attr(adata, "uns"), "preprocess"))
  steps <- unlist(report$steps)  # what the engine ran
  if ("normalize" %in% steps) {
    data <- .py_to_r_matrix(.py_attr(adata, "X"), transpose = TRUE, rownames = genes, colnames = cells)
    object <- .set_layer(object, assay, "data", data)
    rm(data)
  }
  var <- .py_df(.py_attr(adata, "var"))
  hv <- if ("highly_variable" %in% names(var)) as.logical(var$highly_variable) else rep(TRUE, nrow(var))
  hvf_var_order <- genes[hv]
  if ("hvg" %in% steps) {
    rank <- var$highly_variable_rank
    hvf <- genes[hv][order(rank[hv], seq_len(sum(hv)))]
    mf <- data.frame(row.names = genes, vst.mean = var$means, vst.variance = var$variances)
    if ("variances_expected" %in% names(var)) mf$vst.variance.expected <- var$variances_expected
    mf$vst.variance.standardized <- var$variances_norm
    mf$vst.variable <- hv
    assay_obj <- object[[assay]]
    assay_obj[[names(mf)]] <- mf
    SeuratObject::VariableFeatures(assay_obj) <- hvf
    object[[assay]] <- assay_obj
  } else {
    hvf <- SeuratObject::VariableFeatures(object, assay = assay)
    hvf <- if (length(hvf)) hvf[hvf %in% hvf_var_order] else hvf_var_order
  }
  if ("scale" %in% steps) {
    sc <- .py_to_r_matrix(.py_key(.py_attr(adata, "obsm"), "X_scaled"), transpose = TRUE,
                          rownames = hvf_var_order, colnames = cells)
    object <- .set_layer(object, assay, "scale.data", sc[hvf, , drop = FALSE])
    rm(sc)
  }
  if ("pca" %in% steps) {
    emb <- .py_obsm(adata, "X_pca")
    load <- .py_to_r_matrix(.py_key(.py_attr(adata, "varm"), "PCs"), transpose = FALSE,
                            rownames = genes)[hvf, , drop = FALSE]
    info <- reticulate::py_to_r(.py_key(.py_attr(adata, "uns"), "pca"))
    object <- .add_reduction(object, emb, name = "pca", key = "PC_", assay = assay,
                             stdev = as.numeric(info$stdev), loadings = load,
                             misc = list(total.variance = as.numeric(info$total_variance)))
  }
  if ("neighbors" %in% steps) {
    obsp <- .py_attr(adata, "obsp")
    nn <- .py_to_r_matrix(.py_key(obsp, "knn"), transpose = FALSE, rownames = cells, colnames = cells)
    snn <- .py_to_r_matrix(.py_key(obsp, "snn"), transpose = FALSE, rownames = cells, colnames = cells)
    for (g in list(list(paste0(assay, "_nn"), nn), list(paste0(assay, "_snn"), snn))) {
      graph <- SeuratObject::as.Graph(g[[2]])
      SeuratObject::DefaultAssay(graph) <- assay
      object[[g[[1]]]] <- graph
    }
  }
  if ("umap" %in% steps) {
    object <- .add_reduction(object, .py_obsm(adata, "X_umap"), name = "umap", key = "UMAP_", assay = assay)
  }
  if ("clusters" %in% steps) {
    cl <- .py_obs(adata, "leiden")[cells, "leiden"]
    cl <- factor(as.character(cl), levels = as.character(sort(as.integer(levels(cl)))))
    object[[paste0(assay, "_snn_res.", resolution)]] <- cl
    object[["seurat_clusters"]] <- cl
    SeuratObject::Idents(object) <- "seurat_clusters"
  }
  object@misc[["pybridge_preprocess"]] <- list(device = report$device, steps = steps,
                                               seconds = unlist(report$seconds))
  object <- Seurat::LogSeuratCommand(object = object)
  object
}
