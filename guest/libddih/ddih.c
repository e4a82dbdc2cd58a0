/*
 * libddih: see ddih.h.  POSIX only, so that it builds on Linux (static,
 * glibc) and on illumos (system libc) alike.
 */

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ddih.h"

int
ddih_open(const char *path)
{
	if (path == NULL)
		path = getenv("DDIH_DEV");
	if (path == NULL || *path == '\0')
		path = DDIH_DEVICE;
	return (open(path, O_RDWR | O_CLOEXEC));
}

int
ddih_close(int fd)
{
	return (close(fd));
}

void
ddih_req_init(struct ddih_req *r, uint32_t op)
{
	(void) memset(r, 0, sizeof (*r));
	r->version = DDIH_ABI_VERSION;
	r->size = sizeof (*r);
	r->op = op;
}

int
ddih_request(int fd, struct ddih_req *r)
{
	unsigned long cmd;

	switch (DDIH_OP_FAMILY(r->op)) {
	case 1:
		cmd = DDIH_IOC_RMAP;
		break;
	case 2:
		cmd = DDIH_IOC_UMEM;
		break;
	default:
		cmd = DDIH_IOC_KMEM;
		break;
	}
	return (ioctl(fd, cmd, r));
}

int
ddih_umem_alloc_info(int fd, uint64_t size, uint32_t flags, uint32_t *handle,
    struct ddih_umem_info *info)
{
	struct ddih_req r;

	if (handle != NULL)
		*handle = 0;
	ddih_req_init(&r, DDIH_OP_UMEM_ALLOC);
	r.arg[0] = size;
	r.flags = flags;
	if (ddih_request(fd, &r) < 0)
		return (-1);
	if (r.kind != DDIH_KIND_VALUE || !(r.valid & DDIH_V_HANDLE) ||
	    r.ohandle == 0) {
		errno = ENOMEM;		/* ddi_umem_alloc returned NULL */
		return (-1);
	}
	if (handle != NULL)
		*handle = r.ohandle;
	if (info != NULL) {
		(void) memset(info, 0, sizeof (*info));
		info->size = (r.valid & DDIH_V_VALUE) ? r.value : 0;
		info->offset = (r.valid & DDIH_V_OFFSET) ? r.offset : 0;
		info->cookie_size = (r.valid & DDIH_V_COOKIE_SIZE) ?
		    r.cookie_size : 0;
		info->type = (r.valid & DDIH_V_TYPE) ? r.type : 0;
		info->zeroed = (r.valid & DDIH_V_ZEROED) ? (r.zeroed != 0) : 0;
	}
	return (0);
}

int
ddih_umem_alloc(int fd, uint64_t size, uint32_t flags, uint32_t *handle)
{
	return (ddih_umem_alloc_info(fd, size, flags, handle, NULL));
}

int
ddih_umem_free(int fd, uint32_t handle)
{
	struct ddih_req r;

	ddih_req_init(&r, DDIH_OP_UMEM_FREE);
	r.handle = handle;
	return (ddih_request(fd, &r) < 0 ? -1 : 0);
}

int
ddih_umem_export(int fd, uint32_t handle, int64_t off, uint64_t len,
    uint32_t maxprot, uint32_t devmap_flags)
{
	struct ddih_req r;

	ddih_req_init(&r, DDIH_OP_UMEM_EXPORT);
	r.handle = handle;
	r.soff = off;
	r.arg[0] = len;
	r.arg[1] = maxprot;
	r.flags = devmap_flags;
	return (ddih_request(fd, &r) < 0 ? -1 : 0);
}

void *
ddih_umem_mmap(int fd, size_t maplen, int prot, int flags)
{
	void *addr = mmap(NULL, maplen, prot, flags, fd, 0);

	return (addr == MAP_FAILED ? NULL : addr);
}

size_t
ddih_round_pages(uint64_t len)
{
	return ((size_t)((len + DDIH_PAGESIZE - 1) &
	    ~(uint64_t)(DDIH_PAGESIZE - 1)));
}

