/* Reading h5ad files: datasets into R vectors (see h5io.c). */
#include <R.h>
#include <Rinternals.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "h5io.h"

#if H5_VERSION_GE(1, 12, 0)
#define VLEN_RECLAIM(t, s, p, b) H5Treclaim(t, s, p, b)
#else
#define VLEN_RECLAIM(t, s, p, b) H5Dvlen_reclaim(t, s, p, b)
#endif

SEXP pyb_h5_read(SEXP loc, SEXP name, SEXP as) {
    hid_t lid = as_hid(loc);
    const char *nm = CHAR(STRING_ELT(name, 0));
    int want = asInteger(as);
    quiet_errors();
    int own = !(H5Iget_type(lid) == H5I_DATASET && !strcmp(nm, "."));  /* an open dataset itself */
    hid_t ds = own ? H5Dopen2(lid, nm, H5P_DEFAULT) : lid;
    if (ds < 0) h5_fail("open the dataset", nm);
    hid_t ft = H5Dget_type(ds), space = H5Dget_space(ds);
    H5T_class_t cls = H5Tget_class(ft);
    size_t size = H5Tget_size(ft);
    int rank = H5Sget_simple_extent_ndims(space);
    int enum1 = cls == H5T_ENUM && size == 1;
    int vlen = cls == H5T_STRING && H5Tis_variable_str(ft) > 0;
    if (!(cls == H5T_FLOAT || cls == H5T_INTEGER || enum1 || cls == H5T_STRING) || rank < 0 || rank > 32) {
        H5Sclose(space); H5Tclose(ft);
        if (own) H5Dclose(ds);
        restore_errors();
        return R_NilValue;  /* not numeric: hdf5r reads it */
    }
    hsize_t shape[32];
    H5Sget_simple_extent_dims(space, shape, NULL);
    double n = 1;
    for (int i = 0; i < rank; i++) n *= (double) shape[i];
    SEXPTYPE rt;
    hid_t mtype;
    int wide = 0;
    if (cls == H5T_STRING) {
        rt = STRSXP;
        mtype = H5Tcopy(H5T_C_S1);
        H5Tset_size(mtype, vlen ? H5T_VARIABLE : size);
        H5Tset_cset(mtype, H5Tget_cset(ft));
        if (!vlen) H5Tset_strpad(mtype, H5T_STR_NULLPAD);
    } else if (enum1) { rt = LGLSXP; mtype = H5Tget_native_type(ft, H5T_DIR_ASCEND); }
    else if (cls == H5T_FLOAT || want == 1) { rt = REALSXP; mtype = H5Tcopy(H5T_NATIVE_DOUBLE); }
    else {
        H5T_sign_t sign = H5Tget_sign(ft);
        int fits = size < 4 || (size == 4 && sign == H5T_SGN_2) || want == 2;
        wide = !fits;
        rt = fits ? INTSXP : REALSXP;
        mtype = H5Tcopy(fits ? H5T_NATIVE_INT : H5T_NATIVE_DOUBLE);
    }
    restore_errors();  /* the allocation may fail (memory): R's error, nothing of ours to restore */
    SEXP out = PROTECT(big_vector(rt, (R_xlen_t) n));
    quiet_errors();
    int ok = 1;
    if (n > 0) {
        if (rt == STRSXP && vlen) {
            char **strs = (char **) R_alloc((size_t) n, sizeof(char *));
            ok = H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, strs) >= 0;
            for (R_xlen_t k = 0; ok && k < (R_xlen_t) n; k++) SET_STRING_ELT(out, k, mkCharCE(strs[k] ? strs[k] : "", CE_UTF8));
            if (ok) VLEN_RECLAIM(mtype, space, H5P_DEFAULT, strs);
        } else if (rt == STRSXP) {
            char *b = (char *) R_alloc((size_t) n, size);
            ok = H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, b) >= 0;
            for (R_xlen_t k = 0; ok && k < (R_xlen_t) n; k++) {
                const char *e = b + (size_t) k * size;
                SET_STRING_ELT(out, k, mkCharLenCE(e, (int) strnlen(e, size), CE_UTF8));
            }
        } else if (rt == LGLSXP) {
            int8_t *tmp = (int8_t *) R_alloc((size_t) n, 1);
            ok = H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, tmp) >= 0;
            for (R_xlen_t k = 0; ok && k < (R_xlen_t) n; k++) LOGICAL(out)[k] = tmp[k] != 0;
        } else {
            void *p = rt == REALSXP ? (void *) REAL(out) : (void *) INTEGER(out);
            ok = H5Dread(ds, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, p) >= 0;
        }
    }
    H5Tclose(mtype);
    H5Sclose(space);
    H5Tclose(ft);
    if (own) H5Dclose(ds);
    if (!ok) h5_fail("read the dataset", nm);
    restore_errors();
    if (wide && want == 0) {  /* int64 / uint32 values that all fit in R's integer: integer (as hdf5r) */
        R_xlen_t k, len = XLENGTH(out);
        const double *d = REAL(out);
        for (k = 0; k < len; k++) if (!(d[k] >= -2147483647.0 && d[k] <= 2147483647.0)) break;
        if (k == len) {
            SEXP iv = PROTECT(big_vector(INTSXP, len));
            for (k = 0; k < len; k++) INTEGER(iv)[k] = (int) d[k];
            UNPROTECT(2);
            out = PROTECT(iv);
        }
    }
    if (rank >= 2) {
        SEXP d = PROTECT(allocVector(INTSXP, rank));
        for (int i = 0; i < rank; i++) INTEGER(d)[i] = (int) shape[rank - 1 - i];
        setAttrib(out, R_DimSymbol, d);
        UNPROTECT(1);
    }
    UNPROTECT(1);
    return out;
}


