/*
 * ddifuzz: a hostile-request fuzzer for the ddih driver (the Linux port;
 * it also builds on illumos, see "illumos" below).
 *
 * Sends malformed and hostile requests straight at /dev/ddih, mixed with
 * valid ones that drive the driver into deep states (maps with chunks and
 * allocations, umem buffers exported by mmap(2), kmem buffers and their
 * tombstones), from several processes and threads at once.  Every request is
 * classified *before* it is sent, from an exact user-space model of the
 * caller's own open file:
 *
 *   malformed  the driver must refuse it with an errno (the expected errno
 *              is known; another errno is counted as wrong_errno, an
 *              accepted request as unrefused -- a driver bug);
 *   absurd     absurd sizes (umem > 64 MiB, kmem > 4 MiB with sleeping
 *              flags, rmalloc_wait that can never be satisfied): the driver
 *              must decline (NULL, or EINTR when our timer interrupts the
 *              sleep), never succeed, never hang;
 *   valid      well-formed requests on the caller's own objects: they must
 *              succeed, and their results must match the model (handle
 *              numbers, first-fit rmalloc results, avail/total, zero fill,
 *              user/kernel coherence of mappings);
 *   contended  requests on objects that other processes and threads use at
 *              the same time (a shared open file): any outcome is allowed,
 *              but invariants are checked (an object is freed at most once).
 *
 * Each thread owns a private open file (so its model is exact), a helper
 * file whose handles are "foreign", and shares one file opened by the parent
 * before fork with every worker process and thread (handles travel between
 * processes through a shared-memory registry).  Bad user pointers are sent
 * on purpose, in a controlled way (NULL, kernel and non-canonical addresses,
 * PROT_NONE pages, a request straddling a guard page, a read-only request).
 *
 * Output (stdout): detail lines (UNREFUSED, WRONGERRNO, ANOMALY, NOTE), then
 * one line "ddifuzz sent=N ... by_errno=EINVAL:n,..." of counters.
 *
 * Usage: ddifuzz [-n ops] [-s seed] [-w workers] [-t threads] [-k] [-c]
 *                [-d device] [-v]
 *   -k  kill storm: SIGKILL a random worker now and then and start another
 *   -c  also probe the 4096-chunks-per-map cap (costs ~4100 requests)
 *   -m N  memory pressure probe: up to N umem buffers of 64 MiB, then up
 *       to 16*N rmap chunks of 2^24 units (see op_pressure)
 *
 * Build: gcc -O2 -static -Wall -Werror -I kmod -o ddifuzz guest/ddifuzz.c \
 *            -lpthread
 * On illumos (in the guest, with the system libc; no -static there):
 *        cd kmod/illumos && gmake ddifuzz
 *
 * illumos: the ioctl numbers are DDIH_IOC_* of ddih_ioctl.h, encoded by the
 * system's <sys/ioccom.h>, and the default device is DDIH_DEVICE.  The
 * model above is the Linux port's policy; where the illumos driver differs
 * (kmod/illumos/ddih.c, "Validation and the destructive switch") ddifuzz
 * built with __sun leaves out what would hang a thread for good or warn by
 * design, and checks only what both ports promise:
 *   - rmalloc_wait sleeps in vmem's cv_wait, which no signal interrupts:
 *     it is sent only when the model says it can be satisfied at once, never
 *     on the shared file; absurd umem/kmem sizes are sent with NOSLEEP only
 *     (a sleeping allocation of an absurd size never returns);
 *   - rmalloc places with vmem's instant fit, not first fit: any free run of
 *     the model is accepted (and recorded);
 *   - rmfree of part of an allocation, rmfreemap of a map with allocations
 *     ("vmem_destroy: leaked" by design), the 2^24-unit and 4096-chunk caps
 *     (E2BIG/ENOSPC: Linux only) are not sent;
 *   - kmem_free is given the allocation's size (illumos refuses another).
 */

#define	_GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ddih_ioctl.h"

#if defined(__sun)
#define	ILLUMOS		1
/* <sys/ioccom.h>: IOC_VOID/OUT/IN/INOUT | (size & 0xff) << 16 | type << 8 | nr */
#define	FZ_IOC(dir, type, nr, size)	((unsigned long)(uint32_t)(	\
	(uint32_t[]){ IOC_VOID, IOC_OUT, IOC_IN, IOC_INOUT }[(dir) & 3] |	\
	(((uint32_t)(size) & IOCPARM_MASK) << 16) |			\
	((uint32_t)(type) << 8) | (uint32_t)(nr)))
#define	FZ_CMD(cmd)	((int)(cmd))	/* ioctl(int, int, ...) */
#else
#define	ILLUMOS		0
#define	FZ_IOC(dir, type, nr, size)	((unsigned long)_IOC((dir), (type),	\
	(nr), (size)))
#define	FZ_CMD(cmd)	(cmd)
#endif

#define	PG		4096ULL
#define	PALIGN(x)	(((x) + PG - 1) & ~(PG - 1))
#define	MAXW		16
#define	MAXT		8
#define	SREG		65536		/* shared-file handles tracked */
#define	SLIST		8192
#define	MAXERR		160
#define	MAXDETAIL	40

/* ---------------------------------------------------------------- shared */

enum { C_MAL, C_VALID, C_ABSURD, C_CONT, NCLS };

struct sreg {
	_Atomic uint8_t		type;		/* T_* of a shared-file handle */
	_Atomic uint32_t	frees;		/* successful frees seen */
	_Atomic uint32_t	usize;		/* umem: rounded size */
};

struct shared {
	_Atomic long	budget;			/* requests left to send */
	_Atomic long	sent;			/* requests sent */
	_Atomic long	results;		/* requests that returned */
	_Atomic long	ok, refused;
	_Atomic long	n[NCLS];		/* per class: results */
	_Atomic long	bad[NCLS];		/* mal: unrefused, valid: failed, */
						/* absurd: accepted, cont: refused */
	_Atomic long	wrong_errno;
	_Atomic long	anomalies;
	_Atomic long	efault_side;		/* EFAULT but the op took effect */
	_Atomic long	mmaps, coherent_checks, cap_probes, kills, wakeups;
	_Atomic long	by_errno[MAXERR];
	_Atomic long	progress_stamp;
	_Atomic uint32_t ndetail;
	char		detail[MAXDETAIL][240];
	struct sreg	reg[SREG];
	_Atomic uint32_t shandles[SLIST];
	_Atomic uint32_t nsh;
	_Atomic int	slive;
};

static struct shared *S;
static const char *device = DDIH_DEVICE;
static int verbose;
static int sfd = -1;			/* the file every process shares */

enum { T_NONE, T_MAP, T_UMEM, T_KMEM, T_KFREED, T_GONE };

/* ---------------------------------------------------------------- rng */

static uint64_t
splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* ---------------------------------------------------------------- model */

#define	MAXCH	8
#define	MAXAL	48
#define	CHMAX	16384		/* largest chunk the model keeps a bitmap of */

struct chunk {
	uint64_t	start, size;
	uint8_t		*bits;
};

struct mmodel {
	int		n;			/* chunks, oldest first */
	struct chunk	ch[MAXCH];
	unsigned	nadds;			/* the driver's dm_nchunks */
	bool		exact;
	uint64_t	lo_next, hi_next;	/* fresh index regions */
	struct { uint64_t a, l; } al[MAXAL];	/* outstanding allocations */
	int		nal;
};

struct obj {
	uint8_t		type;
	struct mmodel	*m;
	uint64_t	usize;			/* umem: PAGE_ALIGN(size) */
	bool		usermap;
};

struct mapping {
	uint8_t		*addr;
	uint64_t	len;
	int		prot;
	uint32_t	h;			/* the umem handle (0: shared) */
};

struct sown {				/* an allocation in a shared map */
	uint32_t	h;
	uint64_t	a, l;
};

#define	MAXLIVE	64
#define	MAXMAP	8

struct th {
	int		w, id, gen;
	uint64_t	rng;
	int		fd, fd2;
	uint32_t	next;			/* next handle the driver hands out */
	bool		uncertain;		/* a creation may have happened */
	struct obj	*tab;
	uint32_t	cap;
	uint32_t	live[MAXLIVE];
	int		nlive;
	uint32_t	stale[64];
	int		nstale;
	uint32_t	foreign[16];
	uint8_t		ftype[16];
	int		nforeign;
	bool		exp_pending;
	struct { uint32_t h; int64_t off; uint64_t len; uint32_t maxprot,
	    flags; bool maplen_set; uint64_t maplen; bool twice; } exp;
	struct mapping	maps[MAXMAP];
	int		nmaps;
	uint64_t	umem_bytes;
	struct sown	sown[32];
	int		nsown;
	uint64_t	sregion;
	uint8_t		*ro, *none, *guard;	/* pages for EFAULT probes */
	pthread_t	self;
	_Atomic long	wait_deadline;		/* ns; 0: not in a timed wait */
	bool		stop;
};

static struct th *threads[MAXT];
static int nthreads;

/* ---------------------------------------------------------------- util */

static long
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

static uint64_t
rnd(struct th *t)
{
	return splitmix(&t->rng);
}

static uint64_t
rn(struct th *t, uint64_t n)		/* 0 .. n-1 */
{
	return n ? rnd(t) % n : 0;
}

static bool
pct(struct th *t, unsigned p)
{
	return rn(t, 100) < p;
}

static const char *
ename(int e)
{
	static const struct { int e; const char *n; } tab[] = {
		{ EINVAL, "EINVAL" }, { EBADF, "EBADF" }, { ENOTTY, "ENOTTY" },
		{ EFAULT, "EFAULT" }, { ENXIO, "ENXIO" }, { EACCES, "EACCES" },
		{ EBUSY, "EBUSY" }, { ENOSPC, "ENOSPC" }, { E2BIG, "E2BIG" },
		{ ENOMEM, "ENOMEM" }, { EINTR, "EINTR" },
		{ EOPNOTSUPP, "EOPNOTSUPP" }, { EOVERFLOW, "EOVERFLOW" },
		{ EPERM, "EPERM" }, { ENODEV, "ENODEV" }, { EAGAIN, "EAGAIN" },
		{ 0, "OK" },
	};
	static __thread char buf[16];
	size_t i;

	for (i = 0; i < sizeof (tab) / sizeof (tab[0]); i++)
		if (tab[i].e == e)
			return tab[i].n;
	snprintf(buf, sizeof (buf), "E%d", e);
	return buf;
}

static void
detail(const char *fmt, ...)
{
	uint32_t i = atomic_fetch_add(&S->ndetail, 1);
	va_list ap;

	if (i >= MAXDETAIL)
		return;
	va_start(ap, fmt);
	vsnprintf(S->detail[i], sizeof (S->detail[i]), fmt, ap);
	va_end(ap);
}

static void
anomaly(struct th *t, const char *fmt, ...)
{
	char buf[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof (buf), fmt, ap);
	va_end(ap);
	atomic_fetch_add(&S->anomalies, 1);
	detail("ANOMALY w%d.t%d %s", t->w, t->id, buf);
}

static void
note(struct th *t, const char *fmt, ...)
{
	char buf[200];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof (buf), fmt, ap);
	va_end(ap);
	detail("NOTE w%d.t%d %s", t->w, t->id, buf);
}

static void
req_init(struct ddih_req *r, uint32_t op)
{
	memset(r, 0, sizeof (*r));
	r->version = DDIH_ABI_VERSION;
	r->size = sizeof (*r);
	r->op = op;
}

static unsigned long
cmd_of(uint32_t op)
{
	switch (DDIH_OP_FAMILY(op)) {
	case 1: return DDIH_IOC_RMAP;
	case 2: return DDIH_IOC_UMEM;
	default: return DDIH_IOC_KMEM;
	}
}

/* Claim one request from the budget; false when it is spent. */
static bool
claim(void)
{
	if (atomic_fetch_sub(&S->budget, 1) <= 0)
		return false;
	atomic_fetch_add(&S->sent, 1);
	return true;
}

static void
result(int err)
{
	atomic_fetch_add(&S->results, 1);
	if (err == 0)
		atomic_fetch_add(&S->ok, 1);
	else
		atomic_fetch_add(&S->refused, 1);
	atomic_fetch_add(&S->by_errno[err >= 0 && err < MAXERR ? err : 0], 1);
	S->progress_stamp = now_ns();
}

