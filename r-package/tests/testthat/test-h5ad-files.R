# Writing files safely (h5ad-files.R): a full disk, a read-only file system and a directory in place
# of the file give messages that say which, with an existing file untouched and nothing left
# behind; a write killed with kill -9 leaves a temporary file under a recognisable name that the
# next write to the directory (R's or Python's) removes. Run for real on a small tmpfs and a
# read-only bind mount (needs root: skipped, saying so, where mount is not permitted).
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

# A directory with `opts` mounted on it (tmpfs with a size, or a read-only bind of itself),
# unmounted when the test ends.
local_mount <- function(opts, env = parent.frame()) {
  dir <- withr::local_tempdir(.local_envir = env)
  ok <- if (identical(opts, "ro")) {
    system2("mount", c("--bind", dir, dir), stdout = FALSE, stderr = FALSE) == 0 &&
      system2("mount", c("-o", "remount,bind,ro", dir), stdout = FALSE, stderr = FALSE) == 0
  } else {
    system2("mount", c("-t", "tmpfs", "-o", opts, "tmpfs", dir), stdout = FALSE, stderr = FALSE) == 0
  }
  if (!ok) {
    system2("umount", dir, stdout = FALSE, stderr = FALSE)
    testthat::skip("mount is not permitted here (needs root): the full-disk / read-only cases cannot run")
  }
  withr::defer(system2("umount", dir, stdout = FALSE, stderr = FALSE), envir = env)
  dir
}

pbmc <- readRDS(shared_data("pbmc_3tech.rds"))
tiny <- subset(pbmc, cells = colnames(pbmc)[1:20])
ls_all <- function(dir) list.files(dir, all.files = TRUE, no.. = TRUE)

test_that("a full disk: the message says so, the existing file is untouched, nothing left behind", {
  dir <- local_mount("size=2m")
  f <- file.path(dir, "out.h5ad")
  WriteH5AD(tiny, f, verbose = FALSE)
  md5 <- tools::md5sum(f)
  expect_gt(object.size(layer_data(pbmc, "counts")), 2 * 2^20)  # more than the file system holds
  expect_error(WriteH5AD(pbmc, f, overwrite = TRUE, verbose = FALSE),
               "could not write '.*out\\.h5ad': the file system of '.*' is full \\(No space left on device.*The existing file is untouched")
  expect_identical(tools::md5sum(f), md5)
  expect_identical(ls_all(dir), "out.h5ad")
  expect_error(WriteH5AD(pbmc, file.path(dir, "new.h5ad"), verbose = FALSE), "is full.*Nothing was written")
  expect_identical(ls_all(dir), "out.h5ad")
  expect_identical(dim(ReadH5AD(f, verbose = FALSE)), dim(tiny))
})

test_that("a read-only file system and a directory in place of the file: messages that say which", {
  dir <- withr::local_tempdir()
  WriteH5AD(tiny, file.path(dir, "out.h5ad"), verbose = FALSE)
  md5 <- tools::md5sum(file.path(dir, "out.h5ad"))
  expect_error(WriteH5AD(tiny, dir, verbose = FALSE), "is a directory; give the path of a file \\(e\\.g\\. '.*object\\.h5ad'\\)")
  expect_error(WriteH5AD(tiny, dir, overwrite = TRUE, verbose = FALSE), "is a directory")
  ro <- local_mount("ro")
  system2("mount", c("-o", "remount,bind,rw", ro))
  file.copy(file.path(dir, "out.h5ad"), file.path(ro, "out.h5ad"))
  system2("mount", c("-o", "remount,bind,ro", ro))
  expect_error(WriteH5AD(tiny, file.path(ro, "out.h5ad"), overwrite = TRUE, verbose = FALSE),
               "could not write '.*out\\.h5ad': '.*' is on a read-only file system\\. The existing file is untouched")
  expect_identical(unname(tools::md5sum(file.path(ro, "out.h5ad"))), unname(md5))
  expect_identical(ls_all(ro), "out.h5ad")
})

test_that("a write killed with kill -9 leaves a recognisable temporary file that the next write removes", {
  dir <- withr::local_tempdir()
  f <- file.path(dir, "big.h5ad")
  kang <- shared_data("kang_ifnb_processed.rds")
  pidf <- file.path(dir, "pid")
  code <- sprintf("library(pybridge); o <- readRDS('%s'); writeLines(as.character(Sys.getpid()), '%s'); for (i in 1:20) WriteH5AD(o, '%s', overwrite = TRUE, verbose = FALSE)",
                  kang, pidf, f)
  p <- processx::process$new(file.path(R.home("bin"), "Rscript"), c("-e", code), stdout = NULL, stderr = NULL)
  withr::defer(if (p$is_alive()) p$kill())
  tmp <- character(0)
  deadline <- Sys.time() + 120
  while (!length(tmp) && Sys.time() < deadline && p$is_alive()) {
    Sys.sleep(0.05)
    tmp <- grep("pybridge-tmp", ls_all(dir), value = TRUE)
  }
  expect_length(tmp, 1L)
  pid <- as.integer(readLines(pidf))
  expect_match(tmp, sprintf("^\\.big\\.pybridge-tmp-[A-Za-z0-9]+-%d-[a-z0-9]+\\.h5ad$", pid))
  Sys.sleep(0.3)
  p$kill()  # SIGKILL: no on.exit, no cleanup
  p$wait()
  expect_true(tmp %in% ls_all(dir))  # left behind by the killed write
  # the next write to the directory recognises it (this host, its process gone) and removes it
  WriteH5AD(tiny, file.path(dir, "other.h5ad"), verbose = FALSE)
  expect_false(any(grepl("pybridge-tmp", ls_all(dir))))
  # ... and a temporary file of a live process (pid 1) is left alone
  live <- file.path(dir, sprintf(".x.pybridge-tmp-%s-1-abcd1234.h5ad", gsub("[^A-Za-z0-9]", "", Sys.info()[["nodename"]])))
  file.create(live)
  WriteH5AD(tiny, file.path(dir, "third.h5ad"), verbose = FALSE)
  expect_true(file.exists(live))
})
