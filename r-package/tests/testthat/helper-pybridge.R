# Real data for the tests: ../shared/data beside the checkout (PYBRIDGE_SHARED_DATA overrides).
shared_data <- function(file) {
  dir <- Sys.getenv("PYBRIDGE_SHARED_DATA", unset = "")
  if (!nzchar(dir)) dir <- file.path(testthat::test_path(), "..", "..", "..", "..", "shared", "data")
  p <- normalizePath(file.path(dir, file), mustWork = FALSE)
  if (!file.exists(p)) stop("missing test data ", p, ": the tests need ../shared/data beside the checkout")
  p
}
