# Generated from pybridge/io/_layout.py by `python -m pybridge.io._layout > r-package/R/h5ad-layout.R`:
# do not edit by hand (tests/io/test_layout.py checks that it is current). The AnnData layout of a
# Seurat object, shared by the bridge (pybridge/io/_bridge.py) and the h5ad files (h5ad-write.R,
# h5ad-read.R).

.h5ad_layout <- list(
  elements = c("X", "layers", "obs", "var", "obsm", "varm", "obsp", "varp", "uns", "raw"),
  seurat_layers = c("counts", "data", "scale.data"),
  scale_data = "scale.data",
  reduction_prefix = "X_",
  loadings_named = list(
    pca = "PCs"
  ),
  loadings_suffix = "_loadings",
  highly_variable = "highly_variable",
  pca_variance = c("pca", "variance"),
  meta = "pybridge",
  meta_keys = c(
    "assay", "X_layer", "seurat_version", "reductions", "scale_data_features",
    "variable_features", "uns_generated", "assays_in_obsm", "idents", "report",
    "assay_class", "split"
  ),
  split_keys = c("key", "levels", "added", "layers"),
  reduction_keys = c("key", "assay", "global", "stdev", "loadings_features"),
  idents_keys = c("codes", "levels"),
  r_type_attr = "pybridge-r-type",
  layer_aliases = list(
    logcounts = "data"
  ),
  zellkonverter_x_name = "X_name",
  misc_x_absent = "pybridge.X_absent",
  obsm_assay_max_features = 1000,
  mudata_version = "0.1.0",
  tmp_marker = ".pybridge-tmp-"
)

# encoding-type -> encoding-version (anndata >= 0.8)
.h5ad_encodings <- list(
  anndata = "0.1.0",
  raw = "0.1.0",
  dict = "0.1.0",
  array = "0.2.0",
  `string-array` = "0.2.0",
  `numeric-scalar` = "0.2.0",
  string = "0.2.0",
  csr_matrix = "0.1.0",
  csc_matrix = "0.1.0",
  dataframe = "0.2.0",
  categorical = "0.2.0",
  `nullable-integer` = "0.1.0",
  `nullable-boolean` = "0.1.0",
  `nullable-string-array` = "0.1.0",
  `rec-array` = "0.2.0",
  null = "0.1.0"
)