void *
ddih_umem_map(int fd, uint32_t handle, uint64_t off, size_t len, int prot,
    int flags)
{
	if (len == 0 || off > (uint64_t)INT64_MAX ||
	    len > SIZE_MAX - DDIH_PAGESIZE) {
		errno = EINVAL;
		return (NULL);
	}
	if (ddih_umem_export(fd, handle, (int64_t)off, len,
	    DDIH_PROT_READ | DDIH_PROT_WRITE | DDIH_PROT_EXEC | DDIH_PROT_USER,
	    0) != 0)
		return (NULL);
	return (ddih_umem_mmap(fd, ddih_round_pages(len), prot, flags));
}

int
ddih_umem_unmap(void *addr, size_t len)
{
	return (munmap(addr, ddih_round_pages(len)));
}

int
ddih_prot_to_mmap(uint32_t ddih_prot)
{
	int prot = 0;

	if (ddih_prot & DDIH_PROT_READ)
		prot |= PROT_READ;
	if (ddih_prot & DDIH_PROT_WRITE)
		prot |= PROT_WRITE;
	if (ddih_prot & DDIH_PROT_EXEC)
		prot |= PROT_EXEC;
	return (prot);
}

static int
pattern_request(int fd, uint32_t op, uint32_t handle, uint64_t off,
    uint64_t len, uint64_t seed, uint64_t *value)
{
	struct ddih_req r;

	ddih_req_init(&r, op);
	r.handle = handle;
	r.arg[0] = off;
	r.arg[1] = len;
	r.arg[2] = seed;
	if (ddih_request(fd, &r) < 0)
		return (-1);
	if (value != NULL)
		*value = r.value;
	return (0);
}

int
ddih_kernel_fill(int fd, uint32_t handle, uint64_t off, uint64_t len,
    uint64_t seed)
{
	return (pattern_request(fd, DDIH_OP_UMEM_FILL, handle, off, len, seed,
	    NULL));
}

int
ddih_kernel_check(int fd, uint32_t handle, uint64_t off, uint64_t len,
    uint64_t seed)
{
	uint64_t v = 0;

	if (pattern_request(fd, DDIH_OP_UMEM_CHECK, handle, off, len, seed,
	    &v) != 0)
		return (-1);
	return (v == 1 ? 1 : 0);
}

void
ddih_pattern_fill(void *p, size_t len, uint64_t seed)
{
	volatile uint8_t *b = p;
	size_t i;

	for (i = 0; i < len; i++)
		b[i] = DDIH_PATTERN(seed, i);
}

int64_t
ddih_pattern_check(const void *p, size_t len, uint64_t seed)
{
	const volatile uint8_t *b = p;
	size_t i;

	for (i = 0; i < len; i++) {
		if (b[i] != DDIH_PATTERN(seed, i))
			return ((int64_t)i);
	}
	return (-1);
}

static int
env_u64(const char *name, uint64_t *out)
{
	const char *s = getenv(name);
	char *end;

	if (s == NULL) {
		errno = ENOENT;
		return (-1);
	}
	if (*s < '0' || *s > '9') {
		errno = EINVAL;
		return (-1);
	}
	errno = 0;
	*out = strtoull(s, &end, 0);
	if (errno != 0 || *end != '\0') {
		errno = EINVAL;
		return (-1);
	}
	return (0);
}

int
ddih_inherited(struct ddih_inherit *in)
{
	uint64_t fd, h, size, off, len;

	if (env_u64("DDIH_FD", &fd) != 0 || env_u64("DDIH_HANDLE", &h) != 0 ||
	    env_u64("DDIH_SIZE", &size) != 0 || env_u64("DDIH_OFF", &off) != 0 ||
	    env_u64("DDIH_LEN", &len) != 0)
		return (-1);
	if (fd > INT32_MAX || h == 0 || h > UINT32_MAX) {
		errno = EINVAL;
		return (-1);
	}
	in->fd = (int)fd;
	in->handle = (uint32_t)h;
	in->size = size;
	in->off = off;
	in->len = len;
	return (0);
}
