# The engine's start-up from R: torch must keep its own BLAS (R's reference BLAS, whose symbols R
# exports process-wide, made torch training 3-10x slower from R than from Python).

test_that("starting the engine imports torch with RTLD_DEEPBIND, and torch computes correctly", {
  invisible(pybridge:::.engine("tl"))
  expect_identical(pybridge:::.pyb$torch, "deepbind")
  torch <- reticulate::import("torch", convert = FALSE)
  np <- reticulate::import("numpy", convert = FALSE)
  set.seed(1)
  a <- matrix(rnorm(200 * 300), 200)
  b <- matrix(rnorm(300 * 100), 300)
  ta <- torch$from_numpy(np$array(a, dtype = "float64"))
  tb <- torch$from_numpy(np$array(b, dtype = "float64"))
  prod <- reticulate::py_to_r(torch$matmul(ta, tb)$numpy())
  expect_equal(prod, a %*% b, tolerance = 1e-10)
  expect_false(bitwAnd(reticulate::import("sys")$getdlopenflags(), reticulate::import("os")$RTLD_DEEPBIND) != 0)
})
