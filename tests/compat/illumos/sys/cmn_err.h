/* Compile-check shim, not the real illumos <sys/cmn_err.h>: see ../ddi_proto.h */
#include "../ddi_proto.h"
