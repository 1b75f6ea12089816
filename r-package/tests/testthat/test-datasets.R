# LoadExampleData (datasets.R): the embedded h5ad datasets as Seurat objects.
suppressPackageStartupMessages({
  library(Seurat)
  library(pybridge)
})

test_that("LoadExampleData gives the embedded datasets as Seurat objects", {
  pap <- LoadExampleData("papalexi_eccite")
  ref <- readRDS(shared_data("papalexi_eccite.rds"))
  expect_setequal(Assays(pap), c("RNA", "GDO"))
  expect_identical(layer_data(pap, "counts"), layer_data(ref, "counts"))
  g1 <- layer_data(pap, "counts", assay = "GDO")
  g2 <- layer_data(ref, "counts", assay = "GDO")
  expect_identical(rownames(g1), rownames(g2))
  expect_identical(strip(g1), strip(g2))
  expect_equal(pap$nCount_GDO, ref$nCount_GDO)
  targets <- features_df(pap, "GDO")$target
  expect_identical(targets, as.character(unlist(Misc(pap, "grna_targets"))))
  expect_identical(targets[rownames(g1) %in% c("PDL1g1", "NTg1")], c("CD274", "non-targeting"))
  expect_identical(as.character(pap$top_grna_target), unname(ref$top_grna_target))

  vis <- LoadExampleData("lymphnode_visium")
  expect_identical(DefaultAssay(vis), "Spatial")
  expect_identical(strip(Embeddings(vis, "spatial")), strip(cbind(as.numeric(vis$x), as.numeric(vis$y))))
  kang0 <- LoadExampleData("kang_ifnb")
  expect_equal(dim(kang0), c(13215L, 2000L))  # (a double vector under SeuratObject 5)
  expect_identical(as.numeric(Matrix::colSums(layer_data(kang0, "counts"))), as.numeric(kang0$nCount_RNA))
  expect_identical(levels(LoadExampleData("pbmc_3tech")$donor), c("3pv1", "3pv2", "5p"))
  expect_identical(nlevels(LoadExampleData("lymphnode_reference")$cell_type), 11L)
  expect_error(LoadExampleData("pbmc3k"), "no example dataset 'pbmc3k'. Available: kang_ifnb, pbmc_3tech")
})