#define	STOP	(-1)

/* One ioctl: claims budget, returns 0, an errno, or STOP. */
static int
xioctl(int fd, unsigned long cmd, void *arg)
{
	int rc;

	if (!claim())
		return STOP;
	rc = ioctl(fd, FZ_CMD(cmd), arg);
	rc = rc < 0 ? errno : 0;
	result(rc);
	return rc;
}

static void
desc(char *buf, size_t n, const struct ddih_req *r)
{
	snprintf(buf, n, "op=%u ver=%u size=%u h=%u flags=0x%x xflags=0x%x "
	    "a0=0x%" PRIx64 " a1=0x%" PRIx64 " a2=0x%" PRIx64 " a3=0x%" PRIx64
	    " soff=%" PRId64 " pad=%u", r->op, r->version, r->size, r->handle,
	    r->flags, r->xflags, r->arg[0], r->arg[1], r->arg[2], r->arg[3],
	    r->soff, r->pad);
}

/*
 * Count the outcome of a classified request.  expect: the errno a
 * malformed request must get (0: any errno).  Returns err.
 */
static int
account(struct th *t, int cls, int err, int expect, const char *what,
    const struct ddih_req *r)
{
	char d[200] = "";

	atomic_fetch_add(&S->n[cls], 1);
	if (r != NULL)
		desc(d, sizeof (d), r);
	switch (cls) {
	case C_MAL:
		if (err == 0) {
			atomic_fetch_add(&S->bad[C_MAL], 1);
			detail("UNREFUSED w%d.t%d %s: %s (expected %s)", t->w,
			    t->id, what, d, ename(expect));
		} else if (expect != 0 && err != expect) {
			atomic_fetch_add(&S->wrong_errno, 1);
			detail("WRONGERRNO w%d.t%d %s: got %s expected %s: %s",
			    t->w, t->id, what, ename(err), ename(expect), d);
		}
		break;
	case C_VALID:
		if (err != 0) {
			atomic_fetch_add(&S->bad[C_VALID], 1);
			anomaly(t, "valid %s failed with %s: %s", what,
			    ename(err), d);
		}
		break;
	case C_ABSURD:
		if (err == 0 && r != NULL && r->kind != DDIH_KIND_NULL) {
			atomic_fetch_add(&S->bad[C_ABSURD], 1);
			detail("ACCEPTED w%d.t%d absurd %s: %s", t->w, t->id,
			    what, d);
		}
		break;
	case C_CONT:
		if (err != 0)
			atomic_fetch_add(&S->bad[C_CONT], 1);
		break;
	}
	if (verbose > 1)
		fprintf(stderr, "w%d.t%d %s %s -> %s\n", t->w, t->id,
		    cls == C_MAL ? "MAL" : cls == C_VALID ? "VAL" :
		    cls == C_ABSURD ? "ABS" : "CON", what, ename(err));
	return err;
}

/* ---------------------------------------------------------------- fault */

static __thread sigjmp_buf *touch_jb;

static void
on_fault(int sig)
{
	if (touch_jb != NULL)
		siglongjmp(*touch_jb, sig);
	signal(sig, SIG_DFL);
	raise(sig);
}

static void
on_usr1(int sig)
{
	(void) sig;
	atomic_fetch_add(&S->wakeups, 1);
}

/* Read (and optionally write) every byte of a mapping; false on a fault. */
static bool
touch(uint8_t *p, uint64_t len, bool write, uint64_t *sum)
{
	sigjmp_buf jb;
	volatile uint64_t s = 0;
	uint64_t i;

	if (sigsetjmp(jb, 1) != 0) {
		touch_jb = NULL;
		return false;
	}
	touch_jb = &jb;
	for (i = 0; i < len; i += 64) {
		s += p[i];
		if (write)
			p[i] = (uint8_t)i;
	}
	touch_jb = NULL;
	if (sum)
		*sum = s;
	return true;
}

/* ---------------------------------------------------------------- table */

static struct obj *
ob(struct th *t, uint32_t h)
{
	static struct obj none;

	if (h == 0 || h >= t->cap)
		return &none;
	return &t->tab[h];
}

static void
tab_set(struct th *t, uint32_t h, uint8_t type)
{
	if (h >= t->cap) {
		uint32_t ncap = t->cap ? t->cap : 256;

		while (ncap <= h)
			ncap *= 2;
		t->tab = realloc(t->tab, ncap * sizeof (struct obj));
		memset(t->tab + t->cap, 0, (ncap - t->cap) * sizeof (struct obj));
		t->cap = ncap;
	}
	t->tab[h].type = type;
}

static void
live_add(struct th *t, uint32_t h)
{
	if (t->nlive < MAXLIVE)
		t->live[t->nlive++] = h;
}

static void
live_del(struct th *t, uint32_t h)
{
	int i;

	for (i = 0; i < t->nlive; i++)
		if (t->live[i] == h) {
			t->live[i] = t->live[--t->nlive];
			break;
		}
	if (t->nstale < 64)
		t->stale[t->nstale++] = h;
	else
		t->stale[rn(t, 64)] = h;
}

static int
count_live(struct th *t, uint8_t type)
{
	int i, n = 0;

	for (i = 0; i < t->nlive; i++)
		n += ob(t, t->live[i])->type == type;
	return n;
}

/* A live handle of this type, or 0. */
static uint32_t
pick(struct th *t, uint8_t type)
{
	uint32_t c[MAXLIVE];
	int i, n = 0;

	for (i = 0; i < t->nlive; i++)
		if (ob(t, t->live[i])->type == type)
			c[n++] = t->live[i];
	return n ? c[rn(t, n)] : 0;
}

/* A handle a request for `type' must refuse with EBADF on the own file. */
static uint32_t
bad_handle(struct th *t, uint8_t type, const char **why)
{
	for (int tries = 0; tries < 20; tries++) {
		uint32_t h = 0;

		switch (rn(t, 7)) {
		case 0:
			*why = "never-allocated handle";
			h = t->next + (t->uncertain ? 1 : 0) + (uint32_t)rn(t, 1000);
			break;
		case 1:
			*why = "out-of-range handle";
			h = (uint32_t[]){ 0x80000000u, 0xffffffffu, 0x7fffffffu,
			    0x10000u + (uint32_t)rn(t, 1u << 30) }[rn(t, 4)];
			break;
		case 2:
			*why = "stale handle";
			if (t->nstale)
				h = t->stale[rn(t, t->nstale)];
			break;
		case 3:
		case 4:
			*why = "foreign handle";
			if (t->nforeign)
				h = t->foreign[rn(t, t->nforeign)];
			break;
		default:
			*why = "wrong-type handle";
			if (t->nlive)
				h = t->live[rn(t, t->nlive)];
			break;
		}
		if (h == 0)
			continue;
		if (h <= INT_MAX && ob(t, h)->type == type)
			continue;
		if (t->uncertain && h == t->next)
			continue;	/* maybe the orphan of an EFAULT probe */
		/* a freed kmem handle is still a kmem tombstone: EBADF too */
		return h;
	}
	*why = "handle 0";
	return 0;
}

/* ---------------------------------------------------------------- maps */

static struct chunk *
m_chunk_of(struct mmodel *m, uint64_t idx)	/* newest first */
{
	for (int i = m->n - 1; i >= 0; i--) {
		struct chunk *c = &m->ch[i];

		if (idx >= c->start && idx <= c->start + c->size - 1)
			return c;
	}
	return NULL;
}

static bool
m_has_addr(struct mmodel *m, uint64_t idx, uint64_t size)
{
	struct chunk *c = m_chunk_of(m, idx);

	return c != NULL && idx + size - 1 <= c->start + c->size - 1;
}

static bool
bit(struct chunk *c, uint64_t i)
{
	return (c->bits[i >> 3] >> (i & 7)) & 1;
}

static void
setbits(struct chunk *c, uint64_t from, uint64_t n, bool v)
{
	for (uint64_t i = from; i < from + n; i++) {
		if (v)
			c->bits[i >> 3] |= 1u << (i & 7);
		else
			c->bits[i >> 3] &= ~(1u << (i & 7));
	}
}

static bool
m_all_set(struct chunk *c, uint64_t from, uint64_t n)
{
	for (uint64_t i = from; i < from + n; i++)
		if (!bit(c, i))
			return false;
	return true;
}

/* illumos: [idx, idx + size) lies in one chunk and is all free. */
static bool
m_free_run(struct mmodel *m, uint64_t idx, uint64_t size)
{
	struct chunk *c;

	if (size == 0 || !m_has_addr(m, idx, size))
		return false;
	c = m_chunk_of(m, idx);
	for (uint64_t i = idx - c->start; i < idx - c->start + size; i++)
		if (bit(c, i))
			return false;
	return true;
}

static uint64_t
m_avail_chunk(struct chunk *c)
{
	uint64_t a = 0;

	for (uint64_t i = 0; i < c->size; i++)
		a += !bit(c, i);
	return a;
}

static void
m_counters(struct mmodel *m, uint64_t *avail, uint64_t *total)
{
	*avail = *total = 0;
	for (int i = 0; i < m->n; i++) {
		*avail += m_avail_chunk(&m->ch[i]);
		*total += m->ch[i].size;
	}
}

/* gen_pool_alloc, first fit, chunks newest first: the address, or 0. */
static uint64_t
m_firstfit(struct mmodel *m, uint64_t size)
{
	if (size == 0)
		return 0;
	for (int i = m->n - 1; i >= 0; i--) {
		struct chunk *c = &m->ch[i];
		uint64_t run = 0;

		if (size > m_avail_chunk(c))
			continue;
		for (uint64_t b = 0; b < c->size; b++) {
			run = bit(c, b) ? 0 : run + 1;
			if (run == size)
				return c->start + b + 1 - size;
		}
	}
	return 0;
}

static void
m_free(struct mmodel *m)
{
	if (m == NULL)
		return;
	for (int i = 0; i < m->n; i++)
		free(m->ch[i].bits);
	free(m);
}

static bool
m_check_state(struct th *t, struct mmodel *m, const struct ddih_req *r,
    const char *what)
{
	uint64_t a, tot;

	if (!m->exact || !(r->valid & DDIH_V_STATE))
		return true;
	m_counters(m, &a, &tot);
	if (r->avail != a || r->total != tot) {
		anomaly(t, "%s: avail/total %" PRIu64 "/%" PRIu64 ", model %"
		    PRIu64 "/%" PRIu64, what, r->avail, r->total, a, tot);
		m->exact = false;
		return false;
	}
	return true;
}

/* ---------------------------------------------------------------- files */

static void
drop_mappings(struct th *t, bool all)
{
	while (t->nmaps > 0 && (all || t->nmaps >= MAXMAP)) {
		struct mapping *mp = &t->maps[0];

		if (!touch(mp->addr, mp->len, false, NULL))
			anomaly(t, "fault reading a mapping of umem %u before "
			    "munmap", mp->h);
		munmap(mp->addr, mp->len);
		memmove(&t->maps[0], &t->maps[1],
		    (t->nmaps - 1) * sizeof (struct mapping));
		t->nmaps--;
	}
}

static void
open_files(struct th *t)
{
	struct ddih_req r;
	int i;

	t->fd = open(device, O_RDWR | O_CLOEXEC);
	if (t->fd < 0) {
		fprintf(stderr, "ddifuzz: open %s: %s\n", device,
		    strerror(errno));
		exit(2);
	}
	t->next = 1;
	t->uncertain = false;
	t->exp_pending = false;
	if (t->fd2 < 0) {
		/* the foreign file: a few objects of each type */
		t->fd2 = open(device, O_RDWR | O_CLOEXEC);
		if (t->fd2 < 0)
			exit(2);
		t->nforeign = 0;
		for (i = 0; i < 9; i++) {
			uint32_t op = (uint32_t[]){ DDIH_OP_RMALLOCMAP,
			    DDIH_OP_UMEM_ALLOC, DDIH_OP_KMEM_ALLOC }[i % 3];

			/* skip a few handles so numbering differs from fd */
			req_init(&r, op);
			r.arg[0] = 64;
			if (ioctl(t->fd2, FZ_CMD(cmd_of(op)), &r) == 0 &&
			    r.ohandle != 0 && t->nforeign < 16) {
				t->foreign[t->nforeign] = r.ohandle;
				t->ftype[t->nforeign++] = i % 3 == 0 ? T_MAP :
				    i % 3 == 1 ? T_UMEM : T_KMEM;
			}
		}
	}
}

