/*
 * pagetest: a user-space test on pages a driver exported with
 * ddi_umem_alloc + mmap, written against guest/libddih.
 *
 *   1. user space writes a pattern into the mapping;
 *   2. the kernel verifies it (UMEM_CHECK);
 *   3. the kernel writes another pattern (UMEM_FILL);
 *   4. user space reads it back through the mapping.
 *
 * Exit status 0 if every step held, 1 if the pages are not shared, 2 on an
 * error.  Started by the pytest fixture (ExportedPages.run) it works on the
 * fixture's buffer (ddih_inherited); run by hand it allocates its own:
 *
 *   pagetest [pages] [user-seed] [kernel-seed]
 *
 * Build (static, on the host):
 *   gcc -O2 -static -Wall -Iguest/libddih -Ikmod -o pagetest \
 *       examples/guest/pagetest.c guest/libddih/ddih.c
 */

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "ddih.h"

static int
die(const char *what)
{
	(void) fprintf(stderr, "pagetest: %s: %s\n", what, strerror(errno));
	return (2);
}

int
main(int argc, char **argv)
{
	struct ddih_inherit in;
	uint64_t pages = argc > 1 ? strtoull(argv[1], NULL, 0) : 4;
	uint64_t useed = argc > 2 ? strtoull(argv[2], NULL, 0) : 0x11;
	uint64_t kseed = argc > 3 ? strtoull(argv[3], NULL, 0) : 0x22;
	int fd, owned = 0, ok;
	uint32_t h;
	uint64_t off, len;
	int64_t bad;
	uint8_t *p;

	if (ddih_inherited(&in) == 0) {		/* started by the fixture */
		fd = in.fd;
		h = in.handle;
		off = in.off;
		len = in.len;
	} else {
		if ((fd = ddih_open(NULL)) < 0)
			return (die("open the ddih device"));
		len = pages * DDIH_PAGESIZE;
		if (ddih_umem_alloc(fd, len, DDIH_UMEM_SLEEP, &h) != 0)
			return (die("ddih_umem_alloc"));
		off = 0;
		owned = 1;
	}

	p = ddih_umem_map(fd, h, off, (size_t)len, PROT_READ | PROT_WRITE,
	    MAP_SHARED);
	if (p == NULL)
		return (die("ddih_umem_map"));

	/* 1-2: user writes, kernel reads */
	ddih_pattern_fill(p, (size_t)len, useed);
	ok = ddih_kernel_check(fd, h, off, len, useed);
	if (ok < 0)
		return (die("ddih_kernel_check"));
	(void) printf("kernel sees the user pattern: %s\n", ok ? "yes" : "no");

	/* 3-4: kernel writes, user reads */
	if (ddih_kernel_fill(fd, h, off, len, kseed) != 0)
		return (die("ddih_kernel_fill"));
	bad = ddih_pattern_check(p, (size_t)len, kseed);
	if (bad >= 0)
		(void) printf("user sees the kernel pattern: no (byte %" PRId64
		    " is 0x%02x)\n", bad, p[bad]);
	else
		(void) printf("user sees the kernel pattern: yes\n");

	if (ddih_umem_unmap(p, (size_t)len) != 0)
		return (die("ddih_umem_unmap"));
	if (owned && (ddih_umem_free(fd, h) != 0 || ddih_close(fd) != 0))
		return (die("release"));
	(void) printf("pagetest: %s (%" PRIu64 " bytes at offset %" PRIu64
	    ")\n", ok && bad < 0 ? "PASS" : "FAIL", len, off);
	return (ok && bad < 0 ? 0 : 1);
}
