# Perturbation scoring (Augur, Mixscape, in-silico deletion) for Seurat objects.
# The science is in pybridge/tl/ (_augur.py, _mixscape.py, _insilico.py; score_perturbation in
# _perturbation.py dispatches); this file converts, calls, and stores.

.perturbation_methods <- c("augur", "mixscape", "insilico")

#' Score a perturbation: responding cell types, knockout calls, in-silico gene deletion
#'
#' One call runs one of three published methods in the pybridge Python engine on the counts of
#' `assay` and stores the results in the Seurat object.
#'
#' * `method = "augur"`: Augur (Skinnider et al. 2021, Nat Biotechnol 39:30). For each cell type,
#'   random forests (scikit-learn) tell `target` cells from `control` cells on repeated, balanced
#'   subsamples (20 cells per condition, 50 subsamples, 3-fold cross-validation, Augur's
#'   variable-gene selection: loess of the mean / sd ratio, genes above the median residual);
#'   the mean cross-validated AUC ranks how strongly each type responds. Types with fewer than
#'   20 cells in either condition are skipped and reported (a warning when none is left).
#' * `method = "mixscape"`: Mixscape (Papalexi et al. 2021, Nat Genet 53:322; Seurat
#'   `CalcPerturbSig()` + `RunMixscape()`). `condition` holds each cell's guide target and
#'   `control` the non-targeting label. The perturbation signature is the mean of each cell's 20
#'   nearest non-targeting cells (PCA, within each replicate given as `split_key = "<column>"`
#'   in `...`) minus the cell's expression; per target, a two-component Gaussian mixture on the
#'   projection onto the target-vs-non-targeting direction (its differentially expressed genes,
#'   scaled) separates knocked-out (KO) from non-perturbed (NP) cells. The results are stored as
#'   `RunMixscape()` stores them, so `PlotPerturbScore()`, `MixscapeHeatmap()` and
#'   `MixscapeLDA()` work on them.
#' * `method = "insilico"`: in-silico deletion (Theodoris et al. 2023, Nature 618:616,
#'   Geneformer). With a trained encoder (`model.dir`: a model saved by pybridge's scVI job or
#'   scvi-tools `model.save()`, or a pybridge TOSICA model), each gene in `genes` is set to zero in
#'   the `target` cells of each cell type, the cells are re-encoded, and the shift of their
#'   embedding (cosine) and towards the mean embedding of the `goal` cells of the same type is
#'   compared with deleting random genes of matched mean expression (empirical p-values).
#'
#' @param object A Seurat object (v4; v5 assays untested).
#' @param condition Name of the meta.data column with the condition (augur, insilico: e.g.
#'   `"stim"`) or the guide target (mixscape: e.g. `"top_grna_target"`; Seurat's `labels`).
#' @param control The control value of `condition` (`"CTRL"`; mixscape: the non-targeting label,
#'   Seurat's `nt.class.name`).
#' @param method `"augur"`, `"mixscape"` or `"insilico"`.
#' @param cell.type Name of the meta.data column with cell types (augur: scored per type;
#'   insilico: deletions and goal per type). `NULL`: all cells form one group.
#' @param target Values of `condition` to score: the perturbed condition (augur, insilico; default
#'   the single value other than `control`) or the targets to classify (mixscape; default all).
#' @param genes Genes to delete (insilico).
#' @param goal Value of `condition` whose mean embedding is the goal state (insilico; default
#'   `control`).
#' @param model.dir Directory of the trained encoder (insilico).
#' @param assay Assay whose counts are used (default: `DefaultAssay(object)`).
#' @param device `"auto"`, `"cpu"` or `"cuda"` (the in-silico encoder; augur and mixscape run on
#'   CPU).
#' @param verbose Progress lines (Augur's subsample fits, Mixscape's targets) and notes.
#' @param ... Further arguments of the engine's `pybridge.tl.score_perturbation()`, with their
#'   Python names, e.g. `n_subsamples = 50`, `n_estimators = 100`, `var_quantile = 0.5`
#'   (augur), `split_key = "bio_rep"`, `n_neighbors = 20`, `n_pcs = 40`, `scale = TRUE`
#'   (mixscape), `n_random = 50`, `max_cells = 500`, `groups = "CD14 Mono"` (insilico),
#'   `random_state = 0`.
#' @return The Seurat object with:
#'   * augur: meta.data `perturbation.auc` (the AUC of each cell's type; `NA` for skipped types);
#'   * mixscape, as Seurat's `RunMixscape()`: meta.data `mixscape_class` (`"<target> KO"`,
#'     `"<target> NP"`, or `control` for non-targeting cells), `mixscape_class.global`
#'     (`control` / `"NP"` / `"KO"`), `mixscape_class_p_ko` (posterior of KO; 0 for
#'     non-targeting cells); the assay `PRTB` (the perturbation signature, as
#'     `CalcPerturbSig()`); `Tool(object, "RunMixscape")` (per target and replicate, the
#'     perturbation scores `PlotPerturbScore()` draws); and `Idents(object)` set to
#'     `mixscape_class`;
#'   * all methods: `Misc(object, "perturbation.<method>")`, a list with `table` (augur: per cell
#'     type `auc`, `rank`, cell counts, `status`; mixscape: per target `ko_fraction` and counts;
#'     insilico: per gene and cell type `goal_shift`, `cosine_shift`, null means, `goal_shift_rank`,
#'     empirical p-values) and `params`;
#'   * the command in `object@commands`.
#' @seealso [PerturbationRankPlot()]; for mixscape Seurat's [Seurat::PlotPerturbScore()],
#'   [Seurat::MixscapeHeatmap()], [Seurat::MixscapeLDA()].
#' @md
#' @export
#' @examples
#' \dontrun{
#' ifnb <- ScorePerturbation(ifnb, condition = "stim", control = "CTRL", cell.type = "seurat_annotations")
#' Misc(ifnb, "perturbation.augur")$table
#' eccite <- ScorePerturbation(eccite, condition = "top_grna_target", control = "non-targeting",
#'                             method = "mixscape", split_key = "bio_rep")
#' table(eccite$mixscape_class.global)
#' PlotPerturbScore(eccite, target.gene.class = "top_grna_target", target.gene.ident = "IFNGR2",
#'                  split.by = "bio_rep")
#' PerturbationRankPlot(eccite, method = "mixscape")
#' }
ScorePerturbation <- function(object, condition, control, method = "augur", cell.type = NULL, target = NULL,
                              genes = NULL, goal = NULL, model.dir = NULL, assay = NULL, device = "auto",
                              verbose = TRUE, ...) {
  assay <- .check_seurat(object, assay)
  extra <- list(...)
  # R names in the engine's messages; arguments given in `...` keep the names the user typed
  arg_names <- c(condition_key = "condition", cell_type_key = "cell.type", perturbed = "target",
                 model = "model.dir", key_added = "method")
  arg_names[names(extra)] <- names(extra)
  adata <- .job_anndata(object, assay = assay, layer = "counts")
  args <- c(list(adata = adata, condition_key = condition, control = control, method = method,
                 cell_type_key = cell.type, perturbed = if (length(target) > 1L) as.list(target) else target,
                 genes = if (length(genes)) as.list(as.character(genes)), goal = goal,
                 model = if (!is.null(model.dir)) path.expand(model.dir), device = device,
                 key_added = if (is.character(method) && length(method) == 1L) method),
            extra)
  # quote = TRUE: the call object and the AnnData handle are passed as they are, not evaluated
  do.call(.engine_call, c(list("score_perturbation"), args,
                          list(verbose = verbose, .arg_names = arg_names, .convert = FALSE, .call = sys.call())),
          quote = TRUE)
  key <- method
  res <- .perturbation_result(adata, key)
  cells <- colnames(object)
  if (method == "augur") {
    md <- .py_obs(adata, paste0(key, "_score"))
    object[["perturbation.auc"]] <- as.numeric(md[cells, 1])
  } else if (method == "mixscape") {
    object <- .store_mixscape(object, adata, res, condition, cells)
  }
  res$pvec <- NULL
  SeuratObject::Misc(object, paste0("perturbation.", method)) <- res
  object <- Seurat::LogSeuratCommand(object = object)
  object
}

