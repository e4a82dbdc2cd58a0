/*
 * gatectl: the op runner of the illumos-gate target.
 *
 * It speaks guest/ddictl's line protocol (kmod/README.md) for the
 * resource-map ops, but instead of going through the ddih driver it calls
 * the real illumos rmap.c/vmem.c, compiled unmodified from a gate checkout
 * and linked in with the fake kernel of shim.c.  Results are printed as
 * kmod/illumos/ddih.c reports them in destructive mode (no guards: misuse
 * reaches vmem and panics there):
 *
 *   rmallocmap, rmallocmap_wait   kind=ok + counters, or kind=null
 *   rmalloc, rmalloc_wait         kind=value value=N + counters
 *   rmalloc_wait ... waiter=w     kind=ok + counters after its first try
 *   join waiter=w                 the waiter's kind=value line, with the
 *                                 counters read when its call returned
 *   rmfree                        kind=ok + counters
 *   rmfreemap                     kind=ok (the arena is gone: no counters)
 *
 * where the counters are " mem_total=N mem_inuse=N alloc=N free=N fail=N
 * wait=N contains=N", the arena's vmem kstat read from vm_kstat.
 *
 * Layout: after the control line `layout=on' (until `layout=off'; reset
 * keeps it; default off) every result line above except rmfreemap's, when
 * its map is alive, ends with the arena's whole layout, as ddictl prints
 * it from RMAP_LAYOUT (kmod/ddih_ioctl.h, struct ddih_seg):
 *
 *   layout=<total>:<seg>,<seg>,...   (at most 64 listed; `layout=0:' when
 *                                     the arena has no segment)
 *   <seg> = <type>:<start>+<size>, type s (span), a (allocated) or f<k>
 *           (free, on vmem freelist k = highbit(size) - 1), numbers in
 *           decimal map units, size = end - start mod 2^64
 *
 * in the order of the arena list (vm_seg0, vs_anext), read under vm_lock
 * when the line is printed (for join: when the join line is printed).
 *
 * Differences from ddictl, all because there is no driver in between:
 *   - a map name that was freed (rmfreemap) or whose creation returned
 *     NULL gives kind=error errno=EBADF, as the driver's handle lookup does;
 *   - umem_* and kmem_* ops are not part of this target: kind=error
 *     errno=ENOTSUP with an explanation on stderr;
 *   - hangs are recognised at once rather than after the budget: a
 *     foreground rmalloc_wait (or a join) whose thread is asleep in cv_wait
 *     cannot be woken by anyone (only this runner's main thread frees, and
 *     vmem_update's periodic broadcast is not running), so kind=hang and
 *     exit 3 follow as soon as the thread is seen asleep.  The budget still
 *     bounds everything else (a thread stuck on a mutex, say);
 *   - after every op, background waiters are let settle (each has returned
 *     or is asleep in cv_wait again) before the counters are read, so the
 *     numbers do not depend on thread scheduling;
 *   - reset parks every waiter still asleep (it stays asleep for good and
 *     never touches its arena again), destroys every live map with the
 *     console quiet (no "leaked" warnings between traces) and forgets all
 *     names.  vmem itself is booted once per process.
 *   - a panic prints "panic[cpu0]/thread=...: <msg>" on stderr (the
 *     console) and exits with status 1; no result line is printed for the
 *     op that panicked.
 *
 * Usage: gatectl < ops     (build: kmod/gate/Makefile)
 */

#define	_GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

/* guest/lineproto.h: the line protocol code shared with ddictl */
#define	LINEPROTO_PROG	"gatectl"
#include "lineproto.h"		/* -I../../guest (kmod/gate/Makefile) */

#define	POLL_NS		100000L		/* 100 us */

#define	LAYOUT_MAX	64		/* segments listed (DDIH_LAYOUT_MAX) */
#define	LINE_MAX_	4096

/* ------------------------------------------------------------ output */

/* One op's result, as ddictl prints it. */
struct result {
	const char		*kind;		/* value null ok error */
	unsigned long		value;
	const char		*err;
	int			has_ctr;
	unsigned long long	ctr[SHIM_NCTR];
};

/* Append " layout=<total>:<seg>,..." for the live arena map. */
static size_t
add_layout(char *line, size_t cap, size_t n, void *map)
{
	struct shim_seg segs[LAYOUT_MAX];
	size_t total, i, k;

	total = shim_vmem_layout(map, segs, LAYOUT_MAX);
	k = total < LAYOUT_MAX ? total : LAYOUT_MAX;
	n = lp_layout_total(line, cap, n, total);
	for (i = 0; i < k && n < cap; i++) {
		n = lp_layout_seg(line, cap, n, i, segs[i].type,
		    segs[i].type == 'f' ? segs[i].flist : -1, segs[i].start,
		    segs[i].size);
	}
	return (n);
}

