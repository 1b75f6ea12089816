# The Python engine: interpreter choice, lazy import, clear errors naming the fix.

.pyb <- new.env(parent = emptyenv())

.onLoad <- function(libname, pkgname) {
  # Interpreter: PYBRIDGE_PYTHON, else RETICULATE_PYTHON, else the 'r-pybridge' virtualenv.
  # Set through RETICULATE_PYTHON (only while Python is not yet running) so reticulate's own
  # discovery (e.g. a pyproject.toml in the working directory) does not pick another one.
  if (!reticulate::py_available(initialize = FALSE)) {
    py <- Sys.getenv("PYBRIDGE_PYTHON", unset = "")
    if (!nzchar(py) && !nzchar(Sys.getenv("RETICULATE_PYTHON", unset = "")) &&
        reticulate::virtualenv_exists("r-pybridge")) {
      py <- reticulate::virtualenv_python("r-pybridge")
    }
    if (nzchar(py)) Sys.setenv(RETICULATE_PYTHON = py)
  }
  # Imported on first use: on_load prepares the embedded interpreter (torch's BLAS, below),
  # on_error turns "module not found" into the fix.
  .pyb$module <- reticulate::import("pybridge", delay_load = list(
    on_load = function() .on_engine_load(),
    on_error = function(e) {
      stop("pybridge: the Python module 'pybridge' could not be imported (", conditionMessage(e), "). ",
           .fix_hint(), call. = FALSE)
    }
  ))
}

# Runs once, when the engine module is first imported. torch must bind to its own BLAS, not R's
# (R's reference BLAS makes training ~10x slower): import it with RTLD_DEEPBIND before anything
# else does (see pybridge/_embed.py).
.on_engine_load <- function() {
  .pyb$torch <- tryCatch(reticulate::import("pybridge._embed")$preload_torch(),
                         error = function(e) conditionMessage(e))
  invisible(NULL)
}

.fix_hint <- function() {
  paste0("Run pybridge::install_pybridge() to create the 'r-pybridge' virtualenv, ",
         "or set PYBRIDGE_PYTHON to a Python that has pybridge installed ",
         "(from the repository: bash scripts/setup.sh).")
}

.check_python <- function() {
  if (isTRUE(.pyb$checked)) return(invisible(TRUE))
  if (!reticulate::py_available(initialize = TRUE)) {
    stop("pybridge: no Python interpreter could be loaded. ", .fix_hint(), call. = FALSE)
  }
  cfg <- reticulate::py_config()
  if (!reticulate::py_module_available("numpy")) {
    stop("pybridge: NumPy is not installed in ", cfg$python, ". ", .fix_hint(), call. = FALSE)
  }
  npv <- tryCatch(
    reticulate::import("importlib.metadata")$version("numpy"),
    error = function(e) as.character(cfg$numpy$version)
  )
  if (utils::compareVersion(as.character(npv), "2.0") >= 0 &&
      utils::packageVersion("reticulate") < "1.36") {
    stop("pybridge: ", cfg$python, " has NumPy ", npv, ", which reticulate ",
         utils::packageVersion("reticulate"), " cannot load (incompatible NumPy binary version). ",
         "Install numpy<2 in that environment (pip install 'numpy<2'), or ", .fix_hint(), call. = FALSE)
  }
  if (!reticulate::py_module_available("pybridge")) {
    stop("pybridge: the Python module 'pybridge' is not installed in ", cfg$python, ". ",
         .fix_hint(), call. = FALSE)
  }
  reticulate::py_get_attr(.pyb$module, "__version__")  # loads the module: on_load / on_error above
  .pyb$checked <- TRUE
  invisible(TRUE)
}

#' Is the pybridge Python engine usable?
#'
#' Checks, without raising an error, that a Python interpreter can be loaded, that its
#' NumPy can be used by this reticulate, and that the `pybridge` module is installed.
#'
#' @return `TRUE` or `FALSE` (length-one logical).
#' @export
#' @examples
#' pybridge_available()
pybridge_available <- function() {
  isTRUE(tryCatch(.check_python(), error = function(e) FALSE))
}

#' The pybridge Python module (internal)
#'
#' @param submodule `NULL` for the package, else e.g. `"tl"`, `"io"`, `"pp"`.
#' @param convert Whether results are converted to R objects (reticulate's `convert`).
#' @return A reticulate module proxy. Errors with the fix when Python is unusable.
#' @keywords internal
.engine <- function(submodule = NULL, convert = TRUE) {
  .check_python()
  if (is.null(submodule) && convert) return(.pyb$module)
  reticulate::import(paste0("pybridge", if (!is.null(submodule)) paste0(".", submodule)), convert = convert)
}

#' Install the pybridge Python engine into a virtualenv
#'
#' Creates (or updates) the virtualenv `envname` and installs pybridge with the pins this
#' platform needs (`numpy<2` for reticulate 1.28, `pyro-ppl<1.9` for cell2location 0.1.5,
#' `rpy2<3.6` for R 4.2, `torch==2.13.0`), from `constraints.txt` shipped with the package.
#'
#' @param source What to `pip install`: a path to the pybridge source tree (the repository
#'   root), or a requirement such as `"pybridge[deconvolution]"`.
#' @param envname Name of the virtualenv (default `"r-pybridge"`, the one `library(pybridge)`
#'   looks for).
#' @param extras Optional extras, e.g. `c("deconvolution", "r")`.
#' @param python Python interpreter used to create the virtualenv (default: reticulate's choice).
#' @return The path of the environment's Python, invisibly.
#' @export
install_pybridge <- function(source = Sys.getenv("PYBRIDGE_SOURCE", unset = "pybridge"),
                             envname = "r-pybridge", extras = "deconvolution", python = NULL) {
  if (!reticulate::virtualenv_exists(envname)) {
    reticulate::virtualenv_create(envname, python = python)
  }
  py <- reticulate::virtualenv_python(envname)
  cons <- system.file("constraints.txt", package = "pybridge")
  target <- source
  if (length(extras) && nzchar(paste(extras, collapse = ""))) {
    target <- paste0(source, "[", paste(extras, collapse = ","), "]")
  }
  args <- c("-m", "pip", "install", "--quiet", if (nzchar(cons)) c("-c", cons), "torch==2.13.0", target)
  status <- system2(py, args)
  if (!identical(as.integer(status), 0L)) {
    stop("pip install failed (status ", status, ") for ", target, " into ", envname, ".", call. = FALSE)
  }
  message("pybridge installed in ", py, ". Restart R, then library(pybridge).")
  invisible(py)
}
