/*
 * libddih: a small C library for guest user-space programs that use the
 * ddih test driver (kmod/linux, kmod/illumos) through its ioctl/mmap ABI
 * (kmod/ddih_ioctl.h).
 *
 * It opens the device, allocates umem buffers in the kernel
 * (ddi_umem_alloc; vmalloc_user on Linux), exports them to the calling
 * process through mmap(2), asks the kernel to write or verify a byte
 * pattern in them, and releases everything again.  guest/ddictl uses it for
 * its requests and its umem export path; examples/guest/pagetest.c shows a
 * test program working on exported pages.
 *
 * Errors: every function that can fail returns -1 (or NULL for the
 * pointer-returning ones) and sets errno, to the driver's errno when the
 * driver refused the request.  Nothing is printed.
 *
 * Offsets and lengths are in bytes.  The pattern of a range is the ABI's
 * DDIH_PATTERN(seed, i), where i counts from the start of the range (not of
 * the buffer), on both sides: the kernel's UMEM_FILL/UMEM_CHECK and
 * ddih_pattern_fill/ddih_pattern_check here.
 *
 * Portable to illumos: POSIX calls only (open, ioctl, mmap, munmap, close).
 * Build it into a program (static on Linux):
 *
 *   gcc -O2 -static -Wall -Iguest/libddih -Ikmod -o prog prog.c \
 *       guest/libddih/ddih.c
 *
 * Programs started by the ddi-harness pytest fixture `exported_pages'
 * (ExportedPages.run) inherit the fixture's open device and buffer; they
 * find them with ddih_inherited().
 */

#ifndef	_LIBDDIH_DDIH_H
#define	_LIBDDIH_DDIH_H

#include <stddef.h>
#include <stdint.h>

#include "ddih_ioctl.h"

#ifdef	__cplusplus
extern "C" {
#endif

#define	LIBDDIH_VERSION		1

/* What UMEM_ALLOC reported about a new buffer (ddih_umem_alloc_info). */
struct ddih_umem_info {
	uint64_t	size;		/* usable size: the request page-rounded */
	uint64_t	offset;		/* kernel address & (PAGESIZE - 1) */
	uint64_t	cookie_size;	/* the cookie's size */
	uint32_t	type;		/* DDIH_UMEM_TYPE_* */
	int		zeroed;		/* 1: the buffer read back all zero */
};

/* A buffer, device and mapping handed to a child program (see top). */
struct ddih_inherit {
	int		fd;		/* the open device ($DDIH_FD) */
	uint32_t	handle;		/* the umem buffer ($DDIH_HANDLE) */
	uint64_t	size;		/* its usable size ($DDIH_SIZE) */
	uint64_t	off;		/* the exported window: byte offset */
	uint64_t	len;		/* and length ($DDIH_OFF, $DDIH_LEN) */
};

/* ---- device ---- */

/*
 * Open the device read-write, close-on-exec.  path NULL: $DDIH_DEV if set,
 * else DDIH_DEVICE (/dev/ddih on Linux, /devices/pseudo/ddih@0:ddih on
 * illumos).  Returns the file descriptor.  Closing it (ddih_close) releases
 * every object the file still owns.
 */
int	ddih_open(const char *path);
int	ddih_close(int fd);

/* ---- raw requests (what ddictl uses) ---- */

/* Zero *r and set version, size and op. */
void	ddih_req_init(struct ddih_req *r, uint32_t op);

/*
 * Send *r to the driver with the ioctl of its op family.  Returns the
 * ioctl's return value (0), or -1 with errno; the driver copies the request
 * back in both cases (r->status holds the errno on failure).
 */
int	ddih_request(int fd, struct ddih_req *r);

/* ---- umem ---- */

/*
 * ddi_umem_alloc(size, flags) in the kernel; flags are DDIH_UMEM_* bits.
 * On success *handle names the buffer (per open file).  When the kernel
 * returned NULL: -1, errno ENOMEM, *handle 0.  _info also reports what the
 * driver observed about the new buffer (info may be NULL).
 */
int	ddih_umem_alloc(int fd, uint64_t size, uint32_t flags,
	    uint32_t *handle);
int	ddih_umem_alloc_info(int fd, uint64_t size, uint32_t flags,
	    uint32_t *handle, struct ddih_umem_info *info);

/* ddi_umem_free; handle 0 is ddi_umem_free(NULL), a no-op. */
int	ddih_umem_free(int fd, uint32_t handle);

/*
 * Record an export of bytes [off, off + len) of the buffer with the given
 * maximum protection (DDIH_PROT_* bits) and devmap flags (DDIH_DEVMAP_*).
 * The next mmap(2) of fd at offset 0 consumes it (ddih_umem_mmap).
 */
int	ddih_umem_export(int fd, uint32_t handle, int64_t off, uint64_t len,
	    uint32_t maxprot, uint32_t devmap_flags);

/*
 * mmap(2) the pending export: maplen bytes, prot PROT_* and flags
 * MAP_SHARED or MAP_PRIVATE of <sys/mman.h>.  Returns the address, or NULL
 * with errno (the driver's checks of the export fail mmap).
 */
void	*ddih_umem_mmap(int fd, size_t maplen, int prot, int flags);

/*
 * Export and map in one call: bytes [off, off + len) of the buffer, len
 * rounded up to whole pages (off must be page-aligned), any protection
 * allowed.  prot: PROT_READ | PROT_WRITE ...; flags: MAP_SHARED (user and
 * kernel share the pages) or MAP_PRIVATE (copy-on-write).  Returns the
 * address of byte `off' of the buffer, or NULL with errno.
 */
void	*ddih_umem_map(int fd, uint32_t handle, uint64_t off, size_t len,
	    int prot, int flags);

/* munmap a mapping of len bytes (rounded up to pages as ddih_umem_map did). */
int	ddih_umem_unmap(void *addr, size_t len);

/* DDIH_PROT_* bits (of the ABI) as PROT_* bits of <sys/mman.h>. */
int	ddih_prot_to_mmap(uint32_t ddih_prot);

/* Page-rounded length, as ddih_umem_map maps it. */
size_t	ddih_round_pages(uint64_t len);

/* ---- kernel side of the pages ---- */

/* The kernel writes DDIH_PATTERN(seed, i) to bytes [off, off + len). */
int	ddih_kernel_fill(int fd, uint32_t handle, uint64_t off, uint64_t len,
	    uint64_t seed);

/*
 * The kernel checks bytes [off, off + len) against DDIH_PATTERN(seed, i).
 * Returns 1 if every byte matches, 0 if not, -1 with errno on error.
 */
int	ddih_kernel_check(int fd, uint32_t handle, uint64_t off, uint64_t len,
	    uint64_t seed);

/* ---- user side of the pages ---- */

/* Write DDIH_PATTERN(seed, i) to p[0 .. len) (volatile stores). */
void	ddih_pattern_fill(void *p, size_t len, uint64_t seed);

/* Index of the first byte of p[0 .. len) that differs from the pattern, or -1. */
int64_t	ddih_pattern_check(const void *p, size_t len, uint64_t seed);

/* ---- programs started by the pytest fixture ---- */

/*
 * Fill *in from $DDIH_FD, $DDIH_HANDLE, $DDIH_SIZE, $DDIH_OFF and $DDIH_LEN.
 * Returns 0, or -1 with errno ENOENT when they are not set (the program
 * was not started by ExportedPages.run), EINVAL when one is malformed.
 */
int	ddih_inherited(struct ddih_inherit *in);

#ifdef	__cplusplus
}
#endif

#endif	/* _LIBDDIH_DDIH_H */