/* A file opened read-only. */
SEXP pyb_h5_open(SEXP path) {
    const char *p = translateChar(STRING_ELT(path, 0));
    quiet_errors();
    hid_t f = H5Fopen(p, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) h5_fail("open the file", p);
    restore_errors();
    return hid_sexp(f);
}

/* The value of an attribute as R reads it: strings -> character, integers -> integer (int64 and
   uint32 -> double), floats -> double, h5py's bool -> logical; an empty array -> character(0);
   other classes -> NULL. */
static SEXP attr_value(hid_t a) {
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    H5T_class_t cls = H5Tget_class(ft);
    size_t size = H5Tget_size(ft);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    SEXP out = R_NilValue;
    int nprot = 0;
    if (n == 0) {
        out = PROTECT(allocVector(STRSXP, 0)); nprot++;
    } else if (cls == H5T_STRING) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        int vlen = H5Tis_variable_str(ft) > 0;
        H5Tset_size(mt, vlen ? H5T_VARIABLE : size);
        H5Tset_cset(mt, H5Tget_cset(ft));
        out = PROTECT(allocVector(STRSXP, n)); nprot++;
        if (vlen) {
            char **v = (char **) R_alloc((size_t) n, sizeof(char *));
            if (H5Aread(a, mt, v) >= 0) {
                for (hssize_t k = 0; k < n; k++) SET_STRING_ELT(out, k, mkCharCE(v[k] ? v[k] : "", CE_UTF8));
                VLEN_RECLAIM(mt, sp, H5P_DEFAULT, v);
            }
        } else {
            char *b = (char *) R_alloc((size_t) n, size);
            H5Tset_strpad(mt, H5T_STR_NULLPAD);
            if (H5Aread(a, mt, b) >= 0) {
                for (hssize_t k = 0; k < n; k++) {
                    const char *e = b + (size_t) k * size;
                    SET_STRING_ELT(out, k, mkCharLenCE(e, (int) strnlen(e, size), CE_UTF8));
                }
            }
        }
        H5Tclose(mt);
    } else if (cls == H5T_ENUM && size == 1) {
        hid_t mt = H5Tget_native_type(ft, H5T_DIR_ASCEND);
        int8_t *b = (int8_t *) R_alloc((size_t) n, 1);
        out = PROTECT(allocVector(LGLSXP, n)); nprot++;
        if (H5Aread(a, mt, b) >= 0) for (hssize_t k = 0; k < n; k++) LOGICAL(out)[k] = b[k] != 0;
        H5Tclose(mt);
    } else if (cls == H5T_INTEGER && (size < 4 || (size == 4 && H5Tget_sign(ft) == H5T_SGN_2))) {
        out = PROTECT(allocVector(INTSXP, n)); nprot++;
        H5Aread(a, H5T_NATIVE_INT, INTEGER(out));
    } else if (cls == H5T_INTEGER || cls == H5T_FLOAT) {
        out = PROTECT(allocVector(REALSXP, n)); nprot++;
        H5Aread(a, H5T_NATIVE_DOUBLE, REAL(out));
    }
    H5Sclose(sp);
    H5Tclose(ft);
    UNPROTECT(nprot);
    return out;
}

