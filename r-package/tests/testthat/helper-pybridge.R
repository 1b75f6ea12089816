# Real data for the tests: ../shared/data beside the checkout (PYBRIDGE_SHARED_DATA overrides).
shared_data <- function(file) {
  dir <- Sys.getenv("PYBRIDGE_SHARED_DATA", unset = "")
  if (!nzchar(dir)) dir <- file.path(testthat::test_path(), "..", "..", "..", "..", "shared", "data")
  p <- normalizePath(file.path(dir, file), mustWork = FALSE)
  if (!file.exists(p)) stop("missing test data ", p, ": the tests need ../shared/data beside the checkout")
  p
}

# `make test-fast` sets PYBRIDGE_TEST_FAST=1: tests that train a model (more than a few
# optimisation steps) or render vignettes call skip_slow() first. `make test` and CI run all.
skip_slow <- function() {
  if (nzchar(Sys.getenv("PYBRIDGE_TEST_FAST", unset = ""))) {
    testthat::skip("trains a model: not in the fast tier (make test-fast)")
  }
}
