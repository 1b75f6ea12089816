# .engine_call(): the one way wrappers reach the engine. Errors read like R, warnings become R
# warnings, verbosity is set for the call only, numbers arrive with the type Python expects.

test_that("Python errors become R errors with R argument names, no class name, no quotes", {
  np <- reticulate::import("numpy", convert = FALSE)
  adata <- reticulate::import("anndata", convert = FALSE)$AnnData(X = np$zeros(c(3L, 2L)))
  f <- function(object, reference.layer) {
    pybridge:::.engine_call("get_matrix", adata = object, layer = reference.layer, .module = "_core",
                            .arg_names = c(layer = "reference.layer"))
  }
  err <- tryCatch(f(adata, "spliced"), error = function(e) e)
  msg <- conditionMessage(err)
  expect_match(msg, "^reference.layer 'spliced' is not in adata.layers", perl = TRUE)  # quotes gone, R name
  expect_false(grepl("KeyError|Traceback", msg))
  expect_identical(deparse(conditionCall(err)[[1]]), "f")                     # reported against the wrapper
  expect_identical(reticulate::py_last_error()$type, "KeyError")              # details kept for the curious

  err <- tryCatch(pybridge:::.engine_call("check_epochs", name = "max_epochs", value = -1, .module = "_core",
                                          .arg_names = c(max_epochs = "max.epochs")),
                  error = function(e) e)
  expect_identical(sub("\n.*", "", conditionMessage(err)), "max.epochs must be at least 1, got -1.")
})

test_that("default renaming: snake_case Python names become dot.case, only as whole words", {
  msg <- pybridge:::.r_names("reference_layer 'x' missing; see reference_layer_other and n_top_genes=3",
                             c("reference_layer", "n_top_genes", "layer"))
  expect_identical(msg, "reference.layer 'x' missing; see reference_layer_other and n.top.genes=3")
  expect_identical(pybridge:::.r_names("labels_key is bad", "labels_key", c(labels_key = "reference.labels")),
                   "labels_key is bad" |> sub(pattern = "labels_key", replacement = "reference.labels"))
})

test_that("whole numbers arrive as int, verbosity is set for the call only, results convert", {
  expect_identical(pybridge:::.py_arg(100), 100L)
  expect_identical(pybridge:::.py_arg(0.5), 0.5)
  expect_identical(pybridge:::.py_arg(c(1, 2)), c(1, 2))
  expect_identical(pybridge:::.engine_call("clamp_n_top", name = "n_top_genes", value = 2000, n_available = 1267,
                                           .module = "_core", verbose = FALSE), 1267L)
  settings <- reticulate::import("pybridge", convert = FALSE)$settings
  before <- reticulate::py_to_r(settings$verbosity)
  pybridge:::.engine_call("check_number", name = "x", value = 1, .module = "_core", verbose = FALSE)
  expect_identical(reticulate::py_to_r(settings$verbosity), before)
  # an R-side error (not from Python) passes through unchanged
  expect_error(pybridge:::.engine_call("check_number", name = "x", value = stop("R-side"), .module = "_core"),
               "R-side")
})

test_that("pybridge's Python warnings become R warnings", {
  py <- reticulate::py_run_string(paste(
    "import warnings, types, sys",
    "mod = types.ModuleType('pybridge._warn_fixture')",
    "def f(x):",
    "    warnings.warn(f'cell type {x!r} has 3 cells; merge it', UserWarning)",
    "    return x",
    "mod.f = f",
    "sys.modules['pybridge._warn_fixture'] = mod",
    sep = "\n"), convert = FALSE)
  rcall <- reticulate::import("pybridge._core._rcall", convert = FALSE)
  old <- rcall$`_PKG`
  rcall$`_PKG` <- ""   # the fixture lives outside the package directory
  on.exit(rcall$`_PKG` <- old)
  expect_warning(out <- pybridge:::.engine_call("f", x = "Mk", .module = "_warn_fixture"),
                 "cell type 'Mk' has 3 cells; merge it")
  expect_identical(out, "Mk")
})

test_that(".py_verbosity sets the engine's verbosity from verbose", {
  settings <- reticulate::import("pybridge", convert = FALSE)$settings
  before <- reticulate::py_to_r(settings$verbosity)
  on.exit(reticulate::py_set_attr(settings, "verbosity", before))
  pybridge:::.py_verbosity(FALSE)
  expect_identical(reticulate::py_to_r(settings$verbosity), 1L)
  pybridge:::.py_verbosity(TRUE)
  expect_identical(reticulate::py_to_r(settings$verbosity), 2L)
})
