# Perturbation scoring (Augur, Mixscape, in-silico deletion) for Seurat objects.
# The science is in pybridge/tl/ (_augur.py, _mixscape.py, _insilico.py; score_perturbation in
# _perturbation.py dispatches); this file converts, calls, and stores.

.perturbation_methods <- c("augur", "mixscape", "insilico")

# Integer-valued arguments of the engine (R numbers arrive in Python as floats).
.perturbation_int_args <- c("subsample_size", "n_subsamples", "folds", "n_estimators", "max_features",
                            "min_cells", "n_jobs", "n_neighbors", "n_pcs", "min_de_genes", "iter_num",
                            "n_random", "max_cells", "batch_size", "random_state")

.check_meta_column <- function(object, column, arg) {
  if (is.null(column)) return(invisible(NULL))
  if (!is.character(column) || length(column) != 1L || !column %in% colnames(object@meta.data)) {
    stop("`", arg, "` = ", paste(deparse(column), collapse = ""), " is not a meta.data column. Columns that exist: ",
         paste(colnames(object@meta.data), collapse = ", "), ".", call. = FALSE)
  }
  invisible(NULL)
}

.check_meta_level <- function(object, column, level, arg) {
  if (is.null(level)) return(invisible(NULL))
  have <- sort(unique(as.character(object@meta.data[[column]])))
  bad <- setdiff(as.character(level), have)
  if (length(bad)) {
    stop("`", arg, "` = ", paste(bad, collapse = ", "), " is not a value of meta.data column '", column,
         "'. Values that exist: ", paste(have, collapse = ", "), ".", call. = FALSE)
  }
  invisible(NULL)
}