static void
close_private(struct th *t)
{
	uint32_t h;

	drop_mappings(t, true);
	for (h = 1; h < t->cap; h++) {
		m_free(t->tab[h].m);
		t->tab[h].m = NULL;
		if (t->tab[h].type != T_NONE && t->nstale < 64)
			t->stale[t->nstale++] = h;	/* old file's handles */
	}
	free(t->tab);
	t->tab = NULL;
	t->cap = 0;
	t->nlive = 0;
	t->umem_bytes = 0;
	close(t->fd);
	t->fd = -1;
}

/* A successful creation on the own file: check and record the handle. */
static void
created(struct th *t, uint32_t h, uint8_t type, const char *what)
{
	if (h == 0) {
		anomaly(t, "%s succeeded with handle 0", what);
		return;
	}
	if (h != t->next) {
		if (t->uncertain && h == t->next + 1) {
			/* the EFAULT'd creation took effect: adopt the orphan */
			atomic_fetch_add(&S->efault_side, 1);
			tab_set(t, t->next, T_KMEM);
			live_add(t, t->next);
		} else {
			anomaly(t, "%s: handle %u, expected %u", what, h,
			    t->next);
		}
	} else if (t->uncertain) {
		note(t, "EFAULT creation probe left no object behind");
	}
	t->uncertain = false;
	t->next = h + 1;
	tab_set(t, h, type);
	live_add(t, h);
}

/* ---------------------------------------------------------------- rmap */

static struct mmodel *
new_model(struct th *t)
{
	struct mmodel *m = calloc(1, sizeof (*m));

	m->exact = true;
	m->lo_next = 1 + rn(t, 4) * (rnd(t) >> rn(t, 64) >> 2) + rn(t, 100);
	if (m->lo_next == 0)
		m->lo_next = 1;
	m->hi_next = pct(t, 50) ? 0 : (UINT64_MAX - rn(t, 1ULL << 40)) &
	    ~0xfffULL;
	return m;
}

static void
op_rmallocmap(struct th *t)
{
	struct ddih_req r;
	int e;

	if (count_live(t, T_MAP) >= 4)
		return;
	req_init(&r, pct(t, 50) ? DDIH_OP_RMALLOCMAP : DDIH_OP_RMALLOCMAP_WAIT);
	r.arg[0] = rnd(t);		/* mapsize: ignored */
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	account(t, C_VALID, e, 0, "rmallocmap", &r);
	if (e == 0 && r.kind == DDIH_KIND_OK) {
		created(t, r.ohandle, T_MAP, "rmallocmap");
		t->tab[r.ohandle].m = new_model(t);
		if (r.avail != 0 || r.total != 0)
			anomaly(t, "new map reports avail/total %" PRIu64 "/%"
			    PRIu64, r.avail, r.total);
	}
}

static void
op_rmfree_add(struct th *t, uint32_t h, struct mmodel *m)
{
	struct ddih_req r;
	uint64_t size, idx;
	int e;

	if (m->n >= MAXCH || !m->exact)
		return;
	size = pct(t, 70) ? 1 + rn(t, 256) : 1 + rn(t, CHMAX);
	if (pct(t, 70)) {
		idx = m->lo_next;
		m->lo_next += size + rn(t, 3) * rn(t, 50);
	} else {
		idx = m->hi_next - size;
		m->hi_next = idx - rn(t, 3) * rn(t, 50);
	}
	req_init(&r, DDIH_OP_RMFREE);
	r.handle = h;
	r.arg[0] = size;
	r.arg[1] = idx;
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	account(t, C_VALID, e, 0, "rmfree (add a chunk)", &r);
	if (e == 0) {
		struct chunk *c = &m->ch[m->n++];

		c->start = idx;
		c->size = size;
		c->bits = calloc((size + 7) / 8, 1);
		m->nadds++;
		m_check_state(t, m, &r, "rmfree add");
	} else {
		m->exact = false;
	}
}

static void
op_rmalloc(struct th *t, uint32_t h, struct mmodel *m, bool wait)
{
	struct ddih_req r;
	uint64_t size, want, a, tot;
	int e, cls;

	switch (rn(t, 6)) {
	case 0:
		size = 0;
		break;
	case 1:
		size = (uint64_t[]){ UINT64_MAX, 1ULL << 63, 1ULL << 32,
		    (1ULL << 24) + 1 }[rn(t, 4)];
		break;
	default:
		size = 1 + rn(t, pct(t, 80) ? 16 : 512);
		break;
	}
	want = m->exact ? m_firstfit(m, size) : 0;
	if (ILLUMOS && wait && size != 0 && (!m->exact || want == 0))
		wait = false;	/* cv_wait: no signal would end the sleep */
	req_init(&r, wait ? DDIH_OP_RMALLOC_WAIT : DDIH_OP_RMALLOC);
	r.handle = h;
	r.arg[0] = size;
	if (wait && size == 0) {
		if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
			return;
		account(t, C_MAL, e, EINVAL, "rmalloc_wait size 0", &r);
		return;
	}
	if (wait && (!m->exact || want == 0)) {
		/* can never be satisfied on a private map: interrupt it */
		atomic_store(&t->wait_deadline, now_ns() + 5000000L +
		    (long)rn(t, 20) * 1000000L);
		e = xioctl(t->fd, DDIH_IOC_RMAP, &r);
		atomic_store(&t->wait_deadline, 0);
		if (e == STOP)
			return;
		if (!m->exact) {
			account(t, C_CONT, e, 0, "rmalloc_wait", &r);
			if (e == 0)
				m->exact = false;
			return;
		}
		account(t, C_ABSURD, e, EINTR, "rmalloc_wait unsatisfiable",
		    &r);
		if (e == 0) {
			anomaly(t, "rmalloc_wait(%" PRIu64 ") returned %" PRIu64
			    " on a map that cannot satisfy it", size, r.value);
			m->exact = false;
		} else if (e != EINTR) {
			anomaly(t, "rmalloc_wait(%" PRIu64 ") ended with %s, not "
			    "EINTR", size, ename(e));
		}
		return;
	}
	if (wait)	/* satisfiable: must not sleep; bound it anyway */
		atomic_store(&t->wait_deadline, now_ns() + 2000000000L);
	e = xioctl(t->fd, DDIH_IOC_RMAP, &r);
	atomic_store(&t->wait_deadline, 0);
	if (e == STOP)
		return;
	cls = m->exact ? C_VALID : C_CONT;
	account(t, cls, e, 0, wait ? "rmalloc_wait" : "rmalloc", &r);
	if (e != 0 || !m->exact)
		return;
	if (ILLUMOS && want != 0 && r.value != want &&
	    m_free_run(m, r.value, size))
		want = r.value;		/* vmem's instant fit: any free run */
	if (r.value != want) {
		anomaly(t, "rmalloc%s(%" PRIu64 ") = 0x%" PRIx64 ", first fit "
		    "says 0x%" PRIx64, wait ? "_wait" : "", size, r.value, want);
		m->exact = false;
		return;
	}
	if (want != 0) {
		struct chunk *c = m_chunk_of(m, want);

		setbits(c, want - c->start, size, true);
		if (m->nal < MAXAL) {
			m->al[m->nal].a = want;
			m->al[m->nal++].l = size;
		}
	}
	m_counters(m, &a, &tot);
	m_check_state(t, m, &r, "rmalloc");
}

/* rmfree of (part of) an outstanding allocation. */
static void
op_rmfree_alloc(struct th *t, uint32_t h, struct mmodel *m)
{
	struct ddih_req r;
	uint64_t a, l;
	int i, e;

	if (!m->exact || m->nal == 0)
		return;
	i = (int)rn(t, m->nal);
	a = m->al[i].a;
	l = m->al[i].l;
	if (!ILLUMOS && l > 1 && pct(t, 20)) {	/* a partial free */
		uint64_t part = 1 + rn(t, l - 1);

		m->al[i].a += part;
		m->al[i].l -= part;
		l = part;
	} else {
		m->al[i] = m->al[--m->nal];
	}
	req_init(&r, DDIH_OP_RMFREE);
	r.handle = h;
	r.arg[0] = l;
	r.arg[1] = a;
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	account(t, C_VALID, e, 0, "rmfree (an allocation)", &r);
	if (e == 0) {
		struct chunk *c = m_chunk_of(m, a);

		setbits(c, a - c->start, l, false);
		m_check_state(t, m, &r, "rmfree");
	} else {
		m->exact = false;
	}
}

/* A malformed rmfree on an exact map. */
static void
op_rmfree_bad(struct th *t, uint32_t h, struct mmodel *m)
{
	struct ddih_req r;
	uint64_t size = 1, idx = 1;
	const char *what = NULL;
	int e, expect = EINVAL;

	for (int tries = 0; tries < 8 && what == NULL; tries++) {
		switch (rn(t, 7)) {
		case 0:
			size = 0;
			idx = rn(t, 2) ? rnd(t) : m->lo_next;
			what = "rmfree size 0";
			break;
		case 1:		/* index + size - 1 wraps past 2^64 */
			idx = UINT64_MAX - rn(t, 1ULL << rn(t, 64));
			size = (UINT64_MAX - idx) + 2 + rn(t, 1000);
			if (size == 0)
				size = 2;
			if (size - 1 <= UINT64_MAX - idx)
				break;
			what = "rmfree range wraps";
			break;
		case 2:		/* index 0, not in any chunk */
			idx = 0;
			size = 1 + rn(t, 1ULL << rn(t, 40));
			what = "rmfree index 0";
			break;
		case 3:		/* a chunk larger than 2^24 units */
			if (ILLUMOS)	/* no such cap on illumos */
				break;
			idx = m->lo_next + (1ULL << 30);
			size = (1ULL << 24) + 1 + rn(t, 1ULL << rn(t, 60));
			if (size - 1 > UINT64_MAX - idx || m_has_addr(m, idx, size))
				break;
			expect = m->nadds >= 4096 ? ENOSPC : E2BIG;
			if (m->nadds >= 4096 && size > (1ULL << 24))
				expect = E2BIG;
			what = "rmfree chunk > 2^24 units";
			break;
		default: {	/* units inside a chunk not all allocated */
			struct chunk *c;
			uint64_t s, n, k;

			if (m->n == 0 || !m->exact)
				break;
			c = &m->ch[rn(t, m->n)];
			s = rn(t, c->size);
			n = 1 + rn(t, c->size - s);
			if (m_all_set(c, s, n))
				break;
			(void) k;
			idx = c->start + s;
			size = n;
			what = "rmfree of units not allocated";
			break;
		}
		}
	}
	if (what == NULL)
		return;
	req_init(&r, DDIH_OP_RMFREE);
	r.handle = h;
	r.arg[0] = size;
	r.arg[1] = idx;
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	account(t, C_MAL, e, expect, what, &r);
	if (e == 0)
		m->exact = false;
	else
		m_check_state(t, m, &r, what);
}

/* rmfree that starts inside a chunk and runs past it: adds an overlap. */
static void
op_rmfree_overlap(struct th *t, uint32_t h, struct mmodel *m)
{
	struct ddih_req r;
	struct chunk *c;
	int e;

	if (m->n == 0)
		return;
	c = &m->ch[rn(t, m->n)];
	req_init(&r, DDIH_OP_RMFREE);
	r.handle = h;
	r.arg[1] = c->start + rn(t, c->size);
	r.arg[0] = c->start + c->size - r.arg[1] + 1 + rn(t, 64);
	if (r.arg[0] - 1 > UINT64_MAX - r.arg[1])
		return;
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	/* allowed by the policy when the map has room: an overlapping chunk */
	account(t, m->exact && m->nadds < 4096 ? C_VALID : C_CONT, e, 0,
	    "rmfree overlapping a chunk end", &r);
	m->exact = false;	/* overlapping chunks: no exact model */
	m->nadds += e == 0;
}

