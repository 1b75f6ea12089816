/* Registration of the package's C routines (address.c, h5io.c, h5read.c, h5write.c) and of the LZF filter. */
#include <R.h>
#include <Rinternals.h>
#include <R_ext/Rdynload.h>

SEXP pyb_address(SEXP x);
SEXP pyb_h5_write(SEXP loc, SEXP name, SEXP x, SEXP dims, SEXP ftype, SEXP comp, SEXP enc);
SEXP pyb_h5_read(SEXP loc, SEXP name, SEXP as);
SEXP pyb_h5_filters(void);
SEXP pyb_h5_attr(SEXP loc, SEXP name, SEXP value, SEXP array);
SEXP pyb_h5_create(SEXP path, SEXP userblock);
SEXP pyb_free_space(SEXP path);
SEXP pyb_h5_group(SEXP loc, SEXP name, SEXP enc);
SEXP pyb_h5_close(SEXP loc);
void pyb_h5_init(DllInfo *dll);
SEXP pyb_h5_open(SEXP path);
SEXP pyb_h5_info(SEXP loc, SEXP path);
SEXP pyb_h5_read_compound(SEXP loc, SEXP path);
SEXP pyb_csc_check(SEXP i, SEXP p, SEXP nrow);
SEXP pyb_h5_write_compound(SEXP loc, SEXP name, SEXP cols, SEXP comp, SEXP enc);

static const R_CallMethodDef CallEntries[] = {
    {"pyb_address", (DL_FUNC) &pyb_address, 1},
    {"pyb_h5_write", (DL_FUNC) &pyb_h5_write, 7},
    {"pyb_h5_read", (DL_FUNC) &pyb_h5_read, 3},
    {"pyb_h5_filters", (DL_FUNC) &pyb_h5_filters, 0},
    {"pyb_h5_attr", (DL_FUNC) &pyb_h5_attr, 4},
    {"pyb_h5_create", (DL_FUNC) &pyb_h5_create, 2},
    {"pyb_free_space", (DL_FUNC) &pyb_free_space, 1},
    {"pyb_h5_group", (DL_FUNC) &pyb_h5_group, 3},
    {"pyb_h5_close", (DL_FUNC) &pyb_h5_close, 1},
    {"pyb_h5_open", (DL_FUNC) &pyb_h5_open, 1},
    {"pyb_h5_info", (DL_FUNC) &pyb_h5_info, 2},
    {"pyb_h5_read_compound", (DL_FUNC) &pyb_h5_read_compound, 2},
    {"pyb_csc_check", (DL_FUNC) &pyb_csc_check, 3},
    {"pyb_h5_write_compound", (DL_FUNC) &pyb_h5_write_compound, 5},
    {NULL, NULL, 0}
};

void R_init_pybridge(DllInfo *dll) {
    R_registerRoutines(dll, NULL, CallEntries, NULL, NULL);
    R_useDynamicSymbols(dll, FALSE);
    pyb_h5_init(dll);  /* h5py's LZF filter (id 32000), so files anndata wrote with lzf read */
}
