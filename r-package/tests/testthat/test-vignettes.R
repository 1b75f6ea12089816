# Every vignette in r-package/vignettes/ renders with the quick preset, and its key
# results hold: a vignette that breaks, or whose numbers go wrong, fails the suite.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

vignette_dir <- function() {
  dir <- Sys.getenv("PYBRIDGE_VIGNETTES", unset = "")
  if (!nzchar(dir)) dir <- file.path(testthat::test_path(), "..", "..", "vignettes")
  dir <- normalizePath(dir, mustWork = FALSE)
  # under R CMD check the tests run from the installed copy, without vignette sources: check
  # builds the vignettes itself, so this file has nothing to add there
  if (!dir.exists(dir)) testthat::skip(paste("vignette sources not found at", dir, "(R CMD check builds them)"))
  dir
}

# Render one vignette into a fresh temporary directory; returns the environment it ran in.
render_vignette <- function(name) {
  skip_slow()
  src <- file.path(vignette_dir(), paste0(name, ".Rmd"))
  expect_true(file.exists(src), info = src)
  out <- tempfile(paste0("vignette-", name, "-"))
  dir.create(out)
  env <- new.env(parent = globalenv())
  t0 <- Sys.time()
  html <- rmarkdown::render(src, output_dir = out, intermediates_dir = out, knit_root_dir = out,
                            params = list(preset = "quick"), envir = env, quiet = TRUE)
  el <- as.numeric(difftime(Sys.time(), t0, units = "secs"))
  message(sprintf("vignette %s rendered in %.0f s", name, el))
  expect_true(file.exists(html))
  expect_gt(file.size(html), 50000)  # self-contained HTML with its figures
  txt <- paste(readLines(html, warn = FALSE), collapse = "\n")
  expect_false(grepl("## Error", txt, fixed = TRUE), info = paste(name, "printed an error"))
  env$.html <- txt
  env
}

test_that("r-package/vignettes/ holds one R Markdown vignette per job, each with a quick preset", {
  files <- list.files(vignette_dir(), pattern = "\\.Rmd$")
  expect_true(all(c("conversion-and-files.Rmd", "integration.Rmd", "annotation.Rmd", "deconvolution.Rmd",
                    "perturbation.Rmd") %in% files))
  for (f in files) {
    front <- rmarkdown::yaml_front_matter(file.path(vignette_dir(), f))
    expect_identical(front$params$preset, "quick", info = f)
  }
})

test_that("conversion-and-files renders: round trips in memory, through h5ad and through the CLI are exact", {
  env <- render_vignette("conversion-and-files")
  counts <- layer_data(env$pbmc, "counts")
  for (o in list(env$back, env$from_file, env$cli_file)) {
    expect_identical(layer_data(o, "counts"), counts)
    expect_identical(levels(o$chemistry), c("5p", "3pv2", "3pv1", "unused"))
  }
  # the notes: as.AnnData() says the command log is not carried; as.Seurat() records the renamed feature
  expect_true(grepl("command log (5 commands) not carried", env$.html, fixed = TRUE))
  expect_true(any(grepl("replaced by '-'", Misc(env$back, "pybridge.report"), fixed = TRUE)))
  expect_equal(Embeddings(env$back, "pca"), Embeddings(env$pbmc, "pca"))
})

test_that("integration renders: RunPreprocess results in place, scVI mixes the conditions more than PCA", {
  env <- render_vignette("integration")
  kang <- env$kang
  expect_true(all(c("pca", "umap", "scvi", "umap.scvi") %in% Reductions(kang)))
  expect_length(VariableFeatures(kang), 2000)
  expect_true("seurat_clusters" %in% colnames(kang[[]]))
  s <- env$scores
  expect_gt(s["scVI", "ilisi_norm"], s["PCA", "ilisi_norm"] + 0.05)
  expect_gt(s["scVI", "knn_label_accuracy"], 0.8)
  expect_equal(Misc(kang[["scvi"]])$params$epochs_trained, 60)
  if (is_seurat5()) {  # the Seurat 5 section: IntegrateLayers(method = scVIIntegration) on split layers
    s5 <- env$scores5
    expect_gt(s5["IntegrateLayers (scVI)", "ilisi_norm"], s5["PCA", "ilisi_norm"] + 0.05)
    expect_gt(s5["IntegrateLayers (scVI)", "knn_label_accuracy"], 0.8)
  } else {
    expect_null(env$scores5)  # shown, not run, under SeuratObject 4
  }
})

test_that("annotation renders: STIM cells annotated from CTRL above the accuracy floor, pathway assay present", {
  env <- render_vignette("annotation")
  q <- env$query
  expect_true(all(c("predicted.celltype", "predicted.celltype.score") %in% colnames(q[[]])))
  expect_true("pathway" %in% Assays(q))
  expect_gt(env$accuracy, 0.8)
  expect_gt(env$macro_f1, 0.5)
  expect_true(all(q$predicted.celltype.score >= 0 & q$predicted.celltype.score <= 1))
})

test_that("deconvolution renders: cell2location and NNLS B-cell abundances follow the B-cell markers", {
  env <- render_vignette("deconvolution")
  vis <- env$visium
  types <- sort(unique(as.character(env$ref$cell_type)))
  expect_true(all(paste0("c2l.q05.", types) %in% colnames(vis[[]])))
  m <- as.matrix(vis[[]][, paste0("c2l.q05.", types)])
  expect_true(all(m >= 0))
  # measured with the quick preset: 0.36 (cell2location), 0.38 (NNLS), 0.96 (between them)
  expect_gt(env$rho[["cell2location"]], 0.25)
  expect_gt(env$rho[["nnls"]], 0.25)
  expect_gt(env$rho[["c2l_vs_nnls"]], 0.8)
  expect_equal(length(Misc(vis, "cell2location")$history$elbo_train), 1000)
  expect_true(all(c("cell2location", "nnls") %in% Assays(vis)))
})

test_that("perturbation renders: CD14 monocytes respond most, ISG15 deletion moves towards CTRL, IFN-gamma KOs found", {
  env <- render_vignette("perturbation")
  a <- env$augur_table
  a <- a[!is.na(a$auc), ]
  expect_true("CD14 Mono" %in% head(a$cell_type[order(-a$auc)], 3))
  ins <- env$insilico
  expect_setequal(ins$gene, c("ISG15", "IFI6", "IFIT1", "MX1"))
  expect_gt(ins$goal_shift[ins$gene == "ISG15"], ins$goal_shift_null_mean[ins$gene == "ISG15"])
  ko <- setNames(env$mix$ko_fraction, env$mix$target)
  for (t in c("IFNGR1", "JAK2", "STAT1")) expect_gt(ko[[t]], 0.3)
  expect_true(all(env$eccite$mixscape_class.global[env$eccite$top_grna_target == "non-targeting"] == "non-targeting"))
})
