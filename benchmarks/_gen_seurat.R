# A generated Seurat-sized object: n cells x g genes, about k non-zeros per cell (integer counts),
# plus a small meta.data. Shared by the bridge and file benchmarks (sourced from R and rpy2).
gen_counts <- function(n = 200000L, g = 20000L, k = 1000L, seed = 1L) {
  set.seed(seed)
  nnz_per <- rep.int(as.integer(k), n)
  p <- c(0L, cumsum(nnz_per))
  i <- unlist(lapply(seq_len(n), function(j) sort.int(sample.int(g, k)) - 1L), use.names = FALSE)
  x <- as.numeric(rpois(length(i), 2) + 1)
  new("dgCMatrix", i = i, p = as.integer(p), x = x, Dim = c(as.integer(g), as.integer(n)),
      Dimnames = list(paste0("gene", seq_len(g)), paste0("cell", seq_len(n))))
}
gen_meta <- function(n, seed = 2L) {
  set.seed(seed)
  data.frame(
    sample = factor(sample(c("s1", "s2", "s3"), n, TRUE)),
    score = rnorm(n),
    n_genes = sample.int(5000L, n, TRUE),
    flag = sample(c(TRUE, FALSE, NA), n, TRUE),
    row.names = paste0("cell", seq_len(n))
  )
}
# Resident and peak memory of this process (Linux), in bytes; reset_peak() restarts VmHWM.
rss_bytes <- function(field = "VmRSS") {
  l <- grep(paste0("^", field, ":"), readLines("/proc/self/status"), value = TRUE)
  as.numeric(gsub("[^0-9]", "", l)) * 1024
}
reset_peak <- function() try(writeLines("5", "/proc/self/clear_refs"), silent = TRUE)
