# Settings of the demo's two presets (read by demo/report.Rmd and printed in the report).
#
# "quick": short training everywhere, so the whole demo (four analyses + report) finishes in
#          under 15 minutes on 2 CPU cores. Numbers are real but models are under-trained:
#          integration mixes less and annotation is a little less accurate than with "full".
# "full":  the methods' usual settings (scvi-tools' epoch heuristic, Augur's 50 subsamples x 100
#          trees, cell2location's 30,000 epochs and 1,000 posterior samples). Meant for a GPU
#          (device = "auto" picks it); on a CPU it takes hours (cell2location dominates).
#
# NULL means "the method's own default".
demo_presets <- list(
  quick = list(
    scvi.max.epochs = 60,          # scvi-tools heuristic for 2,000 cells: 400
    scvi.kl.warmup = 20,           # KL warm-up over a third of the short run (scvi-tools: 400)
    scvi.lr = 4e-3,                # learning rate (scvi-tools: 1e-3, which needs ~400 epochs here)
    annotate.epochs = NULL,        # AnnotateCells' default (TOSICA: 20 epochs, fast on a CPU)
    augur.n.subsamples = 10,       # Augur: 50
    augur.n.trees = 50,            # Augur: 100
    insilico.n.random = 20,        # random matched genes per deleted gene (null)
    insilico.max.cells = 200,      # STIM CD14 monocytes used
    c2l.reference.max.epochs = 250,
    c2l.max.epochs = 1000,         # cell2location recommends 30,000
    c2l.lr = 0.02,                 # larger learning rate so 1,000 epochs converge (default 0.002)
    c2l.num.samples = 100          # posterior samples (default 1,000)
  ),
  full = list(
    scvi.max.epochs = NULL,
    scvi.kl.warmup = NULL,
    scvi.lr = NULL,
    annotate.epochs = NULL,
    augur.n.subsamples = 50,
    augur.n.trees = 100,
    insilico.n.random = 100,
    insilico.max.cells = NULL,
    c2l.reference.max.epochs = 250,
    c2l.max.epochs = 30000,
    c2l.lr = NULL,
    c2l.num.samples = 1000
  )
)

demo_preset <- function(name) {
  if (!name %in% names(demo_presets)) {
    stop("unknown preset '", name, "'; use one of: ", paste(names(demo_presets), collapse = ", "), call. = FALSE)
  }
  demo_presets[[name]]
}
