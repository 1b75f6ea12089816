/* Numeric HDF5 datasets written and read straight from and into R vectors (libhdf5, the library
 * hdf5r uses), for the big arrays of h5ad files: sparse data/indices/indptr and dense matrices.
 * hdf5r keeps the rest (groups, attributes, strings); the two share object ids (an hdf5r object's
 * `$id`, an integer64, is the hid_t of the same library instance).
 *
 * - pyb_h5_write(loc, name, x, dims, ftype, comp): a dataset `name` in group/file `loc` from the R
 *   vector x (double, integer, logical or character; no copy for double/integer), HDF5 shape
 *   `dims`, file type `ftype` ("f64", "f32", "i64", "i32", "i16", "i8", "u8", "bool" = h5py's enum
 *   int8, "str" = variable-length UTF-8 as h5py writes str), comp = c(kind, level): 0 none
 *   (contiguous, anndata's default), 1 gzip, 2 lzf; compressed datasets are chunked as h5py
 *   chunks them (h5py/_hl/filters.py: guess_chunk), so sizes match anndata's.
 *   enc = c(encoding-type, encoding-version) or character(0): anndata's attributes of the dataset.
 * - pyb_h5_read(loc, name, as): the dataset `name` of `loc` (or, with name ".", the open dataset
 *   `loc` itself) as an R vector, dim = reversed HDF5 shape for >= 2-d.
 *   as = 0: floats -> double, integers -> integer (int64 / uint32: when every value fits, else
 *   double); 1: double;
 *   2: integer where it fits. h5py bool -> logical, strings (variable or fixed length) ->
 *   character. NULL when the dataset is of another class (compounds, other enums: hdf5r reads
 *   them). Big vectors are allocated outside R's heap (bigvec.c), in ordinary pages.
 * - pyb_h5_filters(): whether gzip and lzf are available (lzf: h5py's filter, registered at load).
 *
 * Errors carry HDF5's own messages (e.g. "No space left on device"), innermost last. */
#include <R.h>
#include <Rinternals.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "h5io.h"
#include "lzf_filter.h"
#include <sys/statvfs.h>

hid_t as_hid(SEXP x) {
    if (TYPEOF(x) != REALSXP || XLENGTH(x) != 1) error("pybridge h5io: an hdf5r object id is expected");
    int64_t v;
    memcpy(&v, REAL(x), sizeof v);  /* bit64::integer64 keeps the int64 bits in a double */
    return (hid_t) v;
}

SEXP hid_sexp(hid_t id) {  /* an object id for R: integer64 bits, as hdf5r keeps them */
    SEXP out = PROTECT(allocVector(REALSXP, 1));
    int64_t v = (int64_t) id;
    memcpy(REAL(out), &v, sizeof v);
    UNPROTECT(1);
    return out;
}

/* HDF5's error stack as one message: the descriptions, outermost first, without duplicates. */
typedef struct { char buf[2048]; size_t len; } errbuf_t;

static herr_t collect(unsigned n, const H5E_error2_t *e, void *data) {
    errbuf_t *b = (errbuf_t *) data;
    (void) n;
    if (!e->desc || !e->desc[0] || strstr(b->buf, e->desc)) return 0;
    int w = snprintf(b->buf + b->len, sizeof b->buf - b->len, "%s%s", b->len ? "; " : "", e->desc);
    if (w > 0) b->len = (b->len + (size_t) w < sizeof b->buf) ? b->len + (size_t) w : sizeof b->buf - 1;
    return 0;
}

/* HDF5 prints errors through its "auto" handler, which hdf5r installs for itself: ours are
   collected instead, with the handler set aside during each call and restored after. */
static H5E_auto2_t saved_func;
static void *saved_data;