typedef struct { SEXP names, values; int k; } attrs_t;

static herr_t attr_cb(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    attrs_t *d = (attrs_t *) data;
    (void) info;
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    if (a < 0) return -1;
    SEXP v = attr_value(a);
    H5Aclose(a);
    SET_STRING_ELT(d->names, d->k, mkCharCE(name, CE_UTF8));
    SET_VECTOR_ELT(d->values, d->k, v);
    d->k++;
    return 0;
}

static herr_t count_cb(hid_t loc, const char *name, const H5A_info_t *info, void *data) {
    (void) loc; (void) name; (void) info;
    (*(int *) data)++;
    return 0;
}

/* What the reader needs to know of one object, in one call: list(kind = "group" | "dataset" |
   "missing", attrs = named list, children = names (groups, by name as h5py lists them),
   class = "float" | "integer" | "string" | "enum" | "compound" | ..., shape = HDF5 dims). */
SEXP pyb_h5_info(SEXP loc, SEXP path) {
    hid_t lid = as_hid(loc);
    const char *p = CHAR(STRING_ELT(path, 0));
    const char *names[] = {"kind", "attrs", "children", "class", "shape"};
    SEXP out = PROTECT(allocVector(VECSXP, 5));
    SEXP nm = PROTECT(allocVector(STRSXP, 5));
    for (int i = 0; i < 5; i++) SET_STRING_ELT(nm, i, mkChar(names[i]));
    setAttrib(out, R_NamesSymbol, nm);
    quiet_errors();
    /* every link on the path must exist (H5Oopen on a missing one is an error, not a "no") */
    int exists = 1;
    if (strcmp(p, "/") && strcmp(p, ".")) {
        size_t L = strlen(p);
        char *buf = R_alloc(L + 1, 1);
        for (size_t i = 1; i <= L && exists; i++) {
            if (p[i] == '/' || p[i] == 0) {
                memcpy(buf, p, i);
                buf[i] = 0;
                if (i == 1 && p[0] == '/') continue;
                exists = H5Lexists(lid, buf, H5P_DEFAULT) > 0;
            }
        }
    }
    hid_t o = exists ? H5Oopen(lid, p, H5P_DEFAULT) : -1;
    if (o < 0) {
        H5Eclear2(H5E_DEFAULT);
        restore_errors();
        SET_VECTOR_ELT(out, 0, mkString(exists ? "unreadable" : "missing"));
        UNPROTECT(2);
        return out;
    }
    H5I_type_t t = H5Iget_type(o);
    SET_VECTOR_ELT(out, 0, mkString(t == H5I_GROUP ? "group" : t == H5I_DATASET ? "dataset" : "other"));
    int na = 0;
    hsize_t idx = 0;
    H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_INC, &idx, count_cb, &na);
    attrs_t ad;
    ad.names = PROTECT(allocVector(STRSXP, na));
    ad.values = PROTECT(allocVector(VECSXP, na));
    ad.k = 0;
    idx = 0;
    if (na > 0) H5Aiterate2(o, H5_INDEX_NAME, H5_ITER_INC, &idx, attr_cb, &ad);
    setAttrib(ad.values, R_NamesSymbol, ad.names);
    SET_VECTOR_ELT(out, 1, ad.values);
    if (t == H5I_GROUP) {
        H5G_info_t gi;
        int nk = H5Gget_info(o, &gi) >= 0 ? (int) gi.nlinks : 0;
        SEXP kids = PROTECT(allocVector(STRSXP, nk));
        for (int i = 0; i < nk; i++) {
            ssize_t len = H5Lget_name_by_idx(o, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t) i, NULL, 0, H5P_DEFAULT);
            if (len < 0) continue;
            char *b = R_alloc((size_t) len + 1, 1);
            H5Lget_name_by_idx(o, ".", H5_INDEX_NAME, H5_ITER_INC, (hsize_t) i, b, (size_t) len + 1, H5P_DEFAULT);
            SET_STRING_ELT(kids, i, mkCharCE(b, CE_UTF8));
        }
        SET_VECTOR_ELT(out, 2, kids);
        UNPROTECT(1);
    } else if (t == H5I_DATASET) {
        hid_t ft = H5Dget_type(o), sp = H5Dget_space(o);
        const char *c;
        switch (H5Tget_class(ft)) {
        case H5T_FLOAT: c = "float"; break;
        case H5T_INTEGER: c = "integer"; break;
        case H5T_STRING: c = "string"; break;
        case H5T_ENUM: c = "enum"; break;
        case H5T_COMPOUND: c = "compound"; break;
        default: c = "other";
        }
        SET_VECTOR_ELT(out, 3, mkString(c));
        int rank = H5Sget_simple_extent_ndims(sp);
        hsize_t dims[32];
        if (rank > 32) rank = 32;
        if (rank > 0) H5Sget_simple_extent_dims(sp, dims, NULL);
        SEXP sh = PROTECT(allocVector(REALSXP, rank > 0 ? rank : 0));
        for (int i = 0; i < rank; i++) REAL(sh)[i] = (double) dims[i];
        SET_VECTOR_ELT(out, 4, sh);
        UNPROTECT(1);
        H5Sclose(sp);
        H5Tclose(ft);
    }
    H5Oclose(o);
    H5Eclear2(H5E_DEFAULT);
    restore_errors();
    UNPROTECT(4);
    return out;
}