/* Print a result line; with layout on, map (if not NULL) adds its layout. */
static void
print_result_map(const struct result *r, void *map)
{
	char line[LINE_MAX_];
	size_t n = 0;

#define	ADD(...)	(n += (size_t)snprintf(line + n, sizeof (line) - n, \
			    __VA_ARGS__))
	ADD("kind=%s", r->kind);
	if (strcmp(r->kind, "value") == 0)
		ADD(" value=%lu", r->value);
	if (r->err != NULL)
		ADD(" errno=%s", r->err);
	if (r->has_ctr)
		ADD(" mem_total=%llu mem_inuse=%llu alloc=%llu free=%llu "
		    "fail=%llu wait=%llu contains=%llu", r->ctr[0], r->ctr[1],
		    r->ctr[2], r->ctr[3], r->ctr[4], r->ctr[5], r->ctr[6]);
#undef ADD
	if (layout_on && map != NULL && n < sizeof (line))
		n = add_layout(line, sizeof (line), n, map);
	emit("%s", line);
}

static void
counters(struct result *r, void *map)
{
	shim_vmem_counters(map, r->ctr);
	r->has_ctr = 1;
}

/* ------------------------------------------------------------ names */

enum objkind { OBJ_MAP = 1, OBJ_WAITER };

struct waiter {
	pthread_t	th;
	void		*map;
	size_t		size;
	void		*tok;		/* its kthread token; under mu */
	int		done;		/* under mu */
	int		map_gone;	/* its map was rmfreemap'd */
	struct result	res;
};

struct name {
	char		name[NAMELEN + 1];
	enum objkind	kind;
	void		*map;		/* OBJ_MAP; NULL: freed or never made */
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
			perror("gatectl: realloc");
			exit(2);
		}
	}
	n = &names[nnames++];
	(void) memset(n, 0, sizeof (*n));
	(void) snprintf(n->name, sizeof (n->name), "%s", s);
	n->kind = kind;
	return (n);
}

/* ------------------------------------------------------------ threads */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv;		/* CLOCK_MONOTONIC */
static void (*job_fn)(void *);
static void *job_arg;
static int job_pending, job_done;
static void *worker_tok;

