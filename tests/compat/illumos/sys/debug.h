/* Compile-check shim, not the real illumos <sys/debug.h>: see ../ddi_proto.h */
#include "../ddi_proto.h"
