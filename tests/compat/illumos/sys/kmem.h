/* Compile-check shim, not the real illumos <sys/kmem.h>: see ../ddi_proto.h */
#include "../ddi_proto.h"
