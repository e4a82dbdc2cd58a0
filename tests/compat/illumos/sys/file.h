/* Compile-check shim, not the real illumos <sys/file.h>: see ../ddi_proto.h */
#include "../ddi_proto.h"