#' Score a perturbation: responding cell types, knockout calls, in-silico gene deletion
#'
#' One call runs one of three published methods in the pybridge Python engine on the counts of
#' `assay` and stores the results in the Seurat object.
#'
#' * `method = "augur"`: Augur (Skinnider et al. 2021, Nat Biotechnol 39:30). For each cell type,
#'   random forests (scikit-learn) tell `target` cells from `control` cells on repeated, balanced
#'   subsamples (20 cells per condition, 50 subsamples, 3-fold cross-validation, Augur's
#'   variance-based gene selection); the mean cross-validated AUC ranks how strongly each type
#'   responds. Types with fewer than 20 cells in either condition are skipped and reported.
#' * `method = "mixscape"`: Mixscape (Papalexi et al. 2021, Nat Genet 53:322; Seurat
#'   `CalcPerturbSig()` + `RunMixscape()`). `condition` holds each cell's guide target and
#'   `control` the non-targeting label. The perturbation signature is each cell's expression minus
#'   the mean of its 20 nearest non-targeting cells (PCA, within each replicate given as
#'   `split_key = "<column>"` in `...`); per target, a two-component Gaussian mixture on the
#'   projection onto the target-vs-non-targeting direction (its differentially expressed genes)
#'   separates knocked-out (KO) from non-perturbed (NP) cells.
#' * `method = "insilico"`: in-silico deletion (Theodoris et al. 2023, Nature 618:616,
#'   Geneformer). With a trained encoder (`model.dir`: a model saved by pybridge's scVI job or
#'   scvi-tools `model.save()`, or a pybridge TOSICA model), each gene in `genes` is set to zero in
#'   the `target` cells of each cell type, the cells are re-encoded, and the shift of their
#'   embedding (cosine) and towards the mean embedding of the `goal` cells of the same type is
#'   compared with deleting random genes of matched mean expression (empirical p-values).
#'
#' @param object A Seurat object (v4; v5 assays untested).
#' @param condition Name of the meta.data column with the condition (augur, insilico: e.g.
#'   `"stim"`) or the guide target (mixscape: e.g. `"top_grna_target"`).
#' @param control The control value of `condition` (`"CTRL"`; mixscape: the non-targeting label).
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
#' @param verbose Print progress.
#' @param ... Further arguments of the engine's `pybridge.tl.score_perturbation()`, e.g.
#'   `n_subsamples = 50`, `n_estimators = 100` (augur), `split_key = "bio_rep"`,
#'   `n_neighbors = 20`, `n_pcs = 40` (mixscape), `n_random = 50`, `max_cells = 500`,
#'   `groups = "CD14 Mono"` (insilico), `random_state = 0`.
#' @return The Seurat object with:
#'   * augur: meta.data `perturbation.auc` (the AUC of each cell's type; `NA` for skipped types);
#'   * mixscape: meta.data `mixscape.class` (`"<target> KO"`, `"<target> NP"`, `"NT"`),
#'     `mixscape.class.global` (factor `NT`/`NP`/`KO`), `mixscape.p.ko` (posterior of KO);
#'   * all methods: `Misc(object, "perturbation.<method>")`, a list with `table` (augur: per cell
#'     type `auc`, `rank`, cell counts, `status`; mixscape: per target `ko_fraction` and counts;
#'     insilico: per gene and cell type `goal_shift`, `cosine_shift`, null means, `goal_shift_rank`,
#'     empirical p-values) and `params`;
#'   * the command in `object@commands`.
#' @seealso [PerturbationRankPlot()]
#' @md
#' @export
#' @examples
#' \dontrun{
#' ifnb <- ScorePerturbation(ifnb, condition = "stim", control = "CTRL", cell.type = "seurat_annotations")
#' Misc(ifnb, "perturbation.augur")$table
#' eccite <- ScorePerturbation(eccite, condition = "top_grna_target", control = "non-targeting",
#'                             method = "mixscape", split_key = "bio_rep")
#' table(eccite$mixscape.class.global)
#' PerturbationRankPlot(eccite, method = "mixscape")
#' }
ScorePerturbation <- function(object, condition, control, method = "augur", cell.type = NULL, target = NULL,
                              genes = NULL, goal = NULL, model.dir = NULL, assay = NULL, device = "auto",
                              verbose = TRUE, ...) {
  if (!is.character(method) || length(method) != 1L || !method %in% .perturbation_methods) {
    stop("method must be one of ", paste0("\"", .perturbation_methods, "\"", collapse = ", "), ", not ",
         paste(deparse(method), collapse = ""), ".", call. = FALSE)
  }
  assay <- .check_seurat(object, assay)
  .check_meta_column(object, condition, "condition")
  .check_meta_column(object, cell.type, "cell.type")
  .check_meta_level(object, condition, control, "control")
  .check_meta_level(object, condition, target, "target")
  .check_meta_level(object, condition, goal, "goal")
  extra <- list(...)
  if (!is.null(extra$split_key)) .check_meta_column(object, extra$split_key, "split_key")
  for (nm in intersect(names(extra), .perturbation_int_args)) {
    if (is.numeric(extra[[nm]])) extra[[nm]] <- as.integer(extra[[nm]])
  }
  args <- list(condition_key = condition, control = control, method = method, cell_type_key = cell.type,
               device = device)
  if (!is.null(target)) args$perturbed <- if (length(target) == 1L) target else as.list(target)
  if (method == "insilico") {
    if (is.null(model.dir)) {
      stop("method = \"insilico\" needs model.dir: a directory saved by pybridge's scVI job ",
           "(save_path), scvi-tools model$save(), or a pybridge TOSICA model.", call. = FALSE)
    }
    if (!dir.exists(model.dir)) stop("model.dir '", model.dir, "' does not exist.", call. = FALSE)
    if (!length(genes)) stop("method = \"insilico\" needs genes: the genes to delete.", call. = FALSE)
    missing <- setdiff(genes, rownames(object[[assay]]))
    if (length(missing)) {
      stop("genes to delete not in assay '", assay, "': ", paste(missing, collapse = ", "), ".", call. = FALSE)
    }
    args$model <- normalizePath(model.dir)
    args$genes <- as.list(as.character(genes))
    if (!is.null(goal)) args$goal <- goal
  }
  key <- method
  args$key_added <- key
  args <- c(args, extra)

  .py_verbosity(verbose)
  adata <- .job_anndata(object, assay = assay, layer = "counts")
  .engine("tl")  # checks that the engine is usable (errors name the fix)
  tl <- reticulate::import("pybridge.tl", convert = FALSE)  # the table is read from uns below, typed
  do.call(tl$score_perturbation, c(list(adata), args))

  cells <- colnames(object)
  if (method == "augur") {
    md <- .py_obs(adata, paste0(key, "_auc"))
    object[["perturbation.auc"]] <- as.numeric(md[cells, 1])
  } else if (method == "mixscape") {
    md <- .py_obs(adata, paste0(key, c("_class", "_class_global", "_class_p_ko")))[cells, , drop = FALSE]
    object[["mixscape.class"]] <- as.character(md[[1]])
    glob <- as.character(md[[2]])
    object[["mixscape.class.global"]] <- factor(glob, levels = intersect(c("NT", "NP", "KO"), unique(glob)))
    object[["mixscape.p.ko"]] <- as.numeric(md[[3]])
  }
  res <- .perturbation_result(adata, key)
  SeuratObject::Misc(object, paste0("perturbation.", method)) <- res
  object <- Seurat::LogSeuratCommand(object = object)
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
