/*
 * ddictl: the guest-side op runner of ddi-harness.
 *
 * Reads ops from stdin, one per line, in the line protocol of
 * kmod/README.md ("OP key=value ..."), executes each through the ddih ioctl
 * ABI (kmod/ddih_ioctl.h) and prints one result line per op, flushed:
 *
 *   kind=<value|null|ok|error|hang> [value=N] [errno=NAME] [offset=N]
 *   [zeroed=0|1] [type=0xN] [cookie_size=N] [coherent=0|1] [avail=N] [total=N]
 *   [mem_total=N mem_inuse=N alloc=N free=N fail=N wait=N contains=N]
 *
 * The last group is the vmem kstat counters of an rmap arena, which only the
 * illumos port reports (DDIH_V_VMEM); the Linux port reports avail/total.
 *
 * With `layout=on' (below), the result line of every resource-map op
 * (rmallocmap, rmallocmap_wait, rmalloc, rmalloc_wait -- the immediate
 * line, also a background waiter's --, rmfree, join) that is not an error
 * and whose map is still alive ends with the map's whole layout, read with
 * RMAP_LAYOUT (kmod/ddih_ioctl.h) right after the op:
 *
 *   layout=<total>:<seg>,<seg>,...   at most 64 listed (DDIH_LAYOUT_MAX);
 *                                    `layout=0:' for a map with no segment
 *   <seg> = <type>:<start>+<size>    decimal, in the map's units
 *   <type> = s (span / gen_pool chunk) | a (allocated) | f<k> (free, on
 *            vmem freelist k, illumos) | f (free, Linux: no freelists)
 *
 * in the driver's order (illumos: the vmem arena list; Linux: each chunk
 * in list order followed by its bitmap runs), read after the op once every
 * background waiter has settled (returned, or asleep again: one the op
 * woke has made its retry; the counters on the same line are the driver's
 * own, taken when the op returned).  A map the driver no longer
 * knows (rmfreemap, a failed creation) gets no layout; neither do error
 * and hang lines.
 *
 * Trace names (map=m, buf=b, waiter=w) are kept in a name -> handle table;
 * a name whose creating op returned NULL stands for handle 0 (NULL), and
 * `buf=-' passes NULL.  Names stay bound after a free, so a second free is
 * sent to the driver, which decides (EBADF, or a double free in destructive
 * mode).
 *
 * Control lines (no result line is printed for them):
 *   budget_ms=N   per-op time budget (default 10000)
 *   layout=on     append the map's layout to resource-map results (above);
 *   layout=off    stop (the default); `reset' keeps the setting
 *   reset         interrupt background waiters, unmap the mappings kept by
 *                 umem_export mapping=shared-kept, close and reopen the
 *                 device
 * Blank lines and lines starting with '#' are ignored.
 *
 * Every op runs in a worker thread; if it has not returned within the
 * budget, ddictl prints kind=hang and exits with status 3 (on Linux process
 * exit interrupts the driver's interruptible wait; on illumos rmalloc_wait
 * sleeps in an uninterruptible cv_wait, the process cannot finish exiting
 * and the harness replaces the guest).  The same holds for `reset' when a
 * background waiter cannot be interrupted within the budget.  A malformed
 * line gives kind=error errno=EPROTO, an explanation on stderr, and ddictl
 * goes on.
 *
 * Builds on Linux (static, see Makefile) and on illumos with its own libc
 * (kmod/illumos/Makefile, `make ddictl'):
 *   gcc -O2 -m64 -Wall -Werror -I../kmod -Ilibddih -o ddictl ddictl.c \
 *       libddih/ddih.c -lpthread
 * umem_export maps, checks and unmaps within its step; with
 * mapping=shared-kept (MAP_SHARED) the mapping stays until `reset' or exit
 * (at most MAXKEPT of them; past that a kept export is unmapped at once),
 * so later steps run while the buffer is mapped.
 *
 * Requests, the umem export (export, mmap, kernel-side pattern fill and
 * check, munmap) and opening the device go through libddih (libddih/ddih.h).
 * ddictl has no copy of its own of those calls: every build compiles
 * guest/libddih/ddih.c with it and needs -Ilibddih for ddih.h.
 *
 * Usage: ddictl [device]     (default DDIH_DEVICE: /dev/ddih on Linux,
 *                             /devices/pseudo/ddih@0:ddih on illumos;
 *                             $DDIH_DEV overrides the default)
 */

#if !defined(__sun)
#define	_GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#if defined(__sun)
#include <procfs.h>		/* lwpsinfo_t */
#include <sys/lwp.h>		/* _lwp_self */
#else
#include <sys/syscall.h>	/* SYS_gettid */
#endif

#include "ddih_ioctl.h"

/* ------------------------------------------------------------ libddih */

#include "ddih.h"		/* guest/libddih: build with -I guest/libddih and ddih.c */

