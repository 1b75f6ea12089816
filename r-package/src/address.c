/* Data address of an R vector, so Python can view R memory without a copy.
 * reticulate 1.28 converts plain R vectors to Python lists (a copy per element) and
 * giving a vector a dim attribute duplicates it; for a counts matrix of 1e8 non-zeros that is
 * 1.2 GB of extra memory. The Python side wraps this address in a read-only NumPy array that
 * keeps the R object alive (see pybridge/io/_parts.py: r_vector_view). */
#include <R.h>
#include <Rinternals.h>
#include <stdint.h>
#include <stdio.h>

SEXP pyb_address(SEXP x) {
    const void *ptr = NULL;
    switch (TYPEOF(x)) {
    case REALSXP: ptr = (const void *) REAL_RO(x); break;
    case INTSXP: ptr = (const void *) INTEGER_RO(x); break;
    case LGLSXP: ptr = (const void *) LOGICAL_RO(x); break;
    default: error("pyb_address: unsupported vector type %s", type2char(TYPEOF(x)));
    }
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long) (uintptr_t) ptr);
    return mkString(buf);
}