static void
op_rmfreemap(struct th *t, uint32_t h, struct mmodel *m)
{
	struct ddih_req r;
	uint64_t a, tot;
	int e;

	m_counters(m, &a, &tot);
	if (ILLUMOS && (!m->exact || a != tot))
		return;		/* passed through: "vmem_destroy: leaked" */
	req_init(&r, DDIH_OP_RMFREEMAP);
	r.handle = h;
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	if (!m->exact)
		account(t, C_CONT, e, 0, "rmfreemap", &r);
	else if (a != tot)
		account(t, C_MAL, e, EBUSY, "rmfreemap with allocations", &r);
	else
		account(t, C_VALID, e, 0, "rmfreemap", &r);
	if (e == 0) {
		m_free(m);
		t->tab[h].m = NULL;
		t->tab[h].type = T_GONE;
		live_del(t, h);
	}
}

static void
op_rmap_state(struct th *t, uint32_t h, struct mmodel *m)
{
	struct ddih_req r;
	int e;

	req_init(&r, DDIH_OP_RMAP_STATE);
	r.handle = h;
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	account(t, C_VALID, e, 0, "rmap_state", &r);
	if (e == 0)
		m_check_state(t, m, &r, "rmap_state");
}

/*
 * RMAP_LAYOUT (a harness helper): a valid call on the own map (the counts
 * must agree with the model: span sizes sum to total, free runs to avail),
 * or a malformed one: too many entries or a reserved argument (EINVAL), an
 * array the driver cannot write (EFAULT, no side effect).
 */
static void
op_rmap_layout(struct th *t, uint32_t h, struct mmodel *m)
{
	static __thread struct ddih_seg segs[DDIH_LAYOUT_MAX];
	struct ddih_req r;
	const char *what;
	int e, expect;

	req_init(&r, DDIH_OP_RMAP_LAYOUT);
	r.handle = h;
	r.arg[0] = (uint64_t)(uintptr_t)segs;
	r.arg[1] = rn(t, DDIH_LAYOUT_MAX + 1);
	if (pct(t, 70)) {
		uint64_t a, tot, sa = 0, st = 0, k;

		if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
			return;
		account(t, C_VALID, e, 0, "rmap_layout", &r);
		if (e != 0 || !m->exact || r.value > r.arg[1])
			return;
		for (k = 0; k < r.value; k++) {
			if (segs[k].type == DDIH_SEG_SPAN)
				st += segs[k].size;
			else if (segs[k].type == DDIH_SEG_FREE)
				sa += segs[k].size;
		}
#if !defined(__sun)
		m_counters(m, &a, &tot);
		if (sa != a || st != tot)
			anomaly(t, "rmap_layout: free/span units %" PRIu64 "/%"
			    PRIu64 ", model %" PRIu64 "/%" PRIu64, sa, st, a,
			    tot);
#else
		(void) a; (void) tot; (void) sa; (void) st;
#endif
		return;
	}
	expect = EINVAL;
	switch (rn(t, 6)) {
	case 0:
		r.arg[1] = DDIH_LAYOUT_MAX + 1 + rn(t, 1000);
		what = "rmap_layout with too many entries";
		break;
	case 1:
		r.arg[1] = ~(uint64_t)0 - rn(t, 4);
		what = "rmap_layout with a huge count";
		break;
	case 2:
		r.arg[2 + rn(t, 2)] = 1 + rn(t, 1000);
		what = "rmap_layout with a reserved argument";
		break;
	case 3:
		r.arg[0] = (uint64_t[]){ 0, 1 + rn(t, 4095),
		    0xffffffff81000000ULL, 0x0000800000000000ULL }[rn(t, 4)];
		r.arg[1] = 1 + rn(t, DDIH_LAYOUT_MAX);
		expect = EFAULT;
		what = "rmap_layout into a bad address";
		break;
	case 4:
		r.arg[0] = (uint64_t)(uintptr_t)t->ro;
		r.arg[1] = 1 + rn(t, DDIH_LAYOUT_MAX);
		expect = EFAULT;
		what = "rmap_layout into a read-only page";
		break;
	default:
		r.arg[0] = (uint64_t)(uintptr_t)(t->guard + PG -
		    sizeof (struct ddih_seg) * (1 + rn(t, 8)));
		r.arg[1] = DDIH_LAYOUT_MAX;
		expect = EFAULT;
		what = "rmap_layout straddling a guard page";
		break;
	}
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	account(t, C_MAL, e, expect, what, &r);
}

/* The 4096-chunk cap of one map, on a throwaway map. */
static void
op_chunk_cap(struct th *t)
{
	struct ddih_req r;
	uint32_t h;
	int e, i;

	req_init(&r, DDIH_OP_RMALLOCMAP);
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	account(t, C_VALID, e, 0, "rmallocmap (cap probe)", &r);
	if (e != 0)
		return;
	created(t, r.ohandle, T_MAP, "rmallocmap");
	h = r.ohandle;
	t->tab[h].m = new_model(t);
	t->tab[h].m->exact = false;
	for (i = 0; i < 4096; i++) {
		req_init(&r, DDIH_OP_RMFREE);
		r.handle = h;
		r.arg[0] = 1;
		r.arg[1] = 1 + 2 * (uint64_t)i;
		if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
			return;
		account(t, C_VALID, e, 0, "rmfree (cap probe add)", &r);
	}
	req_init(&r, DDIH_OP_RMFREE);
	r.handle = h;
	r.arg[0] = 1;
	r.arg[1] = 1 + 2 * 4096ULL;
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	account(t, C_MAL, e, ENOSPC, "rmfree chunk 4097", &r);
	atomic_fetch_add(&S->cap_probes, 1);
	req_init(&r, DDIH_OP_RMFREEMAP);
	r.handle = h;
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
		return;
	account(t, C_VALID, e, 0, "rmfreemap (cap probe)", &r);
	if (e == 0) {
		m_free(t->tab[h].m);
		t->tab[h].m = NULL;
		t->tab[h].type = T_GONE;
		live_del(t, h);
	}
}

static void
do_rmap(struct th *t)
{
	uint32_t h = pick(t, T_MAP);
	struct mmodel *m;

	if (h == 0 || pct(t, 5)) {
		op_rmallocmap(t);
		return;
	}
	m = t->tab[h].m;
	switch (rn(t, 20)) {
	case 0: case 1: case 2: case 3:
		op_rmfree_add(t, h, m);
		break;
	case 4: case 5: case 6: case 7:
		op_rmalloc(t, h, m, false);
		break;
	case 8: case 9:
		op_rmalloc(t, h, m, true);
		break;
	case 10: case 11: case 12:
		op_rmfree_alloc(t, h, m);
		break;
	case 13: case 14: case 15:
		if (m->exact)
			op_rmfree_bad(t, h, m);
		break;
	case 16:
		if (pct(t, 30))
			op_rmfree_overlap(t, h, m);
		break;
	case 17:
		op_rmfreemap(t, h, m);
		break;
	case 18:
		op_rmap_layout(t, h, m);
		break;
	default:
		op_rmap_state(t, h, m);
		break;
	}
}

/* ---------------------------------------------------------------- umem */

static void
op_umem_alloc(struct th *t)
{
	struct ddih_req r;
	uint64_t size;
	uint32_t flags;
	int e;

	flags = (uint32_t[]){ DDIH_UMEM_SLEEP, DDIH_UMEM_NOSLEEP,
	    DDIH_UMEM_PAGEABLE, DDIH_UMEM_NOSLEEP | DDIH_UMEM_PAGEABLE }
	    [rn(t, 4)];
	req_init(&r, DDIH_OP_UMEM_ALLOC);
	r.flags = flags;
	switch (rn(t, 10)) {
	case 0:		/* absurd sizes, sleeping flags included */
		size = (uint64_t[]){ UINT64_MAX, (64ULL << 20) + 1, 1ULL << 63,
		    UINT64_MAX - PG + 2, 1ULL << 40 }[rn(t, 5)];
		if (ILLUMOS) {	/* no 64 MiB cap; a sleep would never end */
			if (size == (64ULL << 20) + 1)
				size = 1ULL << 40;
			r.flags |= DDIH_UMEM_NOSLEEP;
		}
		r.arg[0] = size;
		if ((e = xioctl(t->fd, DDIH_IOC_UMEM, &r)) == STOP)
			return;
		account(t, C_ABSURD, e, 0, "umem_alloc > 64 MiB", &r);
		if (e == 0 && r.kind != DDIH_KIND_NULL)
			created(t, r.ohandle, T_UMEM, "umem_alloc");
		return;
	case 1:
		size = 0;
		break;
	default:
		size = pct(t, 80) ? 1 + rn(t, 3 * PG) : 1 + rn(t, 256 * 1024);
		break;
	}
	if (t->umem_bytes + PALIGN(size) > 4 * 1024 * 1024 ||
	    count_live(t, T_UMEM) >= 16)
		return;
	r.arg[0] = size;
	if ((e = xioctl(t->fd, DDIH_IOC_UMEM, &r)) == STOP)
		return;
	account(t, C_VALID, e, 0, "umem_alloc", &r);
	if (e != 0)
		return;
	if (r.kind == DDIH_KIND_NULL) {
		if (size != 0 && !(flags & DDIH_UMEM_NOSLEEP))
			anomaly(t, "umem_alloc(%" PRIu64 ", SLEEP) returned NULL",
			    size);
		return;
	}
	if (size == 0) {
		anomaly(t, "umem_alloc(0) did not return NULL");
	}
	created(t, r.ohandle, T_UMEM, "umem_alloc");
	t->tab[r.ohandle].usize = PALIGN(size);
	t->tab[r.ohandle].usermap = !(flags & DDIH_UMEM_NOSLEEP);
	t->umem_bytes += PALIGN(size);
	if (r.value != PALIGN(size) || r.zeroed != 1 || r.offset != 0 ||
	    r.type != ((flags & DDIH_UMEM_PAGEABLE) ? DDIH_UMEM_TYPE_PAGEABLE :
	    DDIH_UMEM_TYPE_KMEM))
		anomaly(t, "umem_alloc(%" PRIu64 ") value=%" PRIu64 " zeroed=%u "
		    "offset=%" PRIu64 " type=0x%x", size, r.value, r.zeroed,
		    r.offset, r.type);
}

static void
op_umem_free(struct th *t, uint32_t h)
{
	struct ddih_req r;
	int e;

	bool mapped = false;

	for (int i = 0; h != 0 && i < t->nmaps; i++)
		if (t->maps[i].h == h)
			mapped = true;
	req_init(&r, DDIH_OP_UMEM_FREE);
	r.handle = h;
	if ((e = xioctl(t->fd, DDIH_IOC_UMEM, &r)) == STOP)
		return;
	if (mapped)	/* the driver counts the mappings: EBUSY */
		account(t, C_MAL, e, EBUSY, "umem_free of a mapped buffer", &r);
	else
		account(t, C_VALID, e, 0, h ? "umem_free" : "umem_free(NULL)",
		    &r);
	if (e == 0 && h != 0) {
		t->umem_bytes -= t->tab[h].usize;
		t->tab[h].type = T_GONE;
		live_del(t, h);
	}
}

static void
op_umem_pattern(struct th *t, uint32_t h, bool fill)
{
	struct ddih_req r;
	uint64_t size = t->tab[h].usize;
	const char *what;
	int e, cls;

	req_init(&r, fill ? DDIH_OP_UMEM_FILL : DDIH_OP_UMEM_CHECK);
	r.handle = h;
	r.arg[2] = rnd(t);
	if (pct(t, 60)) {
		r.arg[0] = rn(t, size + 1);
		r.arg[1] = rn(t, size - r.arg[0] + 1);
		cls = C_VALID;
		what = fill ? "umem_fill" : "umem_check";
	} else {
		switch (rn(t, 4)) {
		case 0:		/* off + len overflows */
			/* off + len >= 2^64, len itself not wrapping */
			r.arg[0] = PG * (1 + rn(t, 4));
			r.arg[1] = (0 - r.arg[0]) + rn(t, r.arg[0]);
			break;
		case 1:		/* off past the end */
			r.arg[0] = size + 1 + rn(t, 1ULL << rn(t, 63));
			r.arg[1] = rn(t, 2);
			break;
		case 2:		/* len past the end */
			r.arg[0] = rn(t, size + 1);
			r.arg[1] = size - r.arg[0] + 1 + rn(t, PG);
			break;
		default:
			r.arg[0] = 0;
			r.arg[1] = UINT64_MAX - rn(t, 8);
			break;
		}
		cls = C_MAL;
		what = fill ? "umem_fill out of range" :
		    "umem_check out of range";
	}
	if ((e = xioctl(t->fd, DDIH_IOC_UMEM, &r)) == STOP)
		return;
	account(t, cls, e, EINVAL, what, &r);
}

