/* Big numeric vectors outside R's vector heap, for the arrays read from h5ad files.
 *
 * R collects garbage before allocating a vector larger than its free vector heap, escalating to
 * a full collection (about 0.3 s with Seurat loaded, measured here) before it grows the heap: an
 * h5ad whose X has 1e8 non-zeros needs two such vectors (data 0.8 GB, indices 0.4 GB), and each
 * paid a full collection. These vectors are ALTREP doubles/integers whose memory is malloc'd
 * here (2 MiB aligned; not madvise'd to transparent huge pages: with the kernel's default
 * defrag = madvise, the first touch of 0.8 GB so advised cost 1.3-1.9 s of system time here against
 * 0.3 s in 4 KiB pages) and freed by a finalizer when R collects the vector. They behave as ordinary vectors (DATAPTR
 * gives the memory, writable: R copies before modifying a shared one as for any vector;
 * serialize() writes them as ordinary vectors). Small vectors use allocVector(). */
#include <R.h>
#include <Rinternals.h>
#include <R_ext/Altrep.h>
#include <stdlib.h>
#include "h5io.h"

#define BIG_MIN ((R_xlen_t) 1 << 20)  /* elements: 8 MB of doubles */

static R_altrep_class_t big_real, big_int;

static void big_free(SEXP ptr) {
    void *p = R_ExternalPtrAddr(ptr);
    if (p) free(p);
    R_ClearExternalPtr(ptr);
}

static R_xlen_t big_length(SEXP x) { return (R_xlen_t) REAL(R_altrep_data2(x))[0]; }
static void *big_dataptr(SEXP x, Rboolean writable) { (void) writable; return R_ExternalPtrAddr(R_altrep_data1(x)); }
static const void *big_dataptr_or_null(SEXP x) { return R_ExternalPtrAddr(R_altrep_data1(x)); }
static double big_real_elt(SEXP x, R_xlen_t i) { return ((double *) big_dataptr_or_null(x))[i]; }
static int big_int_elt(SEXP x, R_xlen_t i) { return ((int *) big_dataptr_or_null(x))[i]; }

SEXP big_vector(SEXPTYPE type, R_xlen_t n) {
    if (n < BIG_MIN || (type != REALSXP && type != INTSXP)) return allocVector(type, n);
    size_t bytes = (size_t) n * (type == REALSXP ? sizeof(double) : sizeof(int));
    void *p = NULL;
    if (posix_memalign(&p, (size_t) 2 << 20, bytes) != 0 || p == NULL) {
        error("cannot allocate a vector of %.1f Gb", (double) bytes / (1 << 30));
    }
    SEXP ptr = PROTECT(R_MakeExternalPtr(p, R_NilValue, R_NilValue));
    R_RegisterCFinalizerEx(ptr, big_free, TRUE);
    SEXP len = PROTECT(ScalarReal((double) n));
    SEXP out = R_new_altrep(type == REALSXP ? big_real : big_int, ptr, len);
    UNPROTECT(2);
    return out;
}

void bigvec_init(DllInfo *dll) {
    big_real = R_make_altreal_class("pyb_big_real", "pybridge", dll);
    big_int = R_make_altinteger_class("pyb_big_int", "pybridge", dll);
    R_set_altrep_Length_method(big_real, big_length);
    R_set_altrep_Length_method(big_int, big_length);
    R_set_altvec_Dataptr_method(big_real, big_dataptr);
    R_set_altvec_Dataptr_method(big_int, big_dataptr);
    R_set_altvec_Dataptr_or_null_method(big_real, big_dataptr_or_null);
    R_set_altvec_Dataptr_or_null_method(big_int, big_dataptr_or_null);
    R_set_altreal_Elt_method(big_real, big_real_elt);
    R_set_altinteger_Elt_method(big_int, big_int_elt);
}
