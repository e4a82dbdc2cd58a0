/* Compile-check shim, not the real illumos <sys/mman.h>: see ../ddi_proto.h */
#include "../ddi_proto.h"