static bool
mmap_would(struct th *t, uint64_t len, int prot, int flags, uint64_t pgoff,
    int *expect)
{
	struct obj *o;
	uint32_t vprot = 0;

	(void) flags;
	if (!t->exp_pending || pgoff != 0)
		return (*expect = ENXIO), false;
	if (t->exp.h == 0)
		return (*expect = EINVAL), false;
	o = ob(t, t->exp.h);
	if (o->type != T_UMEM)
		return (*expect = EBADF), false;
	if (t->exp.off < 0 || (t->exp.off & (PG - 1)) != 0 ||
	    (uint64_t)t->exp.off > o->usize ||
	    t->exp.len > o->usize - (uint64_t)t->exp.off)
		return (*expect = EINVAL), false;
	if (prot & PROT_READ)
		vprot |= DDIH_PROT_READ;
	if (prot & PROT_WRITE)
		vprot |= DDIH_PROT_WRITE;
	if (prot & PROT_EXEC)
		vprot |= DDIH_PROT_EXEC;
	if (vprot & ~t->exp.maxprot)
		return (*expect = EACCES), false;
	if ((t->exp.flags & DDIH_DEVMAP_MAPPING_INVALID) &&
	    !(t->exp.flags & DDIH_DEVMAP_ALLOW_REMAP))
		return (*expect = EINVAL), false;
	if (t->exp.twice)
		return (*expect = EINVAL), false;
	if (t->exp.maplen_set && (t->exp.maplen & (PG - 1)) != 0)
		return (*expect = EINVAL), false;
	if (PALIGN(len) > o->usize - (uint64_t)t->exp.off)
		return (*expect = EINVAL), false;
	return (*expect = 0), true;
}

/* export + mmap, valid or hostile; then coherence checks on the mapping. */
static void
op_umem_export(struct th *t)
{
	struct ddih_req r;
	uint32_t h = pick(t, T_UMEM);
	struct obj *o;
	uint64_t len, size, pgoff = 0;
	int prot = PROT_READ | PROT_WRITE, mflags = MAP_SHARED, expect, e;
	bool bad_export = false, good;
	const char *what = "umem_export + mmap";
	uint8_t *p;

	if (h == 0)
		return;
	o = ob(t, h);
	size = o->usize;
	req_init(&r, DDIH_OP_UMEM_EXPORT);
	r.handle = h;
	r.soff = (int64_t)(PG * rn(t, size / PG));
	r.arg[0] = PG * (1 + rn(t, (size - (uint64_t)r.soff) / PG));
	r.arg[1] = DDIH_PROT_READ | DDIH_PROT_WRITE |
	    (pct(t, 30) ? DDIH_PROT_USER : 0) | (pct(t, 30) ? DDIH_PROT_EXEC : 0);
	r.flags = pct(t, 30) ? DDIH_DEVMAP_USE_PAGESIZE : 0;
	if (pct(t, 20)) {
		r.xflags = DDIH_XF_MAPLEN;
		r.arg[2] = r.arg[0];
	}
	len = r.arg[0];
	if (pct(t, 8))
		mflags = MAP_PRIVATE;
	if (pct(t, 15)) {		/* read-only maxprot: mprotect is bounded */
		r.arg[1] = DDIH_PROT_READ | (pct(t, 50) ? DDIH_PROT_USER : 0);
		prot = PROT_READ;
	}
	/* hostile variants */
	switch (pct(t, 55) ? rn(t, 17) : 99) {
	case 0: r.handle = 0; what = "mmap of a NULL-cookie export"; break;
	case 1: r.soff = -(int64_t)(PG * (1 + rn(t, 1ULL << 40)));
		what = "export with negative offset"; break;
	case 2: r.soff += 1 + (int64_t)rn(t, PG - 1);
		what = "export with unaligned offset"; break;
	case 3: r.soff = (int64_t)(size + PG * rn(t, 4)) + (pct(t, 50) ? 0 : PG);
		if ((uint64_t)r.soff <= size) r.arg[0] = PG;
		what = "export offset at/past the end"; break;
	case 4: r.arg[0] = size - (uint64_t)r.soff + 1 + rn(t, 1ULL << rn(t, 64));
		what = "export length past the end (or overflowing)"; break;
	case 5: r.arg[1] = DDIH_PROT_READ; prot = PROT_READ | PROT_WRITE;
		what = "mmap PROT_WRITE beyond maxprot"; break;
	case 6: r.arg[1] = DDIH_PROT_READ | DDIH_PROT_WRITE;
		prot = PROT_READ | PROT_EXEC; what = "mmap PROT_EXEC beyond maxprot";
		break;
	case 7: r.flags = DDIH_DEVMAP_MAPPING_INVALID;
		what = "export MAPPING_INVALID without ALLOW_REMAP"; break;
	case 8: r.arg[3] = 1; what = "export setup twice"; break;
	case 9: r.xflags = DDIH_XF_MAPLEN; r.arg[2] = 1 + rn(t, 3 * PG);
		if ((r.arg[2] & (PG - 1)) == 0) r.arg[2]++;
		what = "export with unaligned maplen"; break;
	case 10: len = size - (uint64_t)r.soff + PG * (1 + rn(t, 4));
		what = "mmap longer than the buffer"; break;
	case 11: pgoff = 1 + rn(t, 1000); what = "mmap at a nonzero offset"; break;
	case 16: r.flags = DDIH_DEVMAP_MAPPING_INVALID |
		    DDIH_DEVMAP_ALLOW_REMAP; bad_export = true;
		what = "export MAPPING_INVALID|ALLOW_REMAP (no cookie)"; break;
	case 12: r.flags = 0x80u << rn(t, 24); bad_export = true;
		what = "export with unknown DEVMAP flags"; break;
	case 13: r.arg[1] = 0x10ULL << rn(t, 59); bad_export = true;
		what = "export with unknown PROT bits"; break;
	case 14: r.arg[3] = 2 + rn(t, 1ULL << rn(t, 63)); bad_export = true;
		what = "export with setup_twice > 1"; break;
	case 15: { const char *why;
		r.handle = bad_handle(t, T_UMEM, &why);
		if (r.handle == 0) r.handle = 0x7fffffff;
		bad_export = true; what = "export of a bad handle"; break; }
	default: break;
	}
	if ((e = xioctl(t->fd, DDIH_IOC_UMEM, &r)) == STOP)
		return;
	if (bad_export) {
		account(t, C_MAL, e, strstr(what, "handle") ? EBADF : EINVAL,
		    what, &r);
		return;		/* a refused export leaves the pending one */
	}
	account(t, C_VALID, e, 0, "umem_export", &r);
	if (e != 0)
		return;
	t->exp_pending = true;
	t->exp.h = r.handle;
	t->exp.off = r.soff;
	t->exp.len = r.arg[0];
	t->exp.maxprot = (uint32_t)r.arg[1];
	t->exp.flags = r.flags;
	t->exp.maplen_set = (r.xflags & DDIH_XF_MAPLEN) != 0;
	t->exp.maplen = r.arg[2];
	t->exp.twice = r.arg[3] != 0;
	if (len == 0 || len > (1ULL << 30))
		len = PG;
	good = mmap_would(t, len, prot, mflags, pgoff, &expect);
	if (!claim())
		return;
	p = mmap(NULL, len, prot, mflags, t->fd, (off_t)(pgoff * PG));
	e = p == MAP_FAILED ? errno : 0;
	result(e);
	if (e == EPERM)			/* refused by the VFS (noexec) */
		expect = EPERM;
	else
		t->exp_pending = false;	/* the driver consumed it */
	if (good)
		account(t, C_VALID, e, 0, "mmap", NULL);
	else
		account(t, C_MAL, e, expect, what, &r);
	if (e != 0)
		return;
	atomic_fetch_add(&S->mmaps, 1);
	drop_mappings(t, false);
	t->maps[t->nmaps].addr = p;
	t->maps[t->nmaps].len = len;
	t->maps[t->nmaps].prot = prot;
	t->maps[t->nmaps++].h = h;
	if (!touch(p, len, false, NULL)) {
		anomaly(t, "fault reading a fresh mapping of umem %u (%" PRIu64
		    " bytes)", h, len);
		return;
	}
	if (mflags == MAP_SHARED && (prot & PROT_WRITE)) {
		/* the kernel writes, user space reads; and back */
		uint64_t seed = rnd(t), i;

		req_init(&r, DDIH_OP_UMEM_FILL);
		r.handle = h;
		r.arg[0] = (uint64_t)t->exp.off;
		r.arg[1] = len;
		r.arg[2] = seed;
		if ((e = xioctl(t->fd, DDIH_IOC_UMEM, &r)) == STOP)
			return;
		account(t, C_VALID, e, 0, "umem_fill (coherence)", &r);
		for (i = 0; e == 0 && i < len; i++)
			if (p[i] != DDIH_PATTERN(seed, i)) {
				anomaly(t, "mapping of umem %u byte %" PRIu64
				    " is 0x%x, the kernel wrote 0x%x", h, i, p[i],
				    DDIH_PATTERN(seed, i));
				break;
			}
		seed = rnd(t);
		for (i = 0; i < len; i++)
			p[i] = DDIH_PATTERN(seed, i);
		req_init(&r, DDIH_OP_UMEM_CHECK);
		r.handle = h;
		r.arg[0] = (uint64_t)t->exp.off;
		r.arg[1] = len;
		r.arg[2] = seed;
		if ((e = xioctl(t->fd, DDIH_IOC_UMEM, &r)) == STOP)
			return;
		account(t, C_VALID, e, 0, "umem_check (coherence)", &r);
		if (e == 0 && r.value != 1)
			anomaly(t, "the kernel does not see user writes to umem %u",
			    h);
		atomic_fetch_add(&S->coherent_checks, 1);
	}
	if (!(t->exp.maxprot & DDIH_PROT_WRITE) || pct(t, 10)) {
		/* maxprot bounds mprotect too */
		if (!claim())
			return;
		e = mprotect(p, len, PROT_READ | PROT_WRITE) ? errno : 0;
		result(e);
		if (t->exp.maxprot & DDIH_PROT_WRITE)
			account(t, C_VALID, e, 0, "mprotect within maxprot", NULL);
		else
			account(t, C_MAL, e, EACCES, "mprotect beyond maxprot",
			    NULL);
	}
}

/* mmap with no export pending: ENXIO. */
static void
op_mmap_noexport(struct th *t)
{
	uint64_t len = PG * (1 + rn(t, 4));
	void *p;
	int e;

	if (t->exp_pending)
		return;
	if (!claim())
		return;
	p = mmap(NULL, len, PROT_READ, MAP_SHARED, t->fd,
	    (off_t)(PG * rn(t, 3)));
	e = p == MAP_FAILED ? errno : 0;
	result(e);
	account(t, C_MAL, e, ENXIO, "mmap with no export pending", NULL);
	if (e == 0)
		munmap(p, len);
}

static void
do_umem(struct th *t)
{
	uint32_t h = pick(t, T_UMEM);

	if (h == 0 || pct(t, 12)) {
		op_umem_alloc(t);
		return;
	}
	switch (rn(t, 12)) {
	case 0: case 1:
		op_umem_free(t, pct(t, 5) ? 0 : h);
		break;
	case 2: case 3:
		op_umem_pattern(t, h, rn(t, 2));
		break;
	case 4:
		op_mmap_noexport(t);
		break;
	default:
		op_umem_export(t);
		break;
	}
}

/* ---------------------------------------------------------------- kmem */

