/* Compile-check shim, not the real illumos <sys/id_space.h>: see ../ddi_proto.h */
#include "../ddi_proto.h"
