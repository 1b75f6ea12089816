# R CMD check runs this file; `make test` runs the same files with testthat::test_dir
# (scripts/test.sh). The tests need the pybridge Python engine and ../shared/data (see
# helper-pybridge.R); PYBRIDGE_TEST_FAST=1 skips the ones that train models.
library(testthat)
library(pybridge)

test_check("pybridge")