static void
op_kmem_alloc(struct th *t)
{
	struct ddih_req r;
	uint64_t size;
	int e;
	bool big = false;

	req_init(&r, pct(t, 50) ? DDIH_OP_KMEM_ALLOC : DDIH_OP_KMEM_ZALLOC);
	r.flags = (uint32_t[]){ DDIH_KM_SLEEP, DDIH_KM_NOSLEEP, DDIH_KM_PUSHPAGE,
	    DDIH_KM_NORMALPRI, DDIH_KM_NOSLEEP | DDIH_KM_PUSHPAGE }[rn(t, 5)];
	if (pct(t, 8)) {
		r.arg[0] = (uint64_t[]){ UINT64_MAX, (4ULL << 20) + 1, 1ULL << 63,
		    UINT64_MAX - PG + 2, 1ULL << 33 }[rn(t, 5)];
		if (ILLUMOS) {	/* no 4 MiB cap; a sleep would never end */
			if (r.arg[0] == (4ULL << 20) + 1)
				r.arg[0] = 1ULL << 40;
			r.flags |= DDIH_KM_NOSLEEP;
		}
		if ((e = xioctl(t->fd, DDIH_IOC_KMEM, &r)) == STOP)
			return;
		account(t, C_ABSURD, e, 0, "kmem_alloc > 4 MiB", &r);
		if (e == 0 && r.kind != DDIH_KIND_NULL)
			created(t, r.ohandle, T_KMEM, "kmem_alloc");
		return;
	}
	if (count_live(t, T_KMEM) >= 24)
		return;
	if (pct(t, 2)) {
		size = (1ULL << 20) + rn(t, 3ULL << 20);	/* up to 4 MiB */
		if (pct(t, 30))
			size = 4ULL << 20;
		big = true;
	} else {
		size = pct(t, 10) ? 0 : pct(t, 85) ? rn(t, 512) : rn(t, 65536);
	}
	r.arg[0] = size;
	if ((e = xioctl(t->fd, DDIH_IOC_KMEM, &r)) == STOP)
		return;
	account(t, C_VALID, e, 0, "kmem_alloc", &r);
	if (e != 0)
		return;
	if (r.kind == DDIH_KIND_NULL) {
		if (!big && !(r.flags & DDIH_KM_NOSLEEP))
			anomaly(t, "kmem_alloc(%" PRIu64 ", SLEEP) returned NULL",
			    size);
		return;
	}
	created(t, r.ohandle, T_KMEM, "kmem_alloc");
	t->tab[r.ohandle].usize = size;	/* illumos: kmem_free needs it */
	if (r.value < size || (size == 0 && r.value != 0) ||
	    (r.op == DDIH_OP_KMEM_ZALLOC && size && r.zeroed != 1))
		anomaly(t, "kmem_%salloc(%" PRIu64 ") value=%" PRIu64 " zeroed=%u",
		    r.op == DDIH_OP_KMEM_ZALLOC ? "z" : "", size, r.value,
		    r.zeroed);
	if (big) {			/* give big buffers back at once */
		uint32_t h = r.ohandle;

		req_init(&r, DDIH_OP_KMEM_FREE);
		r.handle = h;
		r.arg[0] = size;
		if ((e = xioctl(t->fd, DDIH_IOC_KMEM, &r)) == STOP)
			return;
		account(t, C_VALID, e, 0, "kmem_free (big)", &r);
		if (e == 0) {
			t->tab[h].type = T_KFREED;
			live_del(t, h);
		}
	}
}

static void
op_kmem_free(struct th *t, uint32_t h)
{
	struct ddih_req r;
	int e;

	req_init(&r, DDIH_OP_KMEM_FREE);
	r.handle = h;
	r.arg[0] = rnd(t);		/* the size: ignored by the Linux port */
	if (ILLUMOS)			/* illumos: the allocation's size */
		r.arg[0] = h ? t->tab[h].usize : 0;
	if ((e = xioctl(t->fd, DDIH_IOC_KMEM, &r)) == STOP)
		return;
	account(t, C_VALID, e, 0, h ? "kmem_free" : "kmem_free(NULL)", &r);
	if (e == 0 && h != 0) {
		t->tab[h].type = T_KFREED;
		live_del(t, h);
	}
}

static void
do_kmem(struct th *t)
{
	uint32_t h = pick(t, T_KMEM);

	if (h == 0 || pct(t, 40))
		op_kmem_alloc(t);
	else
		op_kmem_free(t, pct(t, 5) ? 0 : h);
}

/* ---------------------------------------------------------------- malformed */

static const uint32_t all_ops[] = {
	DDIH_OP_RMALLOCMAP, DDIH_OP_RMALLOCMAP_WAIT, DDIH_OP_RMALLOC,
	DDIH_OP_RMALLOC_WAIT, DDIH_OP_RMFREE, DDIH_OP_RMFREEMAP,
	DDIH_OP_RMAP_STATE, DDIH_OP_RMAP_LAYOUT, DDIH_OP_UMEM_ALLOC,
	DDIH_OP_UMEM_FREE, DDIH_OP_UMEM_EXPORT, DDIH_OP_UMEM_CHECK, DDIH_OP_UMEM_FILL,
	DDIH_OP_KMEM_ALLOC, DDIH_OP_KMEM_ZALLOC, DDIH_OP_KMEM_FREE,
};
#define	NOPS	(sizeof (all_ops) / sizeof (all_ops[0]))

static bool
creates(uint32_t op)
{
	return op == DDIH_OP_RMALLOCMAP || op == DDIH_OP_RMALLOCMAP_WAIT ||
	    op == DDIH_OP_UMEM_ALLOC || op == DDIH_OP_KMEM_ALLOC ||
	    op == DDIH_OP_KMEM_ZALLOC;
}

static uint8_t
handle_type(uint32_t op)
{
	if (op >= DDIH_OP_RMALLOC && op <= DDIH_OP_RMAP_LAYOUT)
		return T_MAP;
	if (op >= DDIH_OP_UMEM_FREE && op <= DDIH_OP_UMEM_FILL)
		return T_UMEM;
	if (op == DDIH_OP_KMEM_FREE)
		return T_KMEM;
	return T_NONE;
}

/* A request that would be valid, on a live object of the own file. */
static void
plausible(struct th *t, struct ddih_req *r)
{
	uint32_t op = all_ops[rn(t, NOPS)];
	uint8_t ht = handle_type(op);

	req_init(r, op);
	if (ht != T_NONE)
		r->handle = pick(t, ht);
	r->arg[0] = 1 + rn(t, 64);
	r->arg[1] = r->arg[0];
}

/* Header-level malformations: version, size, op, family, pad, xflags. */
static void
op_header(struct th *t)
{
	struct ddih_req r;
	unsigned long cmd;
	const char *what;
	int e, expect = EINVAL;

	plausible(t, &r);
	cmd = cmd_of(r.op);
	switch (rn(t, 10)) {
	case 0:
		r.version = (uint32_t[]){ 0, 1, 3, 0xffffffffu,
		    (uint32_t)rnd(t) }[rn(t, 5)];
		if (r.version == DDIH_ABI_VERSION)
			r.version = 7;
		what = "wrong version";
		break;
	case 1:
		r.size = (uint32_t[]){ 0, 136, 191, 193, 200, 384, 8, 0xffffffffu,
		    (uint32_t)rnd(t) }[rn(t, 9)];
		if (r.size == sizeof (r))
			r.size = 0;
		what = "wrong size";
		break;
	case 2:
		r.op = (uint32_t[]){ 0, 9, 15, 21, 31, 35, 64, 0xffffffffu,
		    0x80000001u }[rn(t, 9)];
		cmd = (unsigned long[]){ DDIH_IOC_RMAP, DDIH_IOC_UMEM,
		    DDIH_IOC_KMEM }[rn(t, 3)];
		what = "unknown op";
		break;
	case 3: {
		unsigned long c2;

		do {
			c2 = (unsigned long[]){ DDIH_IOC_RMAP, DDIH_IOC_UMEM,
			    DDIH_IOC_KMEM }[rn(t, 3)];
		} while (c2 == cmd);
		cmd = c2;
		what = "op of another family";
		break;
	}
	case 4:
		r.pad = 1 + (uint32_t)rn(t, 0xfffffffe);
		what = "pad not zero";
		break;
	case 5:
		r.xflags = (uint32_t)(2u << rn(t, 31));
		what = "unknown xflags bit";
		break;
	case 6:
		if (r.op == DDIH_OP_UMEM_EXPORT)
			r.op = DDIH_OP_UMEM_CHECK;
		r.xflags = DDIH_XF_MAPLEN;
		what = "XF_MAPLEN on an op that is not umem_export";
		break;
	case 7:			/* unknown ioctl numbers (not VFS ones) */
		expect = ENOTTY;
		what = "unknown ioctl number";
		switch (rn(t, 4)) {
		case 0:
			cmd = _IOWR('D', (4 + rn(t, 252)), struct ddih_req);
			break;
		case 1:
			cmd = _IOWR('D', 0, struct ddih_req);
			break;
		case 2:
			cmd = FZ_IOC(rn(t, 4), 'E' + rn(t, 10), rn(t, 256),
			    rn(t, 1 << 14));
			break;
		default:
			cmd = _IOWR('d', (1 + rn(t, 3)), struct ddih_req);
			break;
		}
		break;
	case 8: {		/* bad flags for the op */
		uint32_t op = r.op;

		if (op == DDIH_OP_UMEM_ALLOC) {
			r.flags = 0x8u << rn(t, 28);
		} else if (op == DDIH_OP_KMEM_ALLOC || op == DDIH_OP_KMEM_ZALLOC) {
			r.flags = (uint32_t[]){ 0x2, 0x10, 0x80000000u }[rn(t, 3)];
		} else if (op == DDIH_OP_UMEM_EXPORT) {
			r.flags = 0x8u << rn(t, 28);
		} else {
			r.flags = 1u << rn(t, 32);
		}
		/* a bad handle is refused first (EBADF) for handle ops */
		if (handle_type(op) != T_NONE && op != DDIH_OP_UMEM_FREE &&
		    op != DDIH_OP_KMEM_FREE && op != DDIH_OP_UMEM_EXPORT &&
		    ob(t, r.handle)->type != handle_type(op))
			expect = EBADF;
		if (op == DDIH_OP_UMEM_EXPORT && r.handle != 0 &&
		    ob(t, r.handle)->type != T_UMEM)
			expect = EBADF;
		what = "flags outside the op's defined bits";
		break;
	}
	default:		/* creating op with a handle */
		r.op = (uint32_t[]){ DDIH_OP_RMALLOCMAP, DDIH_OP_UMEM_ALLOC,
		    DDIH_OP_KMEM_ALLOC, DDIH_OP_KMEM_ZALLOC }[rn(t, 4)];
		cmd = cmd_of(r.op);
		r.handle = 1 + (uint32_t)rn(t, 100);
		what = "creating op with a nonzero handle";
		break;
	}
	if ((e = xioctl(t->fd, cmd, &r)) == STOP)
		return;
	account(t, C_MAL, e, expect, what, &r);
	if (e == 0 && creates(r.op))
		t->uncertain = true;	/* an unrefused creation: resync */
	if (e == 0 && r.ohandle)
		created(t, r.ohandle, handle_type(r.op) ? handle_type(r.op) :
		    r.op < 16 ? T_MAP : r.op < 32 ? T_UMEM : T_KMEM, "unrefused");
}

/* Handle malformations: stale, foreign, out of range, wrong type, 0. */
static void
op_bad_handle(struct th *t)
{
	static const uint32_t hops[] = {
		DDIH_OP_RMALLOC, DDIH_OP_RMALLOC_WAIT, DDIH_OP_RMFREE,
		DDIH_OP_RMFREEMAP, DDIH_OP_RMAP_STATE, DDIH_OP_RMAP_LAYOUT,
		DDIH_OP_UMEM_FREE, DDIH_OP_UMEM_CHECK, DDIH_OP_UMEM_FILL,
		DDIH_OP_KMEM_FREE,
	};
	struct ddih_req r;
	const char *why;
	char what[80];
	uint32_t op = hops[rn(t, sizeof (hops) / sizeof (hops[0]))];
	uint32_t h = bad_handle(t, handle_type(op), &why);
	int e;

	if (h == 0 && (op == DDIH_OP_UMEM_FREE || op == DDIH_OP_KMEM_FREE))
		h = 0x7fffffff;		/* NULL is valid for the frees */
	req_init(&r, op);
	r.handle = h;
	r.arg[0] = 1 + rn(t, 16);
	r.arg[1] = 1 + rn(t, 16);
	snprintf(what, sizeof (what), "%s (op %u)", why, op);
	if ((e = xioctl(t->fd, cmd_of(op), &r)) == STOP)
		return;
	account(t, C_MAL, e, EBADF, what, &r);
}