void quiet_errors(void) {
    H5Eget_auto2(H5E_DEFAULT, &saved_func, &saved_data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

void restore_errors(void) { H5Eset_auto2(H5E_DEFAULT, saved_func, saved_data); }

void h5_fail(const char *what, const char *name) {
    errbuf_t b;
    b.buf[0] = 0;
    b.len = 0;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, collect, &b);
    H5Eclear2(H5E_DEFAULT);
    restore_errors();
    error("HDF5 could not %s '%s': %s", what, name, b.len ? b.buf : "unknown error");
}

/* h5py's guess_chunk (h5py/_hl/filters.py), so that compressed files chunk as anndata's do. */
void guess_chunk(int rank, const hsize_t *shape, size_t typesize, hsize_t *chunks) {
    const double base = 16 * 1024, cmin = 8 * 1024, cmax = 1024 * 1024;
    double c[32], prod = 1;
    for (int i = 0; i < rank; i++) {
        c[i] = shape[i] ? (double) shape[i] : 1024;
        prod *= c[i];
    }
    double target = base * pow(2, log10(prod * typesize / (1024. * 1024)));
    if (target > cmax) target = cmax;
    else if (target < cmin) target = cmin;
    for (int idx = 0;; idx++) {
        double p = 1;
        for (int i = 0; i < rank; i++) p *= c[i];
        double bytes = p * typesize;
        if ((bytes < target || fabs(bytes - target) / target < 0.5) && bytes < cmax) break;
        if (p == 1) break;
        c[idx % rank] = ceil(c[idx % rank] / 2.0);
    }
    for (int i = 0; i < rank; i++) chunks[i] = (hsize_t) c[i];
}

hid_t vlen_str_type(void) {  /* h5py's str: variable-length UTF-8 */
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    return t;
}

hid_t bool_type(void) {  /* h5py's bool: enum of int8 {FALSE = 0, TRUE = 1} */
    hid_t t = H5Tenum_create(H5T_NATIVE_INT8);
    int8_t v = 0;
    H5Tenum_insert(t, "FALSE", &v);
    v = 1;
    H5Tenum_insert(t, "TRUE", &v);
    return t;
}

hid_t file_type(const char *f) {
    if (!strcmp(f, "f64")) return H5Tcopy(H5T_IEEE_F64LE);
    if (!strcmp(f, "f32")) return H5Tcopy(H5T_IEEE_F32LE);
    if (!strcmp(f, "i64")) return H5Tcopy(H5T_STD_I64LE);
    if (!strcmp(f, "i32")) return H5Tcopy(H5T_STD_I32LE);
    if (!strcmp(f, "i16")) return H5Tcopy(H5T_STD_I16LE);
    if (!strcmp(f, "i8")) return H5Tcopy(H5T_STD_I8LE);
    if (!strcmp(f, "u8")) return H5Tcopy(H5T_STD_U8LE);
    if (!strcmp(f, "bool")) return bool_type();
    if (!strcmp(f, "str")) return vlen_str_type();
    error("pybridge h5io: unknown file type '%s'", f);
    return -1;
}

SEXP pyb_h5_filters(void) {
    SEXP out = PROTECT(allocVector(LGLSXP, 2));
    LOGICAL(out)[0] = H5Zfilter_avail(H5Z_FILTER_DEFLATE) > 0;
    LOGICAL(out)[1] = H5Zfilter_avail(H5PY_FILTER_LZF) > 0;
    UNPROTECT(1);
    return out;
}

void pyb_h5_init(DllInfo *dll) {
    bigvec_init(dll);
    quiet_errors();
    if (H5Zfilter_avail(H5PY_FILTER_LZF) <= 0) register_lzf();
    H5Eclear2(H5E_DEFAULT);
    restore_errors();
}

/* Whether CSC arrays (i, p) of a matrix with `nrow` rows are canonical as a dgCMatrix needs them
   (p from 0 to length(i), non-decreasing; row indices in range and strictly increasing within
   each column): 0 yes, 1 no but valid (unsorted or duplicated indices, which scipy allows:
   sort and sum them), 2 invalid (out of range). One pass, instead of Matrix's validity method. */
SEXP pyb_csc_check(SEXP i, SEXP p, SEXP nrow) {
    R_xlen_t np = XLENGTH(p), ni = XLENGTH(i);
    const int *pp = INTEGER_RO(p), *ip = INTEGER_RO(i);
    int nr = asInteger(nrow), status = 0;
    if (np < 1 || pp[0] != 0 || pp[np - 1] != ni) return ScalarInteger(2);
    for (R_xlen_t c = 0; c + 1 < np; c++) {
        int a = pp[c], b = pp[c + 1];
        if (b < a || b > ni) return ScalarInteger(2);
        for (int k = a; k < b; k++) {
            if (ip[k] < 0 || ip[k] >= nr) return ScalarInteger(2);
            if (k > a && ip[k] <= ip[k - 1]) status = 1;
        }
    }
    return ScalarInteger(status);
}

/* Bytes available to this user on the file system holding `path` (statvfs), NA when unknown. */
SEXP pyb_free_space(SEXP path) {
    struct statvfs st;
    if (statvfs(translateChar(STRING_ELT(path, 0)), &st) != 0) return ScalarReal(NA_REAL);
    return ScalarReal((double) st.f_bavail * (double) st.f_frsize);
}
