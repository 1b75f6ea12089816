/* Shared by the package's HDF5 routines (h5io.c, h5write.c, h5read.c, bigvec.c). */
#ifndef PYB_H5IO_H
#define PYB_H5IO_H
#include <Rinternals.h>
#include "hdf5.h"

hid_t as_hid(SEXP x);
SEXP hid_sexp(hid_t id);
void quiet_errors(void);
void restore_errors(void);
void h5_fail(const char *what, const char *name);
void guess_chunk(int rank, const hsize_t *shape, size_t typesize, hsize_t *chunks);
hid_t vlen_str_type(void);
hid_t bool_type(void);
hid_t file_type(const char *f);
SEXP big_vector(SEXPTYPE type, R_xlen_t n);
void bigvec_init(DllInfo *dll);

#endif
