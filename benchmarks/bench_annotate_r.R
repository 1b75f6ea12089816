# SingleR and Seurat label transfer for benchmarks/bench_annotate.py (called by it; not a test).
# Usage: Rscript bench_annotate_r.R <job.tsv> <out.tsv>
# job.tsv: one line per cell: set (ref/query), file (.rds), cell, label (ref only). Both sets are
# restricted to the genes they share; counts are log-normalised per cell (Seurat LogNormalize,
# 1e4) over those genes. Output: cell, method, label, seconds (training + prediction wall time).
suppressPackageStartupMessages({
  library(Seurat)
})
args <- commandArgs(trailingOnly = TRUE)
job <- utils::read.delim(args[[1]], stringsAsFactors = FALSE)
methods <- strsplit(args[[3]], ",")[[1]]
load_set <- function(which) {
  j <- job[job$set == which, ]
  obj <- readRDS(j$file[[1]])
  obj <- subset(obj, cells = j$cell)
  DefaultAssay(obj) <- "RNA"
  obj <- DietSeurat(obj, assays = "RNA", counts = TRUE, data = TRUE)
  list(obj = obj[, j$cell], labels = j$label)
}
r <- load_set("ref")
q <- load_set("query")
genes <- intersect(rownames(r$obj), rownames(q$obj))
ref <- NormalizeData(r$obj[genes, ], verbose = FALSE)
qry <- NormalizeData(q$obj[genes, ], verbose = FALSE)
ref$label <- r$labels
out <- list()
if ("singler" %in% methods && requireNamespace("SingleR", quietly = TRUE)) {
  t0 <- proc.time()[["elapsed"]]
  pred <- SingleR::SingleR(test = GetAssayData(qry, slot = "data"), ref = GetAssayData(ref, slot = "data"),
                           labels = ref$label)
  secs <- proc.time()[["elapsed"]] - t0
  out$singler <- data.frame(cell = colnames(qry), method = "singler", label = pred$labels, seconds = secs)
}
if ("seurat" %in% methods) {
  t0 <- proc.time()[["elapsed"]]
  ref <- FindVariableFeatures(ref, nfeatures = min(2000, length(genes)), verbose = FALSE)
  anchors <- FindTransferAnchors(reference = ref, query = qry, dims = 1:30, verbose = FALSE)
  pred <- TransferData(anchorset = anchors, refdata = ref$label, dims = 1:30, verbose = FALSE)
  secs <- proc.time()[["elapsed"]] - t0
  out$seurat <- data.frame(cell = colnames(qry), method = "seurat", label = pred$predicted.id, seconds = secs)
}
utils::write.table(do.call(rbind, out), args[[2]], sep = "\t", quote = FALSE, row.names = FALSE)