/* Bad user pointers, on purpose: the driver must answer EFAULT. */
static void
op_efault(struct th *t)
{
	struct ddih_req r;
	void *arg;
	const char *what;
	int e, v = (int)rn(t, 9);

	plausible(t, &r);
	if ((creates(r.op) || handle_type(r.op) == T_NONE) && v == 8)
		v = 7;
	switch (v) {
	case 0: arg = NULL; what = "NULL request pointer"; break;
	case 1: arg = (void *)(uintptr_t)(1 + rn(t, 4095));
		what = "request pointer in page 0"; break;
	case 2: arg = (void *)(uintptr_t)0xffffffff81000000ULL;
		what = "kernel request pointer"; break;
	case 3: arg = (void *)(uintptr_t)(0x0000800000000000ULL + PG * rn(t, 16));
		what = "non-canonical request pointer"; break;
	case 4: arg = t->none + rn(t, PG - sizeof (r));
		what = "request in a PROT_NONE page"; break;
	case 5: /* the header is readable, the rest is behind a guard page */
		arg = t->guard + PG - 8 * (1 + rn(t, 23));
		memcpy(arg, &r, t->guard + PG - (uint8_t *)arg);
		what = "request straddling a guard page"; break;
	case 6: arg = (void *)(uintptr_t)(0x00007ffffffff000ULL + 4000);
		what = "request straddling the top of user space"; break;
	default: {
		/* read-only request: copied in, copy-out fails; no side effect */
		if (mprotect(t->ro, PG, PROT_READ | PROT_WRITE) != 0)
			return;
		if (v == 7) {
			uint32_t h = pick(t, T_MAP);

			req_init(&r, h ? DDIH_OP_RMAP_STATE : DDIH_OP_UMEM_CHECK);
			r.handle = h ? h : pick(t, T_UMEM);
			r.arg[1] = 1;
		} else {
			const char *why;

			r.handle = bad_handle(t, handle_type(r.op), &why);
			if (r.handle == 0)
				r.handle = 0x7fffffff;
		}
		memcpy(t->ro, &r, sizeof (r));
		(void) mprotect(t->ro, PG, PROT_READ);
		arg = t->ro;
		what = "read-only request";
		break;
	}
	}
	if ((e = xioctl(t->fd, cmd_of(r.op), arg)) == STOP)
		return;
	account(t, C_MAL, e, EFAULT, what, &r);
}

/*
 * A read-only request that creates or frees: the driver refuses with
 * EFAULT on the copy-out -- does the op still take effect?
 */
static void
op_efault_side(struct th *t)
{
	struct ddih_req r;
	uint32_t h;
	int e;

	if (t->uncertain || mprotect(t->ro, PG, PROT_READ | PROT_WRITE) != 0)
		return;
	h = pick(t, T_KMEM);
	if (h != 0 && pct(t, 50)) {
		req_init(&r, DDIH_OP_KMEM_FREE);
		r.handle = h;
	} else {
		req_init(&r, DDIH_OP_KMEM_ALLOC);
		r.arg[0] = 32;
		h = 0;
	}
	memcpy(t->ro, &r, sizeof (r));
	(void) mprotect(t->ro, PG, PROT_READ);
	if ((e = xioctl(t->fd, DDIH_IOC_KMEM, t->ro)) == STOP)
		return;
	account(t, C_MAL, e, EFAULT, h ? "read-only kmem_free request" :
	    "read-only kmem_alloc request", &r);
	if (h == 0) {
		t->uncertain = e == EFAULT;	/* resolved by the next creation */
		return;
	}
	/* was the buffer freed anyway? a second free tells */
	req_init(&r, DDIH_OP_KMEM_FREE);
	r.handle = h;
	if ((e = xioctl(t->fd, DDIH_IOC_KMEM, &r)) == STOP)
		return;
	account(t, C_CONT, e, 0, "kmem_free after a read-only free", &r);
	if (e == EBADF)
		atomic_fetch_add(&S->efault_side, 1);
	t->tab[h].type = T_KFREED;
	live_del(t, h);
}

/* ---------------------------------------------------------------- shared */

static void
s_register(uint32_t h, uint8_t type, uint64_t usize)
{
	uint32_t i;

	if (h >= SREG)
		return;
	atomic_store(&S->reg[h].usize, (uint32_t)usize);
	atomic_store(&S->reg[h].type, type);
	i = atomic_fetch_add(&S->nsh, 1);
	atomic_store(&S->shandles[i % SLIST], h);
	atomic_fetch_add(&S->slive, 1);
}

static uint32_t
s_pick(struct th *t)
{
	uint32_t n = atomic_load(&S->nsh);

	if (n == 0)
		return 0;
	if (n > SLIST)
		n = SLIST;
	return atomic_load(&S->shandles[rn(t, n)]);
}

static void
s_freed(struct th *t, uint32_t h, const char *what)
{
	if (h < SREG && atomic_fetch_add(&S->reg[h].frees, 1) != 0)
		anomaly(t, "shared handle %u: %s succeeded twice", h, what);
	atomic_fetch_sub(&S->slive, 1);
}

static void
do_shared(struct th *t)
{
	struct ddih_req r;
	uint32_t h = s_pick(t);
	uint8_t type = h ? atomic_load(&S->reg[h].type) : T_NONE;
	int e;

	if (h == 0 || type == T_NONE || (pct(t, 15) &&
	    atomic_load(&S->slive) < 96)) {
		uint32_t op = (uint32_t[]){ DDIH_OP_RMALLOCMAP,
		    DDIH_OP_UMEM_ALLOC, DDIH_OP_KMEM_ALLOC }[rn(t, 3)];

		req_init(&r, op);
		r.arg[0] = op == DDIH_OP_UMEM_ALLOC ? 1 + rn(t, 16 * PG) :
		    rn(t, 2048);
		if ((e = xioctl(sfd, cmd_of(op), &r)) == STOP)
			return;
		account(t, C_VALID, e, 0, "create on the shared file", &r);
		if (e == 0 && r.ohandle)
			s_register(r.ohandle, op == DDIH_OP_RMALLOCMAP ? T_MAP :
			    op == DDIH_OP_UMEM_ALLOC ? T_UMEM : T_KMEM,
			    r.value);
		return;
	}
	if (pct(t, 15)) {	/* type confusion on a shared handle: EBADF */
		uint32_t op;

		do {
			op = all_ops[rn(t, NOPS)];
		} while (handle_type(op) == T_NONE || handle_type(op) == type ||
		    op == DDIH_OP_UMEM_EXPORT);
		req_init(&r, op);
		r.handle = h;
		r.arg[0] = 1;
		r.arg[1] = 1;
		if ((e = xioctl(sfd, cmd_of(op), &r)) == STOP)
			return;
		account(t, C_MAL, e, EBADF, "shared handle of another type", &r);
		return;
	}
	switch (type) {
	case T_KMEM:
		req_init(&r, DDIH_OP_KMEM_FREE);
		r.handle = h;
		if ((e = xioctl(sfd, DDIH_IOC_KMEM, &r)) == STOP)
			return;
		account(t, C_CONT, e, 0, "shared kmem_free", &r);
		if (e == 0)
			s_freed(t, h, "kmem_free");
		break;
	case T_UMEM: {
		uint64_t us = atomic_load(&S->reg[h].usize);

		switch (rn(t, 4)) {
		case 0:
			req_init(&r, DDIH_OP_UMEM_FREE);
			r.handle = h;
			if ((e = xioctl(sfd, DDIH_IOC_UMEM, &r)) == STOP)
				return;
			account(t, C_CONT, e, 0, "shared umem_free", &r);
			if (e == 0)
				s_freed(t, h, "umem_free");
			break;
		case 1: {
			req_init(&r, rn(t, 2) ? DDIH_OP_UMEM_FILL :
			    DDIH_OP_UMEM_CHECK);
			r.handle = h;
			r.arg[0] = rn(t, us + 1);
			r.arg[1] = rn(t, us - r.arg[0] + 1);
			if ((e = xioctl(sfd, DDIH_IOC_UMEM, &r)) == STOP)
				return;
			account(t, C_CONT, e, 0, "shared umem fill/check", &r);
			break;
		}
		default: {	/* export and mmap, racing other exports */
			uint8_t *p;
			uint64_t len = PG * (1 + rn(t, us / PG ? us / PG : 1));

			req_init(&r, DDIH_OP_UMEM_EXPORT);
			r.handle = h;
			r.arg[0] = len;
			r.arg[1] = DDIH_PROT_READ | DDIH_PROT_WRITE;
			if ((e = xioctl(sfd, DDIH_IOC_UMEM, &r)) == STOP)
				return;
			account(t, C_CONT, e, 0, "shared umem_export", &r);
			if (!claim())
				return;
			p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
			    sfd, 0);
			e = p == MAP_FAILED ? errno : 0;
			result(e);
			account(t, C_CONT, e, 0, "shared mmap", NULL);
			if (e == 0) {
				atomic_fetch_add(&S->mmaps, 1);
				if (!touch(p, len, true, NULL))
					anomaly(t, "fault touching a mapping of "
					    "the shared file (%" PRIu64 " bytes)",
					    len);
				if (pct(t, 50)) {
					/* free under the mapping, touch again */
					req_init(&r, DDIH_OP_UMEM_FREE);
					r.handle = h;
					if ((e = xioctl(sfd, DDIH_IOC_UMEM, &r))
					    == STOP) {
						munmap(p, len);
						return;
					}
					account(t, C_CONT, e, 0,
					    "shared umem_free under a mapping", &r);
					if (e == 0)
						s_freed(t, h, "umem_free");
					if (!touch(p, len, true, NULL))
						anomaly(t, "fault touching a "
						    "mapping after umem_free");
				}
				munmap(p, len);
			}
			break;
		}
		}
		break;
	}
	case T_MAP:
		switch (rn(t, 8)) {
		case 0: case 1:		/* add a chunk in this thread's region */
			req_init(&r, DDIH_OP_RMFREE);
			r.handle = h;
			r.arg[0] = 1 + rn(t, 64);
			r.arg[1] = t->sregion;
			t->sregion += r.arg[0] + rn(t, 4);
			if ((e = xioctl(sfd, DDIH_IOC_RMAP, &r)) == STOP)
				return;
			account(t, C_CONT, e, 0, "shared rmfree (add)", &r);
			break;
		case 2: case 3: {	/* rmalloc, or a short rmalloc_wait */
			bool wait = rn(t, 2) && !ILLUMOS;	/* cv_wait */

			req_init(&r, wait ? DDIH_OP_RMALLOC_WAIT : DDIH_OP_RMALLOC);
			r.handle = h;
			r.arg[0] = pct(t, 10) ? 1ULL << 40 : 1 + rn(t, 16);
			if (wait)
				atomic_store(&t->wait_deadline, now_ns() +
				    2000000L + (long)rn(t, 10) * 1000000L);
			e = xioctl(sfd, DDIH_IOC_RMAP, &r);
			atomic_store(&t->wait_deadline, 0);
			if (e == STOP)
				return;
			account(t, C_CONT, e, 0, wait ? "shared rmalloc_wait" :
			    "shared rmalloc", &r);
			if (e == 0 && r.value != 0 && t->nsown < 32) {
				t->sown[t->nsown].h = h;
				t->sown[t->nsown].a = r.value;
				t->sown[t->nsown++].l = r.arg[0];
			}
			break;
		}
		case 4: case 5:		/* free an own allocation */
			if (t->nsown == 0)
				break;
			{
				int i = (int)rn(t, t->nsown);

				req_init(&r, DDIH_OP_RMFREE);
				r.handle = t->sown[i].h;
				r.arg[0] = t->sown[i].l;
				r.arg[1] = t->sown[i].a;
				t->sown[i] = t->sown[--t->nsown];
				if ((e = xioctl(sfd, DDIH_IOC_RMAP, &r)) == STOP)
					return;
				account(t, C_CONT, e, 0, "shared rmfree", &r);
			}
			break;
		case 6:			/* hostile: a random range */
			req_init(&r, DDIH_OP_RMFREE);
			r.handle = h;
			r.arg[0] = 1 + rn(t, 8);
			r.arg[1] = (t->sregion & ~0xffffffULL) + rn(t, 4096);
			if ((e = xioctl(sfd, DDIH_IOC_RMAP, &r)) == STOP)
				return;
			account(t, C_CONT, e, 0, "shared rmfree (random)", &r);
			break;
		default:
			if (ILLUMOS)	/* may hold allocations: "leaked" */
				break;
			req_init(&r, DDIH_OP_RMFREEMAP);
			r.handle = h;
			if ((e = xioctl(sfd, DDIH_IOC_RMAP, &r)) == STOP)
				return;
			account(t, C_CONT, e, 0, "shared rmfreemap", &r);
			if (e == 0)
				s_freed(t, h, "rmfreemap");
			break;
		}
		break;
	default:		/* a freed kmem: the free must be refused */
		break;
	}
}