/* A compound dataset (a NumPy structured array: anndata's rec-arrays, and obs / var / obsm of
   anndata <= 0.6) as a named list of its fields: numbers -> double / integer, h5py bool ->
   logical, strings -> character, array fields (obsm of anndata <= 0.6: X_pca of n x k) -> an
   n x k matrix. Fields of other classes are NULL. */
SEXP pyb_h5_read_compound(SEXP loc, SEXP path) {
    const char *p = CHAR(STRING_ELT(path, 0));
    quiet_errors();
    hid_t ds = H5Dopen2(as_hid(loc), p, H5P_DEFAULT);
    if (ds < 0) h5_fail("open the dataset", p);
    hid_t ft = H5Dget_type(ds), sp = H5Dget_space(ds);
    if (H5Tget_class(ft) != H5T_COMPOUND) {
        H5Sclose(sp); H5Tclose(ft); H5Dclose(ds);
        restore_errors();
        error("'%s' is not a compound dataset", p);
    }
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    int nf = H5Tget_nmembers(ft);
    restore_errors();
    SEXP out = PROTECT(allocVector(VECSXP, nf));
    SEXP names = PROTECT(allocVector(STRSXP, nf));
    quiet_errors();
    int ok = 1;
    for (int f = 0; f < nf && ok; f++) {
        char *fname = H5Tget_member_name(ft, (unsigned) f);
        SET_STRING_ELT(names, f, mkCharCE(fname, CE_UTF8));
        hid_t mt = H5Tget_member_type(ft, (unsigned) f);
        H5T_class_t cls = H5Tget_class(mt);
        size_t size = H5Tget_size(mt);
        hid_t rmt = -1;      /* memory type of the field */
        SEXP col = R_NilValue;
        hsize_t k = 1;       /* values per row (array fields) */
        SEXPTYPE rt = NILSXP;
        if (cls == H5T_ARRAY) {
            hid_t base = H5Tget_super(mt);
            int r = H5Tget_array_ndims(mt);
            hsize_t ad[8];
            if (r > 0 && r <= 8 && (H5Tget_class(base) == H5T_FLOAT || H5Tget_class(base) == H5T_INTEGER)) {
                H5Tget_array_dims2(mt, ad);
                for (int i = 0; i < r; i++) k *= ad[i];
                rmt = H5Tarray_create2(H5T_NATIVE_DOUBLE, 1, &k);
                rt = REALSXP;
            }
            H5Tclose(base);
        } else if (cls == H5T_FLOAT || (cls == H5T_INTEGER && !(size < 4 || (size == 4 && H5Tget_sign(mt) == H5T_SGN_2)))) {
            rmt = H5Tcopy(H5T_NATIVE_DOUBLE); rt = REALSXP;
        } else if (cls == H5T_INTEGER) {
            rmt = H5Tcopy(H5T_NATIVE_INT); rt = INTSXP;
        } else if (cls == H5T_ENUM && size == 1) {
            rmt = H5Tget_native_type(mt, H5T_DIR_ASCEND); rt = LGLSXP;
        } else if (cls == H5T_STRING) {
            rmt = H5Tcopy(H5T_C_S1);
            H5Tset_size(rmt, H5Tis_variable_str(mt) > 0 ? H5T_VARIABLE : size);
            H5Tset_cset(rmt, H5Tget_cset(mt));
            if (H5Tis_variable_str(mt) <= 0) H5Tset_strpad(rmt, H5T_STR_NULLPAD);
            rt = STRSXP;
        }
        if (rt != NILSXP && n > 0) {
            size_t esize = H5Tget_size(rmt);
            hid_t ct = H5Tcreate(H5T_COMPOUND, esize);
            H5Tinsert(ct, fname, 0, rmt);
            char *buf = R_alloc((size_t) n, esize);
            ok = H5Dread(ds, ct, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) >= 0;
            restore_errors();
            if (ok && rt == REALSXP && k > 1) {
                col = PROTECT(allocMatrix(REALSXP, (int) n, (int) k));
                const double *d = (const double *) buf;
                for (hssize_t i = 0; i < n; i++) for (hsize_t j = 0; j < k; j++) REAL(col)[i + j * n] = d[i * k + j];
            } else if (ok && rt == REALSXP) {
                col = PROTECT(allocVector(REALSXP, n));
                memcpy(REAL(col), buf, (size_t) n * sizeof(double));
            } else if (ok && rt == INTSXP) {
                col = PROTECT(allocVector(INTSXP, n));
                memcpy(INTEGER(col), buf, (size_t) n * sizeof(int));
            } else if (ok && rt == LGLSXP) {
                col = PROTECT(allocVector(LGLSXP, n));
                for (hssize_t i = 0; i < n; i++) LOGICAL(col)[i] = ((int8_t *) buf)[i] != 0;
            } else if (ok && rt == STRSXP) {
                col = PROTECT(allocVector(STRSXP, n));
                if (H5Tis_variable_str(rmt) > 0) {
                    char **v = (char **) buf;
                    for (hssize_t i = 0; i < n; i++) SET_STRING_ELT(col, i, mkCharCE(v[i] ? v[i] : "", CE_UTF8));
                    VLEN_RECLAIM(ct, sp, H5P_DEFAULT, buf);
                } else {
                    for (hssize_t i = 0; i < n; i++) {
                        const char *e = buf + (size_t) i * esize;
                        SET_STRING_ELT(col, i, mkCharLenCE(e, (int) strnlen(e, esize), CE_UTF8));
                    }
                }
            } else {
                col = PROTECT(R_NilValue);
            }
            quiet_errors();
            SET_VECTOR_ELT(out, f, col);
            UNPROTECT(1);
            H5Tclose(ct);
        } else if (rt != NILSXP) {
            SET_VECTOR_ELT(out, f, allocVector(rt, 0));
        }
        if (rmt >= 0) H5Tclose(rmt);
        H5Tclose(mt);
        H5free_memory(fname);
    }
    H5Sclose(sp);
    H5Tclose(ft);
    H5Dclose(ds);
    if (!ok) h5_fail("read the dataset", p);
    restore_errors();
    setAttrib(out, R_NamesSymbol, names);
    UNPROTECT(2);
    return out;
}