/* ------------------------------------------------------------ line protocol */

/*
 * guest/lineproto.h (next to this file): output, protocol errors, line
 * parsing and the control lines, shared with kmod/gate/gatectl.c.
 */
#define	LINEPROTO_PROG	"ddictl"
#include "lineproto.h"

#define	MAP_LEN_CAP	(1ULL << 40)	/* larger export lengths map 1 page */

static const char *devpath = DDIH_DEVICE;
static int devfd = -1;

/* ------------------------------------------------------------ errno names */

static const char *
errno_name(int e)
{
	static char buf[32];

	switch (e) {
	case EPERM: return ("EPERM");
	case ENOENT: return ("ENOENT");
	case ESRCH: return ("ESRCH");
	case EINTR: return ("EINTR");
	case EIO: return ("EIO");
	case ENXIO: return ("ENXIO");
	case E2BIG: return ("E2BIG");
	case ENOEXEC: return ("ENOEXEC");
	case EBADF: return ("EBADF");
	case ECHILD: return ("ECHILD");
	case EAGAIN: return ("EAGAIN");
	case ENOMEM: return ("ENOMEM");
	case EACCES: return ("EACCES");
	case EFAULT: return ("EFAULT");
	case EBUSY: return ("EBUSY");
	case EEXIST: return ("EEXIST");
	case EXDEV: return ("EXDEV");
	case ENODEV: return ("ENODEV");
	case ENOTDIR: return ("ENOTDIR");
	case EISDIR: return ("EISDIR");
	case EINVAL: return ("EINVAL");
	case ENFILE: return ("ENFILE");
	case EMFILE: return ("EMFILE");
	case ENOTTY: return ("ENOTTY");
	case EFBIG: return ("EFBIG");
	case ENOSPC: return ("ENOSPC");
	case ESPIPE: return ("ESPIPE");
	case EROFS: return ("EROFS");
	case EPIPE: return ("EPIPE");
	case EDOM: return ("EDOM");
	case ERANGE: return ("ERANGE");
	case EDEADLK: return ("EDEADLK");
	case ENOSYS: return ("ENOSYS");
	case EIDRM: return ("EIDRM");
	case EPROTO: return ("EPROTO");
	case EOVERFLOW: return ("EOVERFLOW");
	case ENOTSUP: return ("ENOTSUP");	/* == EOPNOTSUPP on Linux */
#if defined(EOPNOTSUPP) && EOPNOTSUPP != ENOTSUP
	case EOPNOTSUPP: return ("EOPNOTSUPP");	/* illumos: 122, not 48 */
#endif
	case ETIMEDOUT: return ("ETIMEDOUT");
	case ECANCELED: return ("ECANCELED");
	case EOWNERDEAD: return ("EOWNERDEAD");
	case ENOTRECOVERABLE: return ("ENOTRECOVERABLE");
	default:
		(void) snprintf(buf, sizeof (buf), "E%d", e);
		return (buf);
	}
}

/* ------------------------------------------------------------ output */

/* The result of one ioctl-backed op. */
struct result {
	struct ddih_req	req;
	int		rc;		/* ioctl return */
	int		err;		/* errno when rc < 0 */
	int		coherent;	/* -1: not reported */
};

static size_t add_layout(char *line, size_t cap, size_t n, uint32_t map);

/*
 * Print a result line.  With layout on, a map handle (not 0) adds the
 * map's layout to a line that is not an error.
 */
static void
print_result_map(const struct result *res, uint32_t map)
{
	const struct ddih_req *r = &res->req;
	char line[4096];
	size_t n = 0;

#define	ADD(...)	(n += (size_t)snprintf(line + n, sizeof (line) - n, \
			    __VA_ARGS__))
	if (res->rc < 0) {
		ADD("kind=error errno=%s", errno_name(res->err));
	} else {
		switch (r->kind) {
		case DDIH_KIND_VALUE:
			ADD("kind=value value=%" PRIu64, r->value);
			break;
		case DDIH_KIND_NULL:
			ADD("kind=null");
			break;
		case DDIH_KIND_OK:
			ADD("kind=ok");
			break;
		default:
			ADD("kind=error errno=EPROTO");
			(void) fprintf(stderr, "ddictl: driver returned "
			    "unknown kind %u\n", r->kind);
			break;
		}
		if (r->valid & DDIH_V_OFFSET)
			ADD(" offset=%" PRIu64, r->offset);
		if (r->valid & DDIH_V_ZEROED)
			ADD(" zeroed=%u", r->zeroed ? 1 : 0);
		if (r->valid & DDIH_V_TYPE)
			ADD(" type=0x%x", r->type);
		if (r->valid & DDIH_V_COOKIE_SIZE)
			ADD(" cookie_size=%" PRIu64, r->cookie_size);
		if (res->coherent >= 0)
			ADD(" coherent=%d", res->coherent);
	}
	if (r->valid & DDIH_V_STATE)
		ADD(" avail=%" PRIu64 " total=%" PRIu64, r->avail, r->total);
	if (r->valid & DDIH_V_VMEM)
		ADD(" mem_total=%" PRIu64 " mem_inuse=%" PRIu64 " alloc=%" PRIu64
		    " free=%" PRIu64 " fail=%" PRIu64 " wait=%" PRIu64
		    " contains=%" PRIu64,
		    r->ctr[DDIH_CTR_MEM_TOTAL], r->ctr[DDIH_CTR_MEM_INUSE],
		    r->ctr[DDIH_CTR_ALLOC], r->ctr[DDIH_CTR_FREE],
		    r->ctr[DDIH_CTR_FAIL], r->ctr[DDIH_CTR_WAIT],
		    r->ctr[DDIH_CTR_CONTAINS]);
