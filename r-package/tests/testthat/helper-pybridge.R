# Real data for the tests: ../shared/data beside the checkout (PYBRIDGE_SHARED_DATA overrides).
shared_data <- function(file) {
  dir <- Sys.getenv("PYBRIDGE_SHARED_DATA", unset = "")
  if (!nzchar(dir)) dir <- file.path(testthat::test_path(), "..", "..", "..", "..", "shared", "data")
  p <- normalizePath(file.path(dir, file), mustWork = FALSE)
  if (!file.exists(p)) stop("missing test data ", p, ": the tests need ../shared/data beside the checkout")
  p
}

# `make test-fast` sets PYBRIDGE_TEST_FAST=1: tests that train a model (more than a few
# optimisation steps), render vignettes, start other R processes or go over every shared file
# call skip_slow() first (or test_fast() to take a smaller sample). `make test` and CI run all.
test_fast <- function() nzchar(Sys.getenv("PYBRIDGE_TEST_FAST", unset = ""))
skip_slow <- function(why = "trains a model") {
  if (test_fast()) testthat::skip(paste0(why, ": not in the fast tier (make test-fast)"))
}
