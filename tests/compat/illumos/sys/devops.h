/* Compile-check shim, not the real illumos <sys/devops.h>: see ../ddi_proto.h */
#include "../ddi_proto.h"