#undef ADD
	if (layout_on && map != 0 && res->rc == 0 && n < sizeof (line))
		n = add_layout(line, sizeof (line), n, map);
	emit("%s", line);
}

static void
print_result(const struct result *res)
{
	print_result_map(res, 0);
}

/* ------------------------------------------------------------ ioctl */

static void
req_init(struct ddih_req *r, uint32_t op)
{
	ddih_req_init(r, op);
}

static void
do_ioctl(int fd, struct result *res)
{
	res->rc = ddih_request(fd, &res->req);
	res->err = res->rc < 0 ? errno : 0;
}

/* ------------------------------------------------------------ names */

enum objkind { OBJ_MAP = 1, OBJ_BUF, OBJ_WAITER };

struct waiter {
	pthread_t	th;
	int		fd;
	int		done;		/* under mu */
	long		tid;		/* under mu; 0 until the thread runs */
	int		joined;
	struct result	res;
};

struct name {
	char		name[NAMELEN + 1];
	enum objkind	kind;
	uint32_t	handle;		/* 0 = NULL */
	struct waiter	*w;		/* OBJ_WAITER */
};

static struct name *names;
static size_t nnames, cap_names;

static struct name *
name_find(const char *s, enum objkind kind)
{
	size_t i;

	for (i = 0; i < nnames; i++) {
		if (names[i].kind == kind && strcmp(names[i].name, s) == 0)
			return (&names[i]);
	}
	return (NULL);
}

static struct name *
name_bind(const char *s, enum objkind kind)
{
	struct name *n = name_find(s, kind);

	if (n != NULL)
		return (n);
	if (nnames == cap_names) {
		cap_names = cap_names ? cap_names * 2 : 64;
		names = realloc(names, cap_names * sizeof (*names));
		if (names == NULL) {
			perror("ddictl: realloc");
			exit(2);
		}
	}
	n = &names[nnames++];
	(void) memset(n, 0, sizeof (*n));
	(void) snprintf(n->name, sizeof (n->name), "%s", s);
	n->kind = kind;
	return (n);
}

/* ------------------------------------------------------------ worker */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;		/* CLOCK_MONOTONIC */
static void (*job_fn)(void *);
static void *job_arg;
static int job_pending, job_done;

static void *
worker_main(void *unused)
{
	(void) unused;
	(void) pthread_mutex_lock(&mu);
	for (;;) {
		while (!job_pending)
			(void) pthread_cond_wait(&cv, &mu);
		job_pending = 0;
		(void) pthread_mutex_unlock(&mu);
		job_fn(job_arg);
		(void) pthread_mutex_lock(&mu);
		job_done = 1;
		(void) pthread_cond_broadcast(&cv);
	}
	return (NULL);
}

/* Run fn(arg) on the worker; print kind=hang and exit 3 past the budget. */
static void
run_budgeted(void (*fn)(void *), void *arg)
{
	struct timespec ts;

	deadline(&ts, budget_ms * 1000000LL);
	(void) pthread_mutex_lock(&mu);
	job_fn = fn;
	job_arg = arg;
	job_done = 0;
	job_pending = 1;
	(void) pthread_cond_broadcast(&cv);
	while (!job_done) {
		if (pthread_cond_timedwait(&cv, &mu, &ts) == ETIMEDOUT &&
		    !job_done)
			hang();
	}
	(void) pthread_mutex_unlock(&mu);
}

static void
job_ioctl(void *arg)
{
	do_ioctl(devfd, arg);
}

static void waiters_settle_all(void);

/*
 * Append " layout=<total>:<seg>,..." for map handle `map' (RMAP_LAYOUT,
 * on the worker within the budget), read once every background waiter
 * has settled (returned or asleep again: a waiter the op woke has retried),
 * so the layout does not depend on thread scheduling.  If the driver
 * refuses (the map is gone), nothing is appended.
 */