# Mixscape results where Seurat's RunMixscape puts them (meta.data, PRTB assay, Tool, Idents).
.store_mixscape <- function(object, adata, res, condition, cells) {
  ptype <- res$params$perturbation_type %||% "KO"
  p_col <- paste0("mixscape_class_p_", tolower(ptype))
  md <- .py_obs(adata, c("mixscape_class", "mixscape_class_global", p_col))[cells, , drop = FALSE]
  object[["mixscape_class"]] <- as.character(md[[1]])
  object[["mixscape_class.global"]] <- as.character(md[[2]])
  object[[p_col]] <- as.numeric(md[[3]])
  layers <- reticulate::py_get_attr(adata, "layers")
  sig <- .py_matrix(reticulate::py_get_item(layers, "X_pert"))
  dimnames(sig) <- list(cells, rownames(object))
  object[["PRTB"]] <- suppressWarnings(SeuratObject::CreateAssayObject(  # as CalcPerturbSig
    data = t(sig), min.cells = -Inf, min.features = -Inf, check.matrix = FALSE))
  pv <- res$pvec
  gv <- lapply(split(pv, factor(pv$target, levels = unique(pv$target))), function(d) {
    lapply(split(d, factor(d$split, levels = unique(d$split))), function(e) {
      df <- data.frame(pvec = e$pvec, row.names = as.character(e$cell))
      df[[condition]] <- as.character(e$label)
      df
    })
  })
  methods::slot(object, "tools")[["RunMixscape"]] <- gv  # Tool(object, "RunMixscape"), as RunMixscape writes it
  SeuratObject::Idents(object) <- "mixscape_class"
  object
}

