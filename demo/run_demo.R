#!/usr/bin/env Rscript
# Runs the pybridge demo: four analyses from R on the embedded real data, rendered as an HTML
# report (demo/report.Rmd), with the Seurat objects saved next to it and the headline numbers
# printed at the end.
#
#   Rscript demo/run_demo.R [--preset quick|full] [--out DIR] [--device auto|cpu|cuda]
#
# --preset  quick (default): short training, < 15 min on 2 CPU cores; full: the methods' usual
#           settings (GPU recommended). Both are listed in demo/presets.R.
# --out     output directory (default: demo-output/ in the current directory).
# --device  "auto" (default: the GPU when there is one), "cpu" or "cuda".
# `make demo` / `make demo-full` call this through scripts/demo.sh, which sets up first.

t_start <- Sys.time()
args <- commandArgs(trailingOnly = TRUE)
opt <- list(preset = "quick", out = "demo-output", device = "auto")
i <- 1L
while (i <= length(args)) {
  a <- args[[i]]
  if (a %in% c("-h", "--help")) {
    cat("usage: Rscript demo/run_demo.R [--preset quick|full] [--out DIR] [--device auto|cpu|cuda]\n")
    quit(status = 0)
  }
  kv <- regmatches(a, regexec("^--([a-z]+)(=(.*))?$", a))[[1]]
  if (!length(kv) || !kv[2] %in% names(opt)) stop("unknown argument '", a, "'; see --help", call. = FALSE)
  if (nzchar(kv[3])) {
    opt[[kv[2]]] <- kv[4]
  } else {
    if (i == length(args)) stop("--", kv[2], " needs a value", call. = FALSE)
    opt[[kv[2]]] <- args[[i + 1L]]
    i <- i + 1L
  }
  i <- i + 1L
}
if (!opt$preset %in% c("quick", "full")) stop("--preset must be quick or full, not '", opt$preset, "'", call. = FALSE)
if (!opt$device %in% c("auto", "cpu", "cuda") && !grepl("^cuda:[0-9]+$", opt$device)) {
  stop("--device must be auto, cpu or cuda, not '", opt$device, "'", call. = FALSE)
}

file_arg <- grep("^--file=", commandArgs(trailingOnly = FALSE), value = TRUE)
here <- if (length(file_arg)) dirname(normalizePath(sub("^--file=", "", file_arg[1]))) else normalizePath("demo")
out <- normalizePath(opt$out, mustWork = FALSE)
dir.create(out, showWarnings = FALSE, recursive = TRUE)
work <- tempfile("pybridge-demo-")
dir.create(work)
on.exit(unlink(work, recursive = TRUE), add = TRUE)

cat(sprintf("pybridge demo: preset '%s', device '%s', output in %s\n", opt$preset, opt$device, out))
html <- rmarkdown::render(file.path(here, "report.Rmd"), output_file = "report.html", output_dir = out,
                          intermediates_dir = work, knit_root_dir = here, params = list(preset = opt$preset, out_dir = out, device = opt$device),
                          envir = new.env(parent = globalenv()), quiet = TRUE)
wall <- as.numeric(difftime(Sys.time(), t_start, units = "secs"))

h <- jsonlite::read_json(file.path(out, "headline.json"))
h$wall_seconds <- wall
jsonlite::write_json(h, file.path(out, "headline.json"), auto_unbox = TRUE, digits = 6, pretty = TRUE)
f3 <- function(x) sprintf("%.3f", as.numeric(x))
cat("\n==================== pybridge demo: headline numbers ====================\n")
cat(sprintf("Annotation (TOSICA, CTRL -> STIM, %d cells): accuracy %s, macro-F1 %s (Unknown counted wrong; %.1f%% Unknown, accuracy of the others %s)\n",
            as.integer(h$annotation$n_query), f3(h$annotation$accuracy), f3(h$annotation$macro_f1),
            100 * as.numeric(h$annotation$unknown_fraction), f3(h$annotation$accuracy_called)))
for (m in c("pca", "scvi")) {
  s <- h$integration[[m]]
  cat(sprintf("Integration %-4s: iLISI(norm) %s  ASW batch %s  cLISI(norm) %s  ASW label %s  kNN label acc %s\n",
              toupper(m), f3(s$ilisi_norm), f3(s$asw_batch), f3(s$clisi_norm), f3(s$asw_label), f3(s$knn_label_accuracy)))
}
cat("Augur top responders: ", paste(sprintf("%s (AUC %s)", names(h$augur_top), f3(unlist(h$augur_top))), collapse = ", "), "\n", sep = "")
cat("In-silico deletion in STIM CD14 Mono, shift toward CTRL (p): ",
    paste(sprintf("%s %s (%s)", names(h$insilico_goal_shift), f3(unlist(h$insilico_goal_shift)), f3(unlist(h$insilico_pval))),
          collapse = ", "), "\n", sep = "")
cat(sprintf("cell2location: abundance vs marker share Spearman: B %s, median over types %s; median cells/spot %.1f\n",
            f3(h$deconvolution$b_marker_spearman), f3(h$deconvolution$median_marker_spearman),
            as.numeric(h$deconvolution$median_cells_per_spot)))
ko <- unlist(h$ko_fraction)
ko <- ko[order(-ko)]
cat("Mixscape KO fractions: ", paste(sprintf("%s %s", names(ko)[ko > 0], f3(ko[ko > 0])), collapse = ", "),
    sprintf(" (%d other targets: no KO cells)", sum(ko == 0)), "\n", sep = "")
cat("Step seconds: ", paste(sprintf("%s %.0f", names(h$seconds), unlist(h$seconds)), collapse = "; "), "\n", sep = "")
cat(sprintf("Wall time: %.1f min\n", wall / 60))
cat("Seurat objects: ", paste(unlist(h$files), collapse = ", "), "\n", sep = "")
cat("Report: ", html, "\n", sep = "")