static size_t
add_layout(char *line, size_t cap, size_t n, uint32_t map)
{
	static struct ddih_seg segs[DDIH_LAYOUT_MAX];
	struct result lr = { .coherent = -1 };
	uint64_t i, k;

	waiters_settle_all();
	ddih_req_init(&lr.req, DDIH_OP_RMAP_LAYOUT);
	lr.req.handle = map;
	lr.req.arg[0] = (uint64_t)(uintptr_t)segs;
	lr.req.arg[1] = DDIH_LAYOUT_MAX;
	run_budgeted(job_ioctl, &lr);
	if (lr.rc < 0 || lr.req.kind != DDIH_KIND_VALUE) {
		if (lr.rc < 0 && lr.err != EBADF)
			(void) fprintf(stderr, "ddictl: layout of handle %u: "
			    "%s\n", map, strerror(lr.err));
		return (n);
	}
	k = lr.req.value < DDIH_LAYOUT_MAX ? lr.req.value : DDIH_LAYOUT_MAX;
	n = lp_layout_total(line, cap, n, lr.req.value);
	for (i = 0; i < k && n < cap; i++) {
		const struct ddih_seg *g = &segs[i];
		char type = '?';		/* ?<type number> */
		int64_t flist = g->type;

		switch (g->type) {
		case DDIH_SEG_SPAN:
			type = 's';
			flist = -1;
			break;
		case DDIH_SEG_ALLOC:
			type = 'a';
			flist = -1;
			break;
		case DDIH_SEG_FREE:
			type = 'f';
			flist = g->flist == DDIH_SEG_NOLIST ? -1 :
			    (int64_t)g->flist;
			break;
		}
		n = lp_layout_seg(line, cap, n, i, type, flist, g->start,
		    g->size);
	}
	return (n);
}

/* ------------------------------------------------------------ waiters */

static void
on_sigusr1(int sig)
{
	(void) sig;
}

static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;

	(void) pthread_mutex_lock(&mu);
#if defined(__sun)
	w->tid = (long)_lwp_self();
#else
	w->tid = (long)syscall(SYS_gettid);
#endif
	(void) pthread_cond_broadcast(&cv);
	(void) pthread_mutex_unlock(&mu);
	do_ioctl(w->fd, &w->res);
	(void) pthread_mutex_lock(&mu);
	w->done = 1;
	(void) pthread_cond_broadcast(&cv);
	(void) pthread_mutex_unlock(&mu);
	return (NULL);
}

/*
 * Interrupt and collect every background waiter (for reset).  A waiter
 * that does not return within the budget cannot be interrupted (illumos:
 * cv_wait in vmem); that is reported as a hang.
 */
static void
waiters_cancel(void)
{
	struct timespec ts, end;
	size_t i;

	for (i = 0; i < nnames; i++) {
		struct waiter *w = names[i].w;

		if (names[i].kind != OBJ_WAITER || w == NULL)
			continue;
		deadline(&end, budget_ms * 1000000LL);
		(void) pthread_mutex_lock(&mu);
		while (!w->done) {
			if (past(&end))
				hang();
			(void) pthread_kill(w->th, SIGUSR1);
			deadline(&ts, 50 * 1000000LL);
			(void) pthread_cond_timedwait(&cv, &mu, &ts);
		}
		(void) pthread_mutex_unlock(&mu);
		(void) pthread_join(w->th, NULL);
		free(w);
		names[i].w = NULL;
	}
}

/* ------------------------------------------------------------ parsing */

static int
parse_i64(const char *s, int64_t *out)
{
	uint64_t u;

	if (s != NULL && *s == '-') {
		if (parse_u64(s + 1, &u) != 0 || u > (uint64_t)INT64_MAX + 1)
			return (-1);
		*out = (int64_t)(0 - u);
		return (0);
	}
	if (parse_u64(s, &u) != 0 || u > (uint64_t)INT64_MAX)
		return (-1);
	*out = (int64_t)u;
	return (0);
}

/* Optional unsigned argument ('-' or absent: *given = 0). */
static int
arg_u64_opt(struct line *ln, const char *key, uint64_t dflt, uint64_t *out,
    int *given)
{
	const char *v = getarg(ln, key);

	*given = 0;
	*out = dflt;
	if (v == NULL || strcmp(v, "-") == 0)
		return (0);
	if (arg_parse_u64(ln, key, v, out) != 0)
		return (-1);
	*given = 1;
	return (0);
}

static int
arg_u32(struct line *ln, const char *key, uint32_t *out, int required,
    uint32_t dflt)
{
	uint64_t v;
	int given;

	if (required) {
		if (arg_u64(ln, key, &v) != 0)
			return (-1);
	} else if (arg_u64_opt(ln, key, dflt, &v, &given) != 0) {
		return (-1);
	}
	if (v > UINT32_MAX) {
		protoerr("%s: %s is out of range", ln->op, key);
		return (-1);
	}
	*out = (uint32_t)v;
	return (0);
}