static void *
worker_main(void *unused)
{
	(void) unused;
	(void) pthread_mutex_lock(&mu);
	worker_tok = shim_curthread();
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

/*
 * Run fn(arg) on the worker.  Under mu on return.  A worker asleep in
 * cv_wait, or one past the budget, is a hang.
 */
static void
run_budgeted(void (*fn)(void *), void *arg)
{
	struct timespec end, ts;

	deadline(&end, budget_ms * 1000000L);
	(void) pthread_mutex_lock(&mu);
	job_fn = fn;
	job_arg = arg;
	job_done = 0;
	job_pending = 1;
	(void) pthread_cond_broadcast(&cv);
	while (!job_done) {
		deadline(&ts, POLL_NS);
		(void) pthread_cond_timedwait(&cv, &mu, &ts);
		if (job_done)
			break;
		if (shim_thread_asleep(worker_tok) || past(&end))
			hang();
	}
	(void) pthread_mutex_unlock(&mu);
}

static void *
waiter_main(void *arg)
{
	struct waiter *w = arg;
	unsigned long v;

	shim_thread_counted(1);
	(void) pthread_mutex_lock(&mu);
	w->tok = shim_curthread();
	(void) pthread_mutex_unlock(&mu);
	v = rmalloc_wait(w->map, w->size);
	w->res.kind = "value";
	w->res.value = v;
	counters(&w->res, w->map);	/* ddih.c reads them on return */
	shim_thread_counted(0);
	shim_busy_add(-1);
	(void) pthread_mutex_lock(&mu);
	w->done = 1;
	(void) pthread_cond_broadcast(&cv);
	(void) pthread_mutex_unlock(&mu);
	return (NULL);
}

/* Whether w has returned or sleeps in cv_wait (call under mu). */
static int
settled(struct waiter *w)
{
	return (w->done || (w->tok != NULL && shim_thread_asleep(w->tok)));
}

/*
 * Wait (within the budget) until every background waiter has settled: none
 * is running (each has returned or sleeps in cv_wait).  The shim counts the
 * running ones atomically with every sleep and wakeup, so a waiter woken by
 * another's broadcast is never missed.
 */
static void
settle_all(void)
{
	struct timespec end, ts;

	deadline(&end, budget_ms * 1000000L);
	(void) pthread_mutex_lock(&mu);
	while (!shim_quiescent() && !past(&end)) {
		deadline(&ts, POLL_NS);
		(void) pthread_cond_timedwait(&cv, &mu, &ts);
	}
	(void) pthread_mutex_unlock(&mu);
}

/* ------------------------------------------------------------ parsing */

/*
 * The map= argument.  0: *mapp is the live arena; 1: the name is known but
 * has no arena (kind=error errno=EBADF printed); -1: protocol error.
 */
static int
arg_map(struct line *ln, void **mapp)
{
	const char *v = getarg(ln, "map");
	struct name *n;

	if (v == NULL) {
		protoerr("%s: missing map=", ln->op);
		return (-1);
	}
	if ((n = name_find(v, OBJ_MAP)) == NULL) {
		protoerr("%s: map=%s is not defined", ln->op, v);
		return (-1);
	}
	*mapp = n->map;
	return (0);
}

static int
no_map(void *map)
{
	if (map != NULL)
		return (0);
	emit("kind=error errno=EBADF");
	return (1);
}

/* ------------------------------------------------------------ ops */

struct call {
	int		op;
	void		*map;
	uint64_t	a, b;
	struct result	res;
};

enum { C_MAP, C_MAP_WAIT, C_ALLOC, C_ALLOC_WAIT, C_FREE, C_FREEMAP };

static void
job_call(void *arg)
{
	struct call *c = arg;

	switch (c->op) {
	case C_MAP:
		c->map = rmallocmap((size_t)c->a);
		break;
	case C_MAP_WAIT:
		c->map = rmallocmap_wait((size_t)c->a);
		break;
	case C_ALLOC:
		c->res.value = rmalloc(c->map, (size_t)c->a);
		break;
	case C_ALLOC_WAIT:
		c->res.value = rmalloc_wait(c->map, (size_t)c->a);
		break;
	case C_FREE:
		rmfree(c->map, (size_t)c->a, (unsigned long)c->b);
		break;
	case C_FREEMAP:
		rmfreemap(c->map);
		break;
	}
}

/* Call, let waiters settle, print (with the arena's counters if ctr). */
static void
call_print(struct call *c, const char *kind, int ctr)
{
	run_budgeted(job_call, c);
	settle_all();
	c->res.kind = kind;
	if (ctr && c->map != NULL)
		counters(&c->res, c->map);
	print_result_map(&c->res, ctr ? c->map : NULL);
}

static void
op_rmallocmap(struct line *ln, int op)
{
	struct call c = { .op = op };
	const char *m = getarg(ln, "map");
	struct name *n;

	if (m == NULL || !valid_name(m)) {
		protoerr("%s: map= must be an object name", ln->op);
		return;
	}
	if (arg_u64(ln, "mapsize", &c.a) != 0 || check_unused(ln) != 0)
		return;
	run_budgeted(job_call, &c);
	settle_all();
	c.res.kind = c.map != NULL ? "ok" : "null";
	if (c.map != NULL)
		counters(&c.res, c.map);
	print_result_map(&c.res, c.map);
	n = name_bind(m, OBJ_MAP);
	n->map = c.map;
}

static void
op_rmalloc(struct line *ln)
{
	struct call c = { .op = C_ALLOC };

	if (arg_map(ln, &c.map) != 0 || arg_u64(ln, "size", &c.a) != 0 ||
	    check_unused(ln) != 0 || no_map(c.map))
		return;
	call_print(&c, "value", 1);
}

static void
op_rmalloc_wait(struct line *ln)
{
	struct call c = { .op = C_ALLOC_WAIT };
	const char *wname = getarg(ln, "waiter");
	struct waiter *w;
	struct name *n;
	struct result res = { .kind = "ok" };

	if (arg_map(ln, &c.map) != 0 || arg_u64(ln, "size", &c.a) != 0 ||
	    check_unused(ln) != 0 || no_map(c.map))
		return;
	if (wname == NULL || strcmp(wname, "-") == 0) {
		call_print(&c, "value", 1);
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
	if ((w = calloc(1, sizeof (*w))) == NULL) {
		protoerr("rmalloc_wait: out of memory");
		return;
	}
	w->map = c.map;
	w->size = (size_t)c.a;
	shim_busy_add(1);	/* running until it sleeps or returns */
	if (pthread_create(&w->th, NULL, waiter_main, w) != 0) {
		shim_busy_add(-1);
		free(w);
		protoerr("rmalloc_wait: cannot start a thread");
		return;
	}
	n = name_bind(wname, OBJ_WAITER);
	n->w = w;
	settle_all();
	counters(&res, c.map);	/* after the waiter's first attempt */
	print_result_map(&res, c.map);
}

static void
op_join(struct line *ln)
{
	const char *wname = getarg(ln, "waiter");
	struct timespec end, ts;
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
	deadline(&end, budget_ms * 1000000L);
	(void) pthread_mutex_lock(&mu);
	while (!w->done) {
		if (settled(w) || past(&end))
			hang();		/* asleep: nobody can wake it now */
		deadline(&ts, POLL_NS);
		(void) pthread_cond_timedwait(&cv, &mu, &ts);
	}
	(void) pthread_mutex_unlock(&mu);
	(void) pthread_join(w->th, NULL);
	print_result_map(&w->res, w->map_gone ? NULL : w->map);
	free(w);
	n->w = NULL;
}

static void
op_rmfree(struct line *ln)
{
	struct call c = { .op = C_FREE };

	if (arg_map(ln, &c.map) != 0 || arg_u64(ln, "size", &c.a) != 0 ||
	    arg_u64(ln, "index", &c.b) != 0 || check_unused(ln) != 0 ||
	    no_map(c.map))
		return;
	call_print(&c, "ok", 1);
}

static void
op_rmfreemap(struct line *ln)
{
	struct call c = { .op = C_FREEMAP };
	const char *m = getarg(ln, "map");
	size_t i;

	if (arg_map(ln, &c.map) != 0 || check_unused(ln) != 0 ||
	    no_map(c.map))
		return;
	name_find(m, OBJ_MAP)->map = NULL;
	for (i = 0; i < nnames; i++) {	/* its waiters' joins: no layout */
		if (names[i].kind == OBJ_WAITER && names[i].w != NULL &&
		    names[i].w->map == c.map)
			names[i].w->map_gone = 1;
	}
	call_print(&c, "ok", 0);
}

static void
op_unsupported(struct line *ln)
{
	(void) fprintf(stderr, "gatectl: %s: the illumos-gate target runs "
	    "only the resource-map routines (rmap.c over vmem.c); %s is not "
	    "built in\n", ln->op, ln->op);
	(void) fflush(stderr);
	emit("kind=error errno=ENOTSUP");
}

/* ------------------------------------------------------------ main loop */

static void
do_reset(void)
{
	size_t i;

	settle_all();
	(void) pthread_mutex_lock(&mu);
	for (i = 0; i < nnames; i++) {
		struct waiter *w = names[i].w;

		if (names[i].kind != OBJ_WAITER || w == NULL)
			continue;
		if (w->done) {
			(void) pthread_mutex_unlock(&mu);
			(void) pthread_join(w->th, NULL);
			(void) pthread_mutex_lock(&mu);
			free(w);
		} else if (w->tok != NULL) {
			/* asleep in cv_wait: it stays asleep, off its arena */
			shim_thread_park(w->tok);
			(void) pthread_detach(w->th);
		} else {
			(void) pthread_mutex_unlock(&mu);
			hang();		/* neither returned nor asleep */
		}
		names[i].w = NULL;
	}
	(void) pthread_mutex_unlock(&mu);
	shim_console_quiet(1);
	for (i = 0; i < nnames; i++) {
		struct name *n = &names[i];
		size_t j;

		if (n->kind != OBJ_MAP || n->map == NULL)
			continue;
		for (j = 0; j < i; j++) {	/* a map bound to two names */
			if (names[j].kind == OBJ_MAP && names[j].map == n->map)
				break;
		}
		if (j == i)
			rmfreemap(n->map);
		n->map = NULL;
	}
	shim_console_quiet(0);
	nnames = 0;
}

static void
dispatch(struct line *ln)
{
	const char *op = ln->op;

	if (strcmp(op, "rmallocmap") == 0)
		op_rmallocmap(ln, C_MAP);
	else if (strcmp(op, "rmallocmap_wait") == 0)
		op_rmallocmap(ln, C_MAP_WAIT);
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
	else if (strncmp(op, "umem_", 5) == 0 || strncmp(op, "kmem_", 5) == 0)
		op_unsupported(ln);
	else
		protoerr("unknown op '%s'", op);
}

int
main(int argc, char **argv)
{
	pthread_condattr_t ca;
	pthread_t worker;
	struct line ln;
	char *buf = NULL;
	size_t bufcap = 0;

	(void) argv;
	if (argc > 1) {
		(void) fprintf(stderr, "usage: gatectl < ops\n");
		return (2);
	}
	(void) pthread_condattr_init(&ca);
	(void) pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	(void) pthread_cond_init(&cv, &ca);

	shim_boot();
	if (pthread_create(&worker, NULL, worker_main, NULL) != 0) {
		(void) fprintf(stderr, "gatectl: cannot start the worker\n");
		return (2);
	}
	(void) pthread_mutex_lock(&mu);
	while (worker_tok == NULL) {
		(void) pthread_mutex_unlock(&mu);
		(void) usleep(100);
		(void) pthread_mutex_lock(&mu);
	}
	(void) pthread_mutex_unlock(&mu);

	while (lp_next_op(&buf, &bufcap, &ln, do_reset))
		dispatch(&ln);
	(void) fflush(stdout);
	_exit(0);
}
