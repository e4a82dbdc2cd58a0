/* Compile-check shim, not the real illumos <sys/kstat.h>: see ../ddi_proto.h */
#include "../ddi_proto.h"