/* A name being created by this op. */
static const char *
arg_newname(struct line *ln, const char *key)
{
	const char *v = getarg(ln, key);

	if (v == NULL || !valid_name(v)) {
		protoerr("%s: %s= must be an object name", ln->op, key);
		return (NULL);
	}
	return (v);
}

/* A name in use; '-' means NULL (handle 0) when nullable. */
static int
arg_handle(struct line *ln, const char *key, enum objkind kind, int nullable,
    uint32_t *h)
{
	const char *v = getarg(ln, key);
	struct name *n;

	if (v == NULL) {
		protoerr("%s: missing %s=", ln->op, key);
		return (-1);
	}
	if (nullable && strcmp(v, "-") == 0) {
		*h = 0;
		return (0);
	}
	n = name_find(v, kind);
	if (n == NULL) {
		protoerr("%s: %s=%s is not defined", ln->op, key, v);
		return (-1);
	}
	*h = n->handle;
	return (0);
}

/* ------------------------------------------------------------ ops */

/*
 * Run one ioctl op on the worker, print it, bind `newname' to the handle.
 * rmap: a resource-map op whose line may carry the map's layout (the new
 * map's, or the request's map).
 */
static void
simple_op(struct result *res, const char *newname, enum objkind kind,
    int rmap)
{
	uint32_t map = rmap ? res->req.handle : 0;

	run_budgeted(job_ioctl, res);
	if (newname != NULL) {
		struct name *n = name_bind(newname, kind);

		n->handle = (res->rc == 0 && (res->req.valid & DDIH_V_HANDLE)) ?
		    res->req.ohandle : 0;
		if (rmap)
			map = n->handle;
	}
	print_result_map(res, map);
}

static void
op_rmallocmap(struct line *ln, uint32_t op)
{
	struct result res = { .coherent = -1 };
	const char *m;
	uint64_t mapsize;

	req_init(&res.req, op);
	if ((m = arg_newname(ln, "map")) == NULL ||
	    arg_u64(ln, "mapsize", &mapsize) != 0 || check_unused(ln) != 0)
		return;
	res.req.arg[0] = mapsize;
	simple_op(&res, m, OBJ_MAP, 1);
}

static void
op_rmalloc(struct line *ln)
{
	struct result res = { .coherent = -1 };

	req_init(&res.req, DDIH_OP_RMALLOC);
	if (arg_handle(ln, "map", OBJ_MAP, 0, &res.req.handle) != 0 ||
	    arg_u64(ln, "size", &res.req.arg[0]) != 0 || check_unused(ln) != 0)
		return;
	simple_op(&res, NULL, 0, 1);
}

