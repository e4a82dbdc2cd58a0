/* Compile-check shim, not the real illumos <sys/vmem_impl.h>: see ../ddi_proto.h */
#include "../ddi_proto.h"