/* ---------------------------------------------------------------- threads */

static void *
thread_main(void *arg)
{
	struct th *t = arg;
	long steps = 0;

	t->self = pthread_self();
	t->fd = t->fd2 = -1;
	open_files(t);
	t->ro = mmap(NULL, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	t->none = mmap(NULL, PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	t->guard = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->ro == MAP_FAILED || t->none == MAP_FAILED ||
	    t->guard == MAP_FAILED || mprotect(t->guard + PG, PG, PROT_NONE))
		exit(2);
	t->sregion = ((uint64_t)(t->w * MAXT + t->id + 1) << 40) +
	    ((uint64_t)t->gen << 32) + 1;

	while (atomic_load(&S->budget) > 0) {
		unsigned c = (unsigned)rn(t, 100);

		if (c < 16)
			do_rmap(t);
		else if (c < 30)
			do_umem(t);
		else if (c < 40)
			do_kmem(t);
		else if (c < 52)
			op_header(t);
		else if (c < 62)
			op_bad_handle(t);
		else if (c < 68)
			op_efault(t);
		else if (c < 69)
			op_efault_side(t);
		else if (c < 93)
			do_shared(t);
		else if (c < 94 && pct(t, 10)) {
			/* close the file with everything still in it */
			close_private(t);
			open_files(t);
		} else {
			do_rmap(t);
		}
		steps++;
	}
	close_private(t);
	close(t->fd2);
	return NULL;
}

static void *
watchdog(void *arg)
{
	(void) arg;
	for (;;) {
		long now = now_ns();

		for (int i = 0; i < nthreads; i++) {
			long d = atomic_load(&threads[i]->wait_deadline);

			if (d != 0 && now > d)
				(void) pthread_kill(threads[i]->self, SIGUSR1);
		}
		usleep(2000);
	}
	return NULL;
}

/*
 * Memory pressure (-m): the largest allowed requests, repeated until the
 * driver declines.  64 MiB umem buffers with DDI_UMEM_SLEEP, then rmap
 * chunks of 2^24 units (2 MiB of gen_pool bitmap each).  The driver caps
 * neither, so this probes what the kernel does when a caller exhausts
 * memory through it (allocation-failure warnings, the OOM killer).
 */
static void
op_pressure(struct th *t, int max_umem, int max_chunks)
{
	struct ddih_req r;
	uint32_t map;
	int e, i, n = 0;

	for (i = 0; i < max_umem; i++) {
		req_init(&r, DDIH_OP_UMEM_ALLOC);
		r.arg[0] = 64ULL << 20;
		if ((e = xioctl(t->fd, DDIH_IOC_UMEM, &r)) == STOP)
			return;
		account(t, C_CONT, e, 0, "umem_alloc 64 MiB (pressure)", &r);
		if (e != 0 || r.kind == DDIH_KIND_NULL)
			break;
		created(t, r.ohandle, T_UMEM, "umem_alloc");
		n++;
	}
	note(t, "pressure: %d umem buffers of 64 MiB before NULL", n);
	req_init(&r, DDIH_OP_RMALLOCMAP);
	if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP || e != 0)
		return;
	account(t, C_VALID, e, 0, "rmallocmap", &r);
	created(t, r.ohandle, T_MAP, "rmallocmap");
	map = r.ohandle;
	t->tab[map].m = new_model(t);
	t->tab[map].m->exact = false;
	for (i = n = 0; i < max_chunks; i++) {
		req_init(&r, DDIH_OP_RMFREE);
		r.handle = map;
		r.arg[0] = 1ULL << 24;
		r.arg[1] = 1 + ((uint64_t)i << 25);
		if ((e = xioctl(t->fd, DDIH_IOC_RMAP, &r)) == STOP)
			return;
		account(t, C_CONT, e, 0, "rmfree add 2^24 units (pressure)", &r);
		if (e != 0)
			break;
		n++;
	}
	note(t, "pressure: %d chunks of 2^24 units before %s", n,
	    i < max_chunks ? ename(e) : "the cap of the probe");
}

static void
solo_probe(bool cap, int pressure)
{
	/* run in the parent before the workers start, on its own files */
	struct th *t = calloc(1, sizeof (*t));

	t->w = -1;
	t->fd2 = -1;
	open_files(t);
	if (cap)
		op_chunk_cap(t);
	if (pressure)
		op_pressure(t, pressure, 16 * pressure);
	close_private(t);
	close(t->fd2);
	free(t);
}

static void
worker(int w, int gen, int nt, uint64_t seed)
{
	pthread_t tids[MAXT], wd;
	struct sigaction sa;
	int i;

	memset(&sa, 0, sizeof (sa));
	sa.sa_handler = on_usr1;	/* no SA_RESTART: waits end with EINTR */
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_fault;
	sa.sa_flags = SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
	nthreads = nt;
	for (i = 0; i < nt; i++) {
		struct th *t = calloc(1, sizeof (*t));

		t->w = w;
		t->id = i;
		t->gen = gen;
		t->rng = seed ^ ((uint64_t)w << 48) ^ ((uint64_t)i << 40) ^
		    ((uint64_t)gen << 32);
		(void) splitmix(&t->rng);
		threads[i] = t;
	}
	for (i = 0; i < nt; i++)
		pthread_create(&tids[i], NULL, thread_main, threads[i]);
	pthread_create(&wd, NULL, watchdog, NULL);
	for (i = 0; i < nt; i++)
		pthread_join(tids[i], NULL);
	_exit(0);
}

int
main(int argc, char **argv)
{
	long ops = 1000, stall_s = 120;
	uint64_t seed = 1;
	int nw = 4, nt = 2, c, i, gen = 0;
	bool kill_storm = false, cap = false;
	int pressure = 0;
	pid_t pids[MAXW];
	uint64_t krng;
	long last_progress, next_kill;

	while ((c = getopt(argc, argv, "n:s:w:t:kcd:vS:m:")) != -1) {
		switch (c) {
		case 'n': ops = atol(optarg); break;
		case 's': seed = strtoull(optarg, NULL, 0); break;
		case 'w': nw = atoi(optarg); break;
		case 't': nt = atoi(optarg); break;
		case 'k': kill_storm = true; break;
		case 'c': cap = !ILLUMOS; break;	/* a Linux cap */
		case 'd': device = optarg; break;
		case 'v': verbose++; break;
		case 'S': stall_s = atol(optarg); break;
		case 'm': pressure = atoi(optarg); break;
		default:
			fprintf(stderr, "usage: ddifuzz [-n ops] [-s seed] "
			    "[-w workers] [-t threads] [-k] [-c] [-d dev] [-v]\n");
			return 2;
		}
	}
	if (nw < 1 || nw > MAXW || nt < 1 || nt > MAXT || ops < 0)
		return 2;
	S = mmap(NULL, sizeof (*S), PROT_READ | PROT_WRITE,
	    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (S == MAP_FAILED)
		return 2;
	S->budget = ops;
	S->progress_stamp = now_ns();
	sfd = open(device, O_RDWR);
	if (sfd < 0) {
		fprintf(stderr, "ddifuzz: open %s: %s\n", device, strerror(errno));
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (cap || pressure)
		solo_probe(cap, pressure);
	for (i = 0; i < nw; i++) {
		pids[i] = fork();
		if (pids[i] == 0)
			worker(i, 0, nt, seed);
	}
	krng = seed ^ 0x6b696c6cULL;
	last_progress = now_ns();
	next_kill = ops / 8 + (long)(splitmix(&krng) % (uint64_t)(ops / 4 + 1));
	for (;;) {
		int st, alive = 0;
		pid_t p;

		while ((p = waitpid(-1, &st, WNOHANG)) > 0) {
			for (i = 0; i < nw; i++)
				if (pids[i] == p) {
					pids[i] = 0;
					if (WIFSIGNALED(st) &&
					    WTERMSIG(st) != SIGKILL)
						detail("ANOMALY worker %d died of "
						    "signal %d", i, WTERMSIG(st));
					if (WIFSIGNALED(st) && WTERMSIG(st) != SIGKILL)
						atomic_fetch_add(&S->anomalies, 1);
				}
		}
		for (i = 0; i < nw; i++)
			alive += pids[i] != 0;
		if (alive == 0)
			break;
		if (kill_storm && atomic_load(&S->budget) > 0 &&
		    atomic_load(&S->sent) >= next_kill) {
			/* a worker dies mid-flight, its files still in use */
			next_kill = atomic_load(&S->sent) + ops / 8 +
			    (long)(splitmix(&krng) % (uint64_t)(ops / 4 + 1));
			{
				i = (int)(splitmix(&krng) % nw);
				if (pids[i] != 0) {
					kill(pids[i], SIGKILL);
					waitpid(pids[i], NULL, 0);
					atomic_fetch_add(&S->kills, 1);
					gen++;
					pids[i] = fork();
					if (pids[i] == 0)
						worker(i, gen, nt, seed);
				}
			}
		}
		if (S->progress_stamp > last_progress)
			last_progress = S->progress_stamp;
		if (now_ns() - last_progress > stall_s * 1000000000L) {
			printf("HANG no request returned for %ld s\n", stall_s);
			for (i = 0; i < nw; i++)
				if (pids[i])
					kill(pids[i], SIGKILL);
			while (wait(NULL) > 0)
				;
			break;
		}
		usleep(5000);
	}
	close(sfd);

	{
		uint32_t nd = atomic_load(&S->ndetail);
		FILE *f;
		char buf[64] = "?";
		bool first = true;

		for (uint32_t k = 0; k < nd && k < MAXDETAIL; k++)
			printf("%s\n", S->detail[k]);
		if (nd > MAXDETAIL)
			printf("NOTE %u more detail lines not shown\n",
			    nd - MAXDETAIL);
		usleep(100000);
		if ((f = fopen("/sys/module/ddih/parameters/outstanding", "r"))) {
			if (fgets(buf, sizeof (buf), f) == NULL)
				strcpy(buf, "?");
			buf[strcspn(buf, "\n")] = '\0';
			fclose(f);
		}
		printf("ddifuzz sent=%ld results=%ld ok=%ld refused=%ld "
		    "malformed=%ld malformed_refused=%ld unrefused=%ld "
		    "wrong_errno=%ld valid=%ld valid_ok=%ld valid_failed=%ld "
		    "absurd=%ld absurd_declined=%ld absurd_accepted=%ld "
		    "contended=%ld contended_ok=%ld contended_refused=%ld "
		    "anomalies=%ld efault_side_effects=%ld mmaps=%ld "
		    "coherence_checks=%ld cap_probes=%ld kills=%ld "
		    "wait_interrupts=%ld workers=%d threads=%d seed=%" PRIu64
		    " outstanding_after=%s by_errno=",
		    S->sent, S->results, S->ok, S->refused,
		    S->n[C_MAL], S->n[C_MAL] - S->bad[C_MAL], S->bad[C_MAL],
		    S->wrong_errno, S->n[C_VALID], S->n[C_VALID] - S->bad[C_VALID],
		    S->bad[C_VALID], S->n[C_ABSURD],
		    S->n[C_ABSURD] - S->bad[C_ABSURD], S->bad[C_ABSURD],
		    S->n[C_CONT], S->n[C_CONT] - S->bad[C_CONT], S->bad[C_CONT],
		    S->anomalies, S->efault_side, S->mmaps, S->coherent_checks,
		    S->cap_probes, S->kills, S->wakeups, nw, nt, seed, buf);
		for (i = 0; i < MAXERR; i++) {
			if (S->by_errno[i] == 0)
				continue;
			printf("%s%s:%ld", first ? "" : ",", ename(i),
			    S->by_errno[i]);
			first = false;
		}
		printf("\n");
	}
	return 0;
}