#if defined(__sun)
/* 1 if LWP `tid' of this process is sleeping (pr_sname 'S' in lwpsinfo). */
static int
thread_sleeping(long tid)
{
	char path[64];
	lwpsinfo_t li;
	ssize_t n;
	int fd;

	(void) snprintf(path, sizeof (path), "/proc/self/lwp/%ld/lwpsinfo",
	    tid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return (0);
	n = read(fd, &li, sizeof (li));
	(void) close(fd);
	return (n == (ssize_t)sizeof (li) && li.pr_sname == 'S');
}
#else
/* 1 if thread `tid' of this process is sleeping ('S' in its stat). */
static int
thread_sleeping(long tid)
{
	char path[64], buf[512], *p;
	ssize_t n;
	int fd;

	(void) snprintf(path, sizeof (path), "/proc/self/task/%ld/stat",
	    tid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return (0);
	n = read(fd, buf, sizeof (buf) - 1);
	(void) close(fd);
	if (n <= 0)
		return (0);
	buf[n] = '\0';
	p = strrchr(buf, ')');		/* the state follows "(comm)" */
	return (p != NULL && p[1] == ' ' && p[2] == 'S');
}
#endif

/*
 * Wait (within the budget) until a new waiter has either returned or gone
 * to sleep in the driver, so that the state printed for its start line is
 * the state after its first allocation attempt.  Linux: /proc/self/task/
 * <tid>/stat; illumos: /proc/self/lwp/<lwpid>/lwpsinfo.  If that cannot be
 * told (no /proc), give up after the budget quietly.
 */
static void
waiter_settle(struct waiter *w)
{
	struct timespec ts;
	long tid;
	int done;

	deadline(&ts, budget_ms * 1000000LL);
	for (;;) {
		(void) pthread_mutex_lock(&mu);
		done = w->done;
		tid = w->tid;
		(void) pthread_mutex_unlock(&mu);
		if (done || (tid != 0 && thread_sleeping(tid)))
			return;
		if (past(&ts))
			return;
		(void) usleep(1000);
	}
}

/* waiter_settle for every background waiter still running. */
static void
waiters_settle_all(void)
{
	size_t i;

	for (i = 0; i < nnames; i++) {
		if (names[i].kind == OBJ_WAITER && names[i].w != NULL)
			waiter_settle(names[i].w);
	}
}

static void
op_rmalloc_wait(struct line *ln)
{
	struct result res = { .coherent = -1 };
	const char *wname = getarg(ln, "waiter");
	struct waiter *w;
	struct name *n;

	req_init(&res.req, DDIH_OP_RMALLOC_WAIT);
	if (arg_handle(ln, "map", OBJ_MAP, 0, &res.req.handle) != 0 ||
	    arg_u64(ln, "size", &res.req.arg[0]) != 0 || check_unused(ln) != 0)
		return;
	if (wname == NULL || strcmp(wname, "-") == 0) {
		simple_op(&res, NULL, 0, 1);
		return;
	}
	if (!valid_name(wname)) {
		protoerr("rmalloc_wait: waiter= must be an object name");
		return;
	}
	n = name_find(wname, OBJ_WAITER);
	if (n != NULL && n->w != NULL) {
		protoerr("rmalloc_wait: waiter %s is already running", wname);
		return;
	}
	w = calloc(1, sizeof (*w));
	if (w == NULL) {
		protoerr("rmalloc_wait: out of memory");
		return;
	}
	w->fd = devfd;
	w->res = res;
	if (pthread_create(&w->th, NULL, waiter_main, w) != 0) {
		free(w);
		protoerr("rmalloc_wait: cannot start a thread");
		return;
	}
	n = name_bind(wname, OBJ_WAITER);
	n->w = w;
	waiter_settle(w);
	/* report the map's counters after the waiter's first attempt */
	req_init(&res.req, DDIH_OP_RMAP_STATE);
	res.req.handle = w->res.req.handle;
	run_budgeted(job_ioctl, &res);
	res.req.kind = DDIH_KIND_OK;
	res.req.valid &= DDIH_V_STATE | DDIH_V_VMEM;
	if (res.rc < 0)
		res.req.valid = 0;
	res.rc = 0;
	print_result_map(&res, res.req.handle);
}

static void
op_join(struct line *ln)
{
	const char *wname = getarg(ln, "waiter");
	struct timespec ts;
	struct name *n;
	struct waiter *w;

	if (check_unused(ln) != 0)
		return;
	if (wname == NULL || (n = name_find(wname, OBJ_WAITER)) == NULL ||
	    n->w == NULL) {
		protoerr("join: waiter=%s is not a running waiter",
		    wname ? wname : "");
		return;
	}
	w = n->w;
	deadline(&ts, budget_ms * 1000000LL);
	(void) pthread_mutex_lock(&mu);
	while (!w->done) {
		if (pthread_cond_timedwait(&cv, &mu, &ts) == ETIMEDOUT &&
		    !w->done)
			hang();
	}
	(void) pthread_mutex_unlock(&mu);
	(void) pthread_join(w->th, NULL);
	print_result_map(&w->res, w->res.req.handle);
	free(w);
	n->w = NULL;
}

static void
op_rmfree(struct line *ln)
{
	struct result res = { .coherent = -1 };

	req_init(&res.req, DDIH_OP_RMFREE);
	if (arg_handle(ln, "map", OBJ_MAP, 0, &res.req.handle) != 0 ||
	    arg_u64(ln, "size", &res.req.arg[0]) != 0 ||
	    arg_u64(ln, "index", &res.req.arg[1]) != 0 ||
	    check_unused(ln) != 0)
		return;
	simple_op(&res, NULL, 0, 1);
}

static void
op_rmfreemap(struct line *ln)
{
	struct result res = { .coherent = -1 };

	req_init(&res.req, DDIH_OP_RMFREEMAP);
	if (arg_handle(ln, "map", OBJ_MAP, 0, &res.req.handle) != 0 ||
	    check_unused(ln) != 0)
		return;
	simple_op(&res, NULL, 0, 0);
}

static void
op_alloc(struct line *ln, uint32_t op)
{
	struct result res = { .coherent = -1 };
	const char *b;

	req_init(&res.req, op);
	if ((b = arg_newname(ln, "buf")) == NULL ||
	    arg_u64(ln, "size", &res.req.arg[0]) != 0 ||
	    arg_u32(ln, "flags", &res.req.flags, 1, 0) != 0 ||
	    check_unused(ln) != 0)
		return;
	simple_op(&res, b, OBJ_BUF, 0);
}

static void
op_umem_free(struct line *ln)
{
	struct result res = { .coherent = -1 };

	req_init(&res.req, DDIH_OP_UMEM_FREE);
	if (arg_handle(ln, "buf", OBJ_BUF, 1, &res.req.handle) != 0 ||
	    check_unused(ln) != 0)
		return;
	simple_op(&res, NULL, 0, 0);
}

static void
op_kmem_free(struct line *ln)
{
	struct result res = { .coherent = -1 };

	req_init(&res.req, DDIH_OP_KMEM_FREE);
	if (arg_handle(ln, "buf", OBJ_BUF, 1, &res.req.handle) != 0 ||
	    arg_u64(ln, "size", &res.req.arg[0]) != 0 ||
	    check_unused(ln) != 0)
		return;
	simple_op(&res, NULL, 0, 0);
}

struct export_job {
	struct result	res;
	uint32_t	prot;		/* PROT_* of ops.py */
	int		shared;
	int		keep;		/* mapping=shared-kept */
	uint64_t	len;
};

/*
 * Mappings an export with mapping=shared-kept left in place: the buffer
 * stays mapped for the steps that follow (umem_free is then refused with
 * EBUSY unless the driver is destructive).  They go at `reset' and exit.
 */
#define	MAXKEPT		256
static struct kept {
	void		*addr;
	uint64_t	len;
} kept[MAXKEPT];
static int nkept;

static void
kept_unmap_all(void)
{
	while (nkept > 0) {
		nkept--;
		(void) ddih_umem_unmap(kept[nkept].addr,
		    (size_t)kept[nkept].len);
	}
}

/*
 * The kernel side of the coherence check (libddih): UMEM_CHECK gives 1 if
 * every byte matches, 0 if not; UMEM_FILL gives 1.  -1 on error.
 */
static int
pattern_ioctl(uint32_t op, uint32_t h, uint64_t off, uint64_t len,
    uint64_t seed)
{
	int rc;

	if (op == DDIH_OP_UMEM_CHECK)
		rc = ddih_kernel_check(devfd, h, off, len, seed);
	else if ((rc = ddih_kernel_fill(devfd, h, off, len, seed)) == 0)
		rc = 1;
	if (rc < 0) {
		(void) fprintf(stderr, "ddictl: coherence ioctl: %s\n",
		    strerror(errno));
		return (-1);
	}
	return (rc);
}

static void
job_export(void *arg)
{
	struct export_job *j = arg;
	struct result *res = &j->res;
	uint64_t maplen, off = (uint64_t)res->req.soff, i;
	int prot, rw;
	volatile uint8_t *p;
	void *addr;

	do_ioctl(devfd, res);
	if (res->rc < 0)
		return;
	/* user space maps len rounded up to pages (MAP_LEN_CAP: see top) */
	maplen = j->len > MAP_LEN_CAP ? DDIH_PAGESIZE :
	    (uint64_t)ddih_round_pages(j->len);
	prot = ddih_prot_to_mmap(j->prot);
	addr = ddih_umem_mmap(devfd, (size_t)maplen, prot,
	    j->shared ? MAP_SHARED : MAP_PRIVATE);
	if (addr == NULL) {
		res->rc = -1;
		res->err = errno;
		return;
	}
	rw = (j->prot & (DDIH_PROT_READ | DDIH_PROT_WRITE)) ==
	    (DDIH_PROT_READ | DDIH_PROT_WRITE);
	if (rw && !(res->req.flags & DDIH_DEVMAP_MAPPING_INVALID)) {
		/* user writes -> kernel reads; kernel writes -> user reads */
		uint64_t s1 = 0x5a, s2 = 0xa7;
		int ok = 1;

		p = addr;
		for (i = 0; i < maplen; i++)
			p[i] = DDIH_PATTERN(s1, i);
		if (pattern_ioctl(DDIH_OP_UMEM_CHECK, res->req.handle, off,
		    maplen, s1) != 1)
			ok = 0;
		if (pattern_ioctl(DDIH_OP_UMEM_FILL, res->req.handle, off,
		    maplen, s2) != 1)
			ok = 0;
		for (i = 0; ok && i < maplen; i++) {
			if (p[i] != DDIH_PATTERN(s2, i))
				ok = 0;
		}
		res->coherent = ok;	/* MAP_PRIVATE: copy-on-write gives 0 */
	}
	if (j->keep && nkept < MAXKEPT) {
		kept[nkept].addr = addr;
		kept[nkept].len = maplen;
		nkept++;
	} else {
		(void) ddih_umem_unmap(addr, (size_t)maplen);
	}
	res->req.kind = DDIH_KIND_OK;
	res->req.valid = 0;
}

static void
op_umem_export(struct line *ln)
{
	struct export_job j;
	const char *mapping;
	uint64_t maplen, setup_twice;
	int given, g2;
	const char *offs;

	(void) memset(&j, 0, sizeof (j));
	j.res.coherent = -1;
	req_init(&j.res.req, DDIH_OP_UMEM_EXPORT);
	if (arg_handle(ln, "buf", OBJ_BUF, 1, &j.res.req.handle) != 0)
		return;
	offs = getarg(ln, "off");
	if (offs != NULL && parse_i64(offs, &j.res.req.soff) != 0) {
		protoerr("umem_export: off=%s is not a signed 64-bit integer",
		    offs);
		return;
	}
	if (arg_u64(ln, "len", &j.len) != 0 ||
	    arg_u64_opt(ln, "maxprot", 0xF, &j.res.req.arg[1], &g2) != 0 ||
	    arg_u32(ln, "flags", &j.res.req.flags, 0, 0) != 0 ||
	    arg_u32(ln, "prot", &j.prot, 0, DDIH_PROT_READ | DDIH_PROT_WRITE)
	    != 0 ||
	    arg_u64_opt(ln, "maplen", 0, &maplen, &given) != 0 ||
	    arg_u64_opt(ln, "setup_twice", 0, &setup_twice, &g2) != 0)
		return;
	mapping = getarg(ln, "mapping");
	if (mapping == NULL || strcmp(mapping, "shared") == 0) {
		j.shared = 1;
	} else if (strcmp(mapping, "shared-kept") == 0) {
		j.shared = 1;
		j.keep = 1;
	} else if (strcmp(mapping, "private") == 0) {
		j.shared = 0;
	} else {
		protoerr("umem_export: mapping= must be shared, shared-kept "
		    "or private");
		return;
	}
	if (setup_twice > 1) {
		protoerr("umem_export: setup_twice= must be 0 or 1");
		return;
	}
	if (check_unused(ln) != 0)
		return;
	j.res.req.arg[0] = j.len;
	j.res.req.arg[2] = maplen;
	j.res.req.arg[3] = setup_twice;
	if (given)
		j.res.req.xflags |= DDIH_XF_MAPLEN;
	run_budgeted(job_export, &j);
	print_result(&j.res);
}

/* ------------------------------------------------------------ main loop */

static void
open_dev(void)
{
	devfd = ddih_open(devpath);
	if (devfd < 0) {
		(void) fprintf(stderr, "ddictl: open %s: %s\n", devpath,
		    strerror(errno));
		exit(2);
	}
}

static void
do_reset(void)
{
	waiters_cancel();
	kept_unmap_all();
	(void) close(devfd);
	nnames = 0;
	open_dev();
}

static void
dispatch(struct line *ln)
{
	const char *op = ln->op;

	if (strcmp(op, "rmallocmap") == 0)
		op_rmallocmap(ln, DDIH_OP_RMALLOCMAP);
	else if (strcmp(op, "rmallocmap_wait") == 0)
		op_rmallocmap(ln, DDIH_OP_RMALLOCMAP_WAIT);
	else if (strcmp(op, "rmalloc") == 0)
		op_rmalloc(ln);
	else if (strcmp(op, "rmalloc_wait") == 0)
		op_rmalloc_wait(ln);
	else if (strcmp(op, "join") == 0)
		op_join(ln);
	else if (strcmp(op, "rmfree") == 0)
		op_rmfree(ln);
	else if (strcmp(op, "rmfreemap") == 0)
		op_rmfreemap(ln);
	else if (strcmp(op, "umem_alloc") == 0)
		op_alloc(ln, DDIH_OP_UMEM_ALLOC);
	else if (strcmp(op, "umem_free") == 0)
		op_umem_free(ln);
	else if (strcmp(op, "umem_export") == 0)
		op_umem_export(ln);
	else if (strcmp(op, "kmem_alloc") == 0)
		op_alloc(ln, DDIH_OP_KMEM_ALLOC);
	else if (strcmp(op, "kmem_zalloc") == 0)
		op_alloc(ln, DDIH_OP_KMEM_ZALLOC);
	else if (strcmp(op, "kmem_free") == 0)
		op_kmem_free(ln);
	else
		protoerr("unknown op '%s'", op);
}

int
main(int argc, char **argv)
{
	struct sigaction sa;
	pthread_condattr_t ca;
	pthread_t worker;
	struct line ln;
	char *buf = NULL;
	size_t bufcap = 0;

	if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
		(void) fprintf(stderr, "usage: ddictl [device]\n");
		return (2);
	}
	if (argc == 2)
		devpath = argv[1];
	else if (getenv("DDIH_DEV") != NULL)
		devpath = getenv("DDIH_DEV");

	(void) memset(&sa, 0, sizeof (sa));
	sa.sa_handler = on_sigusr1;	/* no SA_RESTART: ioctl gets EINTR */
	(void) sigemptyset(&sa.sa_mask);
	(void) sigaction(SIGUSR1, &sa, NULL);

	(void) pthread_condattr_init(&ca);
	(void) pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	(void) pthread_cond_init(&cv, &ca);

	open_dev();
	if (pthread_create(&worker, NULL, worker_main, NULL) != 0) {
		(void) fprintf(stderr, "ddictl: cannot start the worker\n");
		return (2);
	}

	while (lp_next_op(&buf, &bufcap, &ln, do_reset))
		dispatch(&ln);
	(void) fflush(stdout);
	_exit(0);
}