# uns[key] -> list(table = data.frame, params = list, ...) in R.
.perturbation_result <- function(adata, key) {
  bi <- reticulate::import_builtins(convert = FALSE)
  uns <- reticulate::py_get_attr(adata, "uns")
  entry <- reticulate::py_get_item(reticulate::r_to_py(uns), key)
  entry <- reticulate::r_to_py(entry)
  get <- function(name) reticulate::py_get_item(entry, name)
  out <- list(table = .py_df(get("table")))
  params <- reticulate::py_to_r(get("params"))
  out$params <- params
  keys <- unlist(reticulate::py_to_r(bi$list(entry$keys())))
  if ("goal_shift" %in% keys) {
    gs <- .py_df(reticulate::py_call(reticulate::py_get_attr(get("goal_shift"), "reset_index")))
    out$goal_shift <- gs
  }
  if ("de_genes" %in% keys) out$de.genes <- lapply(reticulate::py_to_r(get("de_genes")), as.character)
  if ("pvec" %in% keys) out$pvec <- .py_df(get("pvec"))
  out
}

#' Plot the ranking of a perturbation score
#'
#' A ggplot2 plot of the table stored by [ScorePerturbation()]: cell types by Augur AUC
#' (`"augur"`), targets by the fraction of cells called knocked out (`"mixscape"`, stacked KO / NP
#' bars), or deleted genes by their shift towards the goal state next to the mean of the matched
#' random genes (`"insilico"`, one panel per cell type).
#'
#' @param object A Seurat object on which [ScorePerturbation()] was run.
#' @param method `"augur"`, `"mixscape"` or `"insilico"`; `NULL`: the most recent one stored.
#' @param top Show at most this many rows (highest first).
#' @return A `ggplot` object.
#' @importFrom ggplot2 .data
#' @md
#' @export
#' @examples
#' \dontrun{
#' PerturbationRankPlot(ifnb, method = "augur")
#' }
PerturbationRankPlot <- function(object, method = NULL, top = 30) {
  if (!inherits(object, "Seurat")) stop("`object` must be a Seurat object.", call. = FALSE)
  have <- .perturbation_methods[vapply(.perturbation_methods, function(m)
    !is.null(SeuratObject::Misc(object, paste0("perturbation.", m))), logical(1))]
  if (!length(have)) stop("no perturbation results in the object: run ScorePerturbation() first.", call. = FALSE)
  if (is.null(method)) {
    cmds <- names(object@commands)
    method <- have[length(have)]
    for (cm in rev(cmds[grepl("ScorePerturbation", cmds)])) {
      m <- object@commands[[cm]]$method %||% "augur"
      if (m %in% have) {
        method <- m
        break
      }
    }
  }
  if (!method %in% have) {
    stop("no \"", method, "\" results in the object (found: ", paste(have, collapse = ", "),
         "). Run ScorePerturbation(method = \"", method, "\") first.", call. = FALSE)
  }
  tab <- SeuratObject::Misc(object, paste0("perturbation.", method))$table
  if (method == "augur") {
    skipped <- tab$cell_type[is.na(tab$auc)]
    tab <- tab[!is.na(tab$auc), , drop = FALSE]
    tab <- utils::head(tab[order(-tab$auc), , drop = FALSE], top)
    tab$cell_type <- factor(tab$cell_type, levels = rev(tab$cell_type))
    p <- ggplot2::ggplot(tab, ggplot2::aes(x = .data$auc, y = .data$cell_type)) +
      ggplot2::geom_segment(ggplot2::aes(x = 0.5, xend = .data$auc, yend = .data$cell_type), colour = "grey60") +
      ggplot2::geom_errorbar(ggplot2::aes(xmin = .data$auc - .data$auc_sd, xmax = .data$auc + .data$auc_sd),
                             orientation = "y", width = 0.2, colour = "grey40") +
      ggplot2::geom_point(size = 3, colour = "#b2182b") +
      ggplot2::labs(x = "Augur AUC (mean over subsamples, +/- sd)", y = NULL,
                    title = "Cell-type response (Augur)",
                    caption = if (length(skipped)) paste("skipped (too few cells):", paste(skipped, collapse = ", "))) +
      ggplot2::theme_bw()
  } else if (method == "mixscape") {
    tab <- utils::head(tab[order(-tab$ko_fraction), , drop = FALSE], top)
    lv <- rev(tab$target)
    long <- rbind(data.frame(target = tab$target, class = "KO", fraction = tab$ko_fraction),
                  data.frame(target = tab$target, class = "NP", fraction = 1 - tab$ko_fraction))
    long$target <- factor(long$target, levels = lv)
    long$class <- factor(long$class, levels = c("NP", "KO"))
    p <- ggplot2::ggplot(long, ggplot2::aes(x = .data$fraction, y = .data$target, fill = .data$class)) +
      ggplot2::geom_col(width = 0.8) +
      ggplot2::scale_fill_manual(values = c(KO = "#d6604d", NP = "grey80")) +
      ggplot2::labs(x = "fraction of guide cells", y = NULL, fill = "Mixscape",
                    title = "Knockout calls per target (Mixscape)") +
      ggplot2::theme_bw()
  } else {
    tab <- tab[!is.na(tab$goal_shift), , drop = FALSE]
    tab <- tab[order(-tab$goal_shift), , drop = FALSE]
    tab <- utils::head(tab, top)
    tab$gene <- factor(tab$gene, levels = rev(unique(tab$gene)))
    p <- ggplot2::ggplot(tab, ggplot2::aes(y = .data$gene)) +
      ggplot2::geom_vline(xintercept = 0, colour = "grey70") +
      ggplot2::geom_segment(ggplot2::aes(x = .data$goal_shift_null_mean, xend = .data$goal_shift,
                                         yend = .data$gene), colour = "grey60") +
      ggplot2::geom_point(ggplot2::aes(x = .data$goal_shift_null_mean), shape = 1, size = 2.5) +
      ggplot2::geom_point(ggplot2::aes(x = .data$goal_shift, colour = -log10(.data$goal_shift_pval)), size = 3) +
      ggplot2::scale_colour_viridis_c(name = "-log10 p") +
      ggplot2::facet_wrap(~group, scales = "free_x") +
      ggplot2::labs(x = "shift towards the goal (cosine); open circle: matched random genes", y = NULL,
                    title = "In-silico deletion") +
      ggplot2::theme_bw()
  }
  p
}
