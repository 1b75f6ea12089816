/* Writing h5ad files: datasets, attributes, groups, files (see h5io.c). */
#include <R.h>
#include <Rinternals.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "h5io.h"
#include "lzf_filter.h"

/* A scalar variable-length UTF-8 string attribute (as h5py writes a Python str). */
static int str_attr(hid_t obj, const char *name, const char *value) {
    hid_t t = vlen_str_type(), sp = H5Screate(H5S_SCALAR);
    if (H5Aexists(obj, name) > 0) H5Adelete(obj, name);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && H5Awrite(a, t, &value) >= 0;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return ok;
}


/* An attribute as h5py writes the Python value: str -> variable-length UTF-8 (scalar, or array
   when `array`), an empty str list -> empty float64 array (h5py cannot store it otherwise),
   bool -> h5py's enum bool, numbers -> int64 (scalar or array). */
SEXP pyb_h5_attr(SEXP loc, SEXP name, SEXP value, SEXP array) {
    hid_t obj = as_hid(loc);
    const char *nm = CHAR(STRING_ELT(name, 0));
    R_xlen_t n = XLENGTH(value);
    int arr = asLogical(array) == 1;
    if (!arr && n != 1) error("pybridge h5io: attribute '%s' needs one value (got %lld)", nm, (long long) n);
    const void *buf;
    hid_t t;
    int64_t *iv = NULL;
    int8_t *bv = NULL;
    const char **sv = NULL;
    double empty = 0;
    if (TYPEOF(value) == STRSXP && n == 0) { t = H5Tcopy(H5T_IEEE_F64LE); buf = &empty; }
    else if (TYPEOF(value) == STRSXP) {
        sv = (const char **) R_alloc((size_t) n, sizeof(char *));
        for (R_xlen_t k = 0; k < n; k++) sv[k] = STRING_ELT(value, k) == NA_STRING ? "" : translateCharUTF8(STRING_ELT(value, k));
        t = vlen_str_type();
        buf = sv;
    } else if (TYPEOF(value) == LGLSXP) {
        bv = (int8_t *) R_alloc(n ? (size_t) n : 1, 1);
        for (R_xlen_t k = 0; k < n; k++) bv[k] = LOGICAL(value)[k] == 1;
        t = bool_type();
        buf = bv;
    } else if (TYPEOF(value) == INTSXP || TYPEOF(value) == REALSXP) {
        iv = (int64_t *) R_alloc(n ? (size_t) n : 1, sizeof(int64_t));
        for (R_xlen_t k = 0; k < n; k++) iv[k] = TYPEOF(value) == INTSXP ? INTEGER(value)[k] : (int64_t) REAL(value)[k];
        t = H5Tcopy(H5T_STD_I64LE);
        buf = iv;
    } else error("pybridge h5io: cannot write an R %s attribute", type2char(TYPEOF(value)));
    quiet_errors();
    hsize_t dim = (hsize_t) n;
    hid_t sp = arr ? H5Screate_simple(1, &dim, NULL) : H5Screate(H5S_SCALAR);
    if (H5Aexists(obj, nm) > 0) H5Adelete(obj, nm);
    hid_t a = H5Acreate2(obj, nm, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    int ok = a >= 0 && (n == 0 || H5Awrite(a, t, buf) >= 0);
    if (a >= 0 && H5Aclose(a) < 0) ok = 0;
    H5Sclose(sp);
    H5Tclose(t);
    if (!ok) h5_fail("write the attribute", nm);
    restore_errors();
    return R_NilValue;
}

/* A new file (truncated), as h5py's File(path, "w"); userblock > 0 reserves that many bytes at
   the start of the file (MuData writes its signature there). */
SEXP pyb_h5_create(SEXP path, SEXP userblock) {
    const char *p = translateChar(STRING_ELT(path, 0));
    int ub = asInteger(userblock);
    quiet_errors();
    hid_t fcpl = H5Pcreate(H5P_FILE_CREATE);
    if (ub > 0) H5Pset_userblock(fcpl, (hsize_t) ub);
    hid_t f = H5Fcreate(p, H5F_ACC_TRUNC, fcpl, H5P_DEFAULT);
    H5Pclose(fcpl);
    if (f < 0) h5_fail("create the file", p);
    restore_errors();
    return hid_sexp(f);
}

/* A new group with anndata's encoding attributes (enc = c(type, version), or character(0)). */
SEXP pyb_h5_group(SEXP loc, SEXP name, SEXP enc) {
    const char *nm = CHAR(STRING_ELT(name, 0));
    quiet_errors();
    hid_t g = H5Gcreate2(as_hid(loc), nm, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int ok = g >= 0;
    if (ok && LENGTH(enc) == 2) {
        ok = str_attr(g, "encoding-type", CHAR(STRING_ELT(enc, 0))) &&
             str_attr(g, "encoding-version", CHAR(STRING_ELT(enc, 1)));
        if (!ok) H5Gclose(g);
    }
    if (!ok) h5_fail("create the group", nm);
    restore_errors();
    return hid_sexp(g);
}

/* Close a group or a file (a file: flushed and closed, every object still open in it first). */
SEXP pyb_h5_close(SEXP loc) {
    hid_t id = as_hid(loc);
    quiet_errors();
    H5I_type_t type = H5Iget_type(id);
    int ok = 1;
    if (type == H5I_FILE) {
        ssize_t cnt = H5Fget_obj_count(id, H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR | H5F_OBJ_LOCAL);
        if (cnt > 0) {
            hid_t *ids = (hid_t *) R_alloc((size_t) cnt, sizeof(hid_t));
            cnt = H5Fget_obj_ids(id, H5F_OBJ_DATASET | H5F_OBJ_GROUP | H5F_OBJ_DATATYPE | H5F_OBJ_ATTR | H5F_OBJ_LOCAL, (size_t) cnt, ids);
            for (ssize_t k = 0; k < cnt; k++) H5Oclose(ids[k]);
        }
        ok = H5Fclose(id) >= 0;
    } else if (type == H5I_GROUP) {
        ok = H5Gclose(id) >= 0;
    } else if (type == H5I_DATASET) {
        ok = H5Dclose(id) >= 0;
    }
    if (!ok) h5_fail("close", type == H5I_FILE ? "the file" : "the group");
    restore_errors();
    return R_NilValue;
}

SEXP pyb_h5_write(SEXP loc, SEXP name, SEXP x, SEXP dims, SEXP ftype, SEXP comp, SEXP enc) {
    hid_t lid = as_hid(loc);
    const char *nm = CHAR(STRING_ELT(name, 0));
    const char *ft = CHAR(STRING_ELT(ftype, 0));
    int rank = LENGTH(dims);  /* 0: a scalar dataset */
    if (rank > 32) error("pybridge h5io: rank %d not supported", rank);
    hsize_t shape[32], chunks[32];
    double n = 1;
    for (int i = 0; i < rank; i++) {
        shape[i] = (hsize_t) (TYPEOF(dims) == REALSXP ? REAL(dims)[i] : INTEGER(dims)[i]);
        n *= (double) shape[i];
    }
    if (n != (double) XLENGTH(x)) error("pybridge h5io: %s has %.0f values for shape of %.0f", nm, (double) XLENGTH(x), n);
    int kind = INTEGER(comp)[0], level = INTEGER(comp)[1];

    const void *buf;
    hid_t mtype;
    int8_t *tmp = NULL;
    int is_bool = !strcmp(ft, "bool");
    switch (TYPEOF(x)) {
    case REALSXP: buf = REAL_RO(x); mtype = H5Tcopy(H5T_NATIVE_DOUBLE); break;
    case INTSXP: buf = INTEGER_RO(x); mtype = H5Tcopy(H5T_NATIVE_INT); break;
    case LGLSXP:
        if (!is_bool) { buf = LOGICAL_RO(x); mtype = H5Tcopy(H5T_NATIVE_INT); break; }
        tmp = (int8_t *) R_alloc(XLENGTH(x) ? (size_t) XLENGTH(x) : 1, 1);
        for (R_xlen_t k = 0; k < XLENGTH(x); k++) tmp[k] = LOGICAL_RO(x)[k] == 1;
        buf = tmp;
        mtype = bool_type();
        break;
    case STRSXP: {
        if (strcmp(ft, "str")) error("pybridge h5io: a character vector needs file type 'str'");
        const char **strs = (const char **) R_alloc(XLENGTH(x) ? (size_t) XLENGTH(x) : 1, sizeof(char *));
        for (R_xlen_t k = 0; k < XLENGTH(x); k++) {
            SEXP el = STRING_ELT(x, k);
            strs[k] = el == NA_STRING ? "" : translateCharUTF8(el);
        }
        buf = strs;
        mtype = vlen_str_type();
        break;
    }
    default: error("pybridge h5io: cannot write an R %s vector", type2char(TYPEOF(x)));
    }
    if (is_bool && TYPEOF(x) != LGLSXP) error("pybridge h5io: 'bool' needs a logical vector");

    hid_t ftid = file_type(ft);
    quiet_errors();
    hid_t space = rank ? H5Screate_simple(rank, shape, NULL) : H5Screate(H5S_SCALAR);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int ok = ftid >= 0 && space >= 0 && dcpl >= 0;
    if (ok && kind > 0 && n > 0 && rank > 0) {
        guess_chunk(rank, shape, H5Tget_size(ftid), chunks);
        ok = H5Pset_chunk(dcpl, rank, chunks) >= 0;
        if (ok && kind == 1) ok = H5Pset_deflate(dcpl, (unsigned) level) >= 0;
        if (ok && kind == 2) ok = H5Pset_filter(dcpl, H5PY_FILTER_LZF, H5Z_FLAG_OPTIONAL, 0, NULL) >= 0;
    }
    hid_t ds = ok ? H5Dcreate2(lid, nm, ftid, space, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
    ok = ds >= 0 && (n == 0 || H5Dwrite(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    const char *what = ds < 0 ? "create the dataset" : "write the dataset";
    if (ok && LENGTH(enc) == 2) {  /* anndata's encoding-type and encoding-version */
        ok = str_attr(ds, "encoding-type", CHAR(STRING_ELT(enc, 0))) &&
             str_attr(ds, "encoding-version", CHAR(STRING_ELT(enc, 1)));
        what = "write the attributes of the dataset";
    }
    if (ds >= 0 && H5Dclose(ds) < 0) { ok = 0; what = "write the dataset"; }
    H5Pclose(dcpl);
    H5Sclose(space);
    H5Tclose(ftid);
    H5Tclose(mtype);
    if (!ok) h5_fail(what, nm);
    restore_errors();
    return R_NilValue;
}


/* A compound dataset (a NumPy structured array, anndata's rec-array) from a named list of
   equal-length columns: double -> f64, integer -> i32, logical -> h5py's bool, character ->
   variable-length UTF-8. Rows packed one after the other (NumPy's layout). */
SEXP pyb_h5_write_compound(SEXP loc, SEXP name, SEXP cols, SEXP comp, SEXP enc) {
    const char *nm = CHAR(STRING_ELT(name, 0));
    int nf = LENGTH(cols);
    SEXP fnames = getAttrib(cols, R_NamesSymbol);
    if (nf < 1 || fnames == R_NilValue) error("pybridge h5io: a compound dataset needs named columns");
    R_xlen_t n = XLENGTH(VECTOR_ELT(cols, 0));
    size_t *off = (size_t *) R_alloc((size_t) nf, sizeof(size_t)), row = 0;
    hid_t *ftypes = (hid_t *) R_alloc((size_t) nf, sizeof(hid_t));
    for (int f = 0; f < nf; f++) {
        SEXP c = VECTOR_ELT(cols, f);
        if (XLENGTH(c) != n) error("pybridge h5io: the columns of '%s' differ in length", nm);
        switch (TYPEOF(c)) {
        case REALSXP: ftypes[f] = H5Tcopy(H5T_IEEE_F64LE); break;
        case INTSXP: ftypes[f] = H5Tcopy(H5T_STD_I32LE); break;
        case LGLSXP: ftypes[f] = bool_type(); break;
        case STRSXP: ftypes[f] = vlen_str_type(); break;
        default:
            for (int g = 0; g < f; g++) H5Tclose(ftypes[g]);
            error("pybridge h5io: cannot write an R %s column in a compound dataset", type2char(TYPEOF(c)));
        }
        off[f] = row;
        row += H5Tget_size(ftypes[f]);
    }
    hid_t ct = H5Tcreate(H5T_COMPOUND, row);
    for (int f = 0; f < nf; f++) H5Tinsert(ct, translateCharUTF8(STRING_ELT(fnames, f)), off[f], ftypes[f]);
    char *buf = R_alloc(n ? (size_t) n : 1, row);
    for (int f = 0; f < nf; f++) {
        SEXP c = VECTOR_ELT(cols, f);
        for (R_xlen_t i = 0; i < n; i++) {
            char *dst = buf + (size_t) i * row + off[f];
            if (TYPEOF(c) == REALSXP) memcpy(dst, &REAL(c)[i], sizeof(double));
            else if (TYPEOF(c) == INTSXP) memcpy(dst, &INTEGER(c)[i], sizeof(int));
            else if (TYPEOF(c) == LGLSXP) { int8_t b = LOGICAL(c)[i] == 1; memcpy(dst, &b, 1); }
            else {
                SEXP el = STRING_ELT(c, i);
                const char *s = el == NA_STRING ? "" : translateCharUTF8(el);
                const size_t ps = sizeof s;
                memcpy(dst, &s, ps);
            }
        }
    }
    int kind = INTEGER(comp)[0], level = INTEGER(comp)[1];
    hsize_t dim = (hsize_t) n, chunk;
    quiet_errors();
    hid_t space = H5Screate_simple(1, &dim, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    int ok = space >= 0 && dcpl >= 0;
    if (ok && kind > 0 && n > 0) {
        guess_chunk(1, &dim, row, &chunk);
        ok = H5Pset_chunk(dcpl, 1, &chunk) >= 0;
        if (ok && kind == 1) ok = H5Pset_deflate(dcpl, (unsigned) level) >= 0;
        if (ok && kind == 2) ok = H5Pset_filter(dcpl, H5PY_FILTER_LZF, H5Z_FLAG_OPTIONAL, 0, NULL) >= 0;
    }
    hid_t ds = ok ? H5Dcreate2(as_hid(loc), nm, ct, space, H5P_DEFAULT, dcpl, H5P_DEFAULT) : -1;
    ok = ds >= 0 && (n == 0 || H5Dwrite(ds, ct, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0);
    const char *what = ds < 0 ? "create the dataset" : "write the dataset";
    if (ok && LENGTH(enc) == 2) {
        ok = str_attr(ds, "encoding-type", CHAR(STRING_ELT(enc, 0))) &&
             str_attr(ds, "encoding-version", CHAR(STRING_ELT(enc, 1)));
        what = "write the attributes of the dataset";
    }
    if (ds >= 0 && H5Dclose(ds) < 0) { ok = 0; what = "write the dataset"; }
    if (dcpl >= 0) H5Pclose(dcpl);
    if (space >= 0) H5Sclose(space);
    H5Tclose(ct);
    for (int f = 0; f < nf; f++) H5Tclose(ftypes[f]);
    if (!ok) h5_fail(what, nm);
    restore_errors();
    return R_NilValue;
}
