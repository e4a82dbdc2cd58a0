/*
 * shim.c: a fake illumos kernel, just large enough to run the real
 * usr/src/uts/common/os/vmem.c and rmap.c unmodified in a Linux process.
 *
 * Theory statement
 * ----------------
 * vmem.c and rmap.c are compiled from an illumos-gate checkout with the
 * gate's own kernel headers (-D_KERNEL -nostdinc); nothing of them is
 * copied or edited.  What they need from the rest of the kernel, read off
 * their undefined symbols, and how this file provides it:
 *
 *   mutex_init/enter/exit/destroy, mutex_owned (DEBUG ASSERTs),
 *   mutex_owner (vmem_populate's recursion test): a kmutex_t is one pointer
 *     (sys/mutex.h; shim_kern.c checks the size) and holds the owner's
 *     thread token, NULL when free.  All mutexes and condition variables
 *     share one host lock, `big', and one host condition, `bigcv': entering
 *     waits on bigcv until the owner word is NULL.  Ownership is exact, so
 *     mutex_owned/mutex_owner give the truth and a recursive enter or an
 *     exit by a non-owner panics as illumos does.
 *   cv_init/wait/broadcast/signal/destroy: a kcondvar_t is a ushort
 *     (sys/condvar.h) and is used as a wakeup generation.  cv_wait records
 *     the generation, drops the kmutex, sleeps on bigcv until the
 *     generation moves, then takes the kmutex back.  cv_broadcast bumps the
 *     generation, so every sleeper wakes (vmem_freelist_insert broadcasts
 *     vm_cv on each free: all rmalloc_wait sleepers of the arena retry).
 *     Woken sleepers take their kmutex back in the order they went to
 *     sleep (FIFO, the order illumos's sleep queue wakes them), not in host
 *     scheduling order, so runs are reproducible.  cv_signal does the same
 *     as cv_broadcast; waking more than one is within cv_signal's contract.  vmem.c needs no cv_timedwait, so there is none.
 *   curthread (threadp() without _ASM_INLINES), panic_thread: each host
 *     thread gets a heap-allocated token on first use, never freed, whose
 *     address stands for its kthread_t; the runner uses it to ask whether a
 *     thread is asleep in cv_wait (shim_thread_asleep).
 *   panic, cmn_err, assfail: messages are formatted with the kernel's
 *     printf rules (%p is bare lower-case hex), the console is stderr,
 *     flushed after every message, with stdout flushed before it (the
 *     harness reads both through one pipe, in order).  panic prints
 *     "panic[cpu0]/thread=<hex>: <msg>" and ends the process with _exit(1);
 *     CE_WARN prints "WARNING: <msg>" on its own line, CE_NOTE "NOTICE:",
 *     CE_CONT as is; a leading '!' (or '?') sends the message to the log
 *     only, '^' to the console only.  The log is $GATE_LOG when set
 *     (appended), else nowhere.  A DEBUG build's failed ASSERT reaches
 *     assfail, which panics "assertion failed: <expr>, file: <f>, line: <n>".
 *   A host fault (SIGSEGV, SIGBUS, SIGILL, SIGFPE) is reported as an
 *     illumos trap would be: "BAD TRAP: type=e (#pf Page fault) rp=.. addr=.."
 *     and the matching panic line, written with write(2) from the handler.
 *   segkmem: vmem_init runs for real (shim_kern.c) over a 512 MiB anonymous
 *     host mapping (MAP_NORESERVE, pages appear on first touch) that plays
 *     the kernel heap; vmem's own metadata arenas import from it.
 *   vmem_update is never scheduled: nothing here calls it, and timeout()/
 *     untimeout() are stubs that schedule nothing (they return id 0).  So
 *     hash tables keep their initial size and no periodic broadcast wakes
 *     rmalloc_wait sleepers (on illumos that only adds to `wait').
 *   kmem_cache_create/alloc/free/destroy/reap_soon: only quantum caches
 *     use them, and every arena here has none (rmap arenas qcache_max 0;
 *     vmem_metadata is VMC_NO_QCACHE); they panic if ever reached.
 *     kmem_reap/kmem_reap_idspace (called before a sleep) do nothing.
 *   kstat_create returns NULL (allowed: vmem.c then keeps its counters in
 *     vm_kstat only, which is where the runner reads them); kstat_install
 *     and kstat_delete accept that.
 *   highbit, lowbit, atomic_inc_32_nv, gethrtime (CLOCK_MONOTONIC),
 *     getpcstack (no stack: 0 frames), hz = 100.  bcopy, bzero, snprintf
 *     and sprintf come from glibc (vmem.c only prints "%s" and "%lu" with
 *     them, which both printf dialects agree on).
 *
 * This is original project code.  It sees no kernel header: the few
 * layouts it depends on are checked in shim_kern.c.
 */

#define	_GNU_SOURCE
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "shim.h"

#define	HEAP_SIZE	(512UL << 20)
#define	HEAP_QUANTUM	4096UL

/* ------------------------------------------------------------ threads */

struct shim_thread {
	volatile unsigned short	*cv;	/* the cv it sleeps on, under big */
	unsigned short		gen;	/* the cv generation it waits past */
	int			waiting;
	int			parked;
	int			counted;	/* a background waiter: counts in busy */
	unsigned long		ticket;	/* sleep order, under big */
	struct shim_thread	*next;	/* all threads, never freed */
};

static __thread struct shim_thread *self;
static pthread_mutex_t big = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t bigcv = PTHREAD_COND_INITIALIZER;
static struct shim_thread *threads;	/* under big */
static unsigned long tickets;		/* under big */
/*
 * Background waiters that are running rather than asleep, under big: the
 * runner adds one before it starts a waiter's thread and takes it away when
 * the thread is done; cv_wait takes it away while a counted thread sleeps
 * and cv_broadcast gives it back for each sleeper it wakes.  Zero means
 * nothing but the caller can change the arenas: the runner reads counters
 * only then, so they never depend on host scheduling.
 */
static int busy;

void *panic_thread;
int hz = 100;

void *
threadp(void)
{
	if (self == NULL) {
		self = calloc(1, sizeof (*self));
		if (self == NULL)
			abort();
		(void) pthread_mutex_lock(&big);
		self->next = threads;
		threads = self;
		(void) pthread_mutex_unlock(&big);
	}
	return (self);
}

void *
shim_curthread(void)
{
	return (threadp());
}

int
shim_thread_asleep(void *t)
{
	struct shim_thread *st = t;
	int r;

	(void) pthread_mutex_lock(&big);
	r = st->waiting && *st->cv == st->gen;
	(void) pthread_mutex_unlock(&big);
	return (r);
}

void
shim_busy_add(int n)
{
	(void) pthread_mutex_lock(&big);
	busy += n;
	(void) pthread_cond_broadcast(&bigcv);
	(void) pthread_mutex_unlock(&big);
}

void
shim_thread_counted(int on)
{
	struct shim_thread *st = threadp();

	(void) pthread_mutex_lock(&big);
	st->counted = on;
	(void) pthread_cond_broadcast(&bigcv);	/* one running waiter fewer */
	(void) pthread_mutex_unlock(&big);
}

int
shim_quiescent(void)
{
	int r;

	(void) pthread_mutex_lock(&big);
	r = busy == 0;
	(void) pthread_mutex_unlock(&big);
	return (r);
}

void
shim_thread_park(void *t)
{
	struct shim_thread *st = t;

	(void) pthread_mutex_lock(&big);
	st->parked = 1;
	(void) pthread_cond_broadcast(&bigcv);
	(void) pthread_mutex_unlock(&big);
}

/* ------------------------------------------------------------ console */

static int quiet;
static pthread_mutex_t conslock = PTHREAD_MUTEX_INITIALIZER;

void
shim_console_quiet(int on)
{
	quiet = on;
}

/*
 * vsnprintf with the kernel's conversions: %p prints bare lower-case hex;
 * the rest (d i u x X o c s %, flags, width, precision, h hh l ll z j t)
 * is handed to the host printf one conversion at a time.
 */
static void
kvsnprintf(char *buf, size_t len, const char *fmt, va_list ap)
{
	size_t n = 0;

#define	ROOM	(n < len ? len - n : 0)
#define	BUMP(x)	do { int _r = (x); if (_r > 0) n += (size_t)_r; } while (0)
	while (*fmt != '\0') {
		char spec[32], conv;
		const char *start = fmt;
		int lng = 0, width = 0, prec = 0, sl;

		if (*fmt != '%') {
			if (n + 1 < len)
				buf[n] = *fmt;
			n++;
			fmt++;
			continue;
		}
		fmt++;
		while (*fmt != '\0' && strchr("-+ #0", *fmt) != NULL)
			fmt++;
		if (*fmt == '*') {
			width = 1;
			fmt++;
		} else {
			while (*fmt >= '0' && *fmt <= '9')
				fmt++;
		}
		if (*fmt == '.') {
			fmt++;
			if (*fmt == '*') {
				prec = 1;
				fmt++;
			} else {
				while (*fmt >= '0' && *fmt <= '9')
					fmt++;
			}
		}
		while (*fmt != '\0' && strchr("hlzjt", *fmt) != NULL) {
			if (*fmt == 'l' || *fmt == 'z' || *fmt == 'j' ||
			    *fmt == 't')
				lng++;
			fmt++;
		}
		conv = *fmt;
		if (conv == '\0')
			break;
		fmt++;
		sl = (int)(fmt - start);
		if (sl >= (int)sizeof (spec))
			sl = sizeof (spec) - 1;
		(void) memcpy(spec, start, (size_t)sl);
		spec[sl] = '\0';
		if (conv == 'p') {
			/* kernel %p: bare hex; keep flags/width, drop length */
			BUMP(snprintf(buf + n, ROOM, "%lx",
			    (unsigned long)(uintptr_t)va_arg(ap, void *)));
			continue;
		}
		if (conv == '%') {
			BUMP(snprintf(buf + n, ROOM, "%%"));
			continue;
		}
		{
			int w = width ? va_arg(ap, int) : 0;
			int p = prec ? va_arg(ap, int) : 0;

#define	EMIT(v)	do {							\
			if (width && prec)				\
				BUMP(snprintf(buf + n, ROOM, spec, w, p, v)); \
			else if (width)					\
				BUMP(snprintf(buf + n, ROOM, spec, w, v)); \
			else if (prec)					\
				BUMP(snprintf(buf + n, ROOM, spec, p, v)); \
			else						\
				BUMP(snprintf(buf + n, ROOM, spec, v));	\
		} while (0)
			switch (conv) {
			case 's':
				EMIT(va_arg(ap, const char *));
				break;
			case 'c':
				EMIT(va_arg(ap, int));
				break;
			case 'd': case 'i': case 'u': case 'x': case 'X':
			case 'o':
				if (lng >= 2)
					EMIT(va_arg(ap, long long));
				else if (lng == 1)
					EMIT(va_arg(ap, long));
				else
					EMIT(va_arg(ap, int));
				break;
			default:	/* unknown: print it literally */
				BUMP(snprintf(buf + n, ROOM, "%s", spec));
				break;
			}
#undef EMIT
		}
	}
	if (len > 0)
		buf[n < len ? n : len - 1] = '\0';
#undef ROOM
#undef BUMP
}

static void
to_log(const char *prefix, const char *msg)
{
	const char *path = getenv("GATE_LOG");
	FILE *f;

	if (path == NULL || (f = fopen(path, "a")) == NULL)
		return;
	(void) fprintf(f, "%s%s\n", prefix, msg);
	(void) fclose(f);
}

void
vpanic(const char *fmt, va_list ap)
{
	static pthread_mutex_t once = PTHREAD_MUTEX_INITIALIZER;
	char msg[1024];

	(void) pthread_mutex_lock(&once);	/* the first panic wins */
	panic_thread = threadp();
	kvsnprintf(msg, sizeof (msg), fmt, ap);
	(void) fflush(stdout);			/* results before the panic */
	(void) pthread_mutex_lock(&conslock);
	(void) fprintf(stderr, "\npanic[cpu0]/thread=%lx: %s\n\n",
	    (unsigned long)(uintptr_t)panic_thread, msg);
	(void) fflush(stderr);
	to_log("panic: ", msg);
	_exit(1);
}

void
panic(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vpanic(fmt, ap);
	va_end(ap);
}

void
vcmn_err(int ce, const char *fmt, va_list ap)
{
	static const char *prefix[] = { "", "NOTICE: ", "WARNING: " };
	char msg[1024];
	int console = 1, log = 1;

	if (ce == 3) {			/* CE_PANIC */
		vpanic(fmt, ap);
		return;
	}
	if (ce < 0 || ce > 2)		/* CE_IGNORE */
		return;
	if (*fmt == '!' || *fmt == '?') {
		console = 0;
		fmt++;
	} else if (*fmt == '^') {
		log = 0;
		fmt++;
	}
	kvsnprintf(msg, sizeof (msg), fmt, ap);
	if (log)
		to_log(prefix[ce], msg);
	if (!console || quiet)
		return;
	/*
	 * The results of the ops before this message go out first: the harness
	 * reads stdout and stderr through one pipe, so the order it sees is the
	 * order things happened in, and a message belongs to the op whose result
	 * line follows it.
	 */
	(void) fflush(stdout);
	(void) pthread_mutex_lock(&conslock);
	if (ce == 0)
		(void) fputs(msg, stderr);
	else
		(void) fprintf(stderr, "%s%s\n", prefix[ce], msg);
	(void) fflush(stderr);
	(void) pthread_mutex_unlock(&conslock);
}

void
cmn_err(int ce, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vcmn_err(ce, fmt, ap);
	va_end(ap);
}

void
assfail(const char *a, const char *f, int l)
{
	panic("assertion failed: %s, file: %s, line: %d", a, f, l);
}

/* ------------------------------------------------------------ mutexes */

struct kmutex {
	void	*owner;
};

void
mutex_init(void *mp, char *name, int type, void *arg)
{
	(void) name;
	(void) type;
	(void) arg;
	((struct kmutex *)mp)->owner = NULL;
}

void
mutex_destroy(void *mp)
{
	struct kmutex *m = mp;

	if (m->owner != NULL)
		panic("mutex_destroy: mutex held, lp=%p owner=%p thread=%p",
		    mp, m->owner, threadp());
}

void
mutex_enter(void *mp)
{
	struct kmutex *m = mp;
	void *me = threadp();

	(void) pthread_mutex_lock(&big);
	if (m->owner == me) {
		(void) pthread_mutex_unlock(&big);
		panic("recursive mutex_enter, lp=%p owner=%p thread=%p",
		    mp, me, me);
	}
	while (m->owner != NULL)
		(void) pthread_cond_wait(&bigcv, &big);
	m->owner = me;
	(void) pthread_mutex_unlock(&big);
}

static void
release(struct kmutex *m)	/* under big */
{
	void *me = threadp();

	if (m->owner != me) {
		(void) pthread_mutex_unlock(&big);
		panic("mutex_exit: not owner, lp=%p owner=%p thread=%p",
		    (void *)m, m->owner, me);
	}
	m->owner = NULL;
	(void) pthread_cond_broadcast(&bigcv);
}

void
mutex_exit(void *mp)
{
	(void) pthread_mutex_lock(&big);
	release(mp);
	(void) pthread_mutex_unlock(&big);
}

int
mutex_owned(const void *mp)
{
	return (((const struct kmutex *)mp)->owner == threadp());
}

void *
mutex_owner(const void *mp)
{
	return (((const struct kmutex *)mp)->owner);
}

/* ------------------------------------------------------------ cvs */

void
cv_init(void *cv, char *name, int type, void *arg)
{
	(void) name;
	(void) type;
	(void) arg;
	*(volatile unsigned short *)cv = 0;
}

void
cv_destroy(void *cv)
{
	(void) cv;
}

void
cv_broadcast(void *cv)
{
	struct shim_thread *t;

	(void) pthread_mutex_lock(&big);
	for (t = threads; t != NULL; t = t->next) {
		/* each counted sleeper on this cv runs again: it is busy until it sleeps or returns */
		if (t->waiting && t->counted && !t->parked && t->cv == cv && *t->cv == t->gen)
			busy++;
	}
	(*(volatile unsigned short *)cv)++;
	(void) pthread_cond_broadcast(&bigcv);
	(void) pthread_mutex_unlock(&big);
}

void
cv_signal(void *cv)
{
	cv_broadcast(cv);
}

/*
 * Whether a thread woken earlier than st (it went to sleep first) has yet
 * to take its mutex back: woken sleepers re-enter in sleep order (FIFO, as
 * illumos's sleep queue wakes them), not in host scheduling order.
 */
static int
earlier_waking(const struct shim_thread *st)
{
	const struct shim_thread *t;

	for (t = threads; t != NULL; t = t->next) {
		if (t != st && t->waiting && !t->parked && *t->cv != t->gen &&
		    t->ticket < st->ticket)
			return (1);
	}
	return (0);
}

/*
 * Whether another background waiter is running (not in cv_wait): a woken
 * sleeper waits for it to sleep again or return.  vmem_xalloc drops the
 * arena lock around kmem_reap() on its way back to sleep; without this, a
 * woken sleeper could slip into that window, and whether the retrying
 * thread then sees its broadcast would depend on host scheduling.  So woken
 * sleepers run one at a time, each to the end of its attempt.
 */
static int
other_running(const struct shim_thread *st)
{
	const struct shim_thread *t;

	for (t = threads; t != NULL; t = t->next) {
		if (t != st && t->counted && !t->waiting)
			return (1);
	}
	return (0);
}

void
cv_wait(void *cv, void *mp)
{
	struct shim_thread *st = threadp();
	struct kmutex *m = mp;

	(void) pthread_mutex_lock(&big);
	release(m);
	st->cv = cv;
	st->gen = *st->cv;
	st->waiting = 1;
	st->ticket = ++tickets;
	if (st->counted)
		busy--;
	while (*st->cv == st->gen || st->parked) {
		if (st->parked)
			st->cv = &st->gen;	/* never touch the arena again */
		(void) pthread_cond_wait(&bigcv, &big);
	}
	while (m->owner != NULL || earlier_waking(st) || other_running(st))
		(void) pthread_cond_wait(&bigcv, &big);
	st->waiting = 0;
	m->owner = st;
	(void) pthread_cond_broadcast(&bigcv);	/* the next woken one */
	(void) pthread_mutex_unlock(&big);
}

/* ------------------------------------------------------------ the rest */

int
highbit(unsigned long i)
{
	return (i == 0 ? 0 : 64 - __builtin_clzl(i));
}

int
lowbit(unsigned long i)
{
	return (i == 0 ? 0 : __builtin_ctzl(i) + 1);
}

uint32_t
atomic_inc_32_nv(volatile uint32_t *p)
{
	return (__atomic_add_fetch(p, 1, __ATOMIC_SEQ_CST));
}

long long
gethrtime(void)
{
	struct timespec ts;

	(void) clock_gettime(CLOCK_MONOTONIC, &ts);
	return ((long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
}

int
getpcstack(uintptr_t *pcstack, int limit)
{
	(void) pcstack;
	(void) limit;
	return (0);
}

/* No callouts: vmem_update (the only caller) is never started. */
void *
timeout(void (*func)(void *), void *arg, long ticks)
{
	(void) func;
	(void) arg;
	(void) ticks;
	return (NULL);
}

long
untimeout(void *id)
{
	(void) id;
	return (-1);
}

void
kmem_reap(void)
{
}

void
kmem_reap_idspace(void)
{
}

/* Quantum caches only; no arena here has one. */
void *
kmem_cache_create(char *name, size_t a, size_t b, void *c, void *d,
    void *e, void *f, void *g, int h)
{
	(void) a; (void) b; (void) c; (void) d; (void) e; (void) f;
	(void) g; (void) h;
	panic("gate shim: kmem_cache_create(%s): no kmem caches", name);
	return (NULL);
}

void *
kmem_cache_alloc(void *cp, int flags)
{
	(void) flags;
	panic("gate shim: kmem_cache_alloc(%p): no kmem caches", cp);
	return (NULL);
}

void
kmem_cache_free(void *cp, void *buf)
{
	(void) buf;
	panic("gate shim: kmem_cache_free(%p): no kmem caches", cp);
}

void
kmem_cache_destroy(void *cp)
{
	panic("gate shim: kmem_cache_destroy(%p): no kmem caches", cp);
}

void
kmem_cache_reap_soon(void *cp)
{
	(void) cp;
}

void *
kstat_create(const char *module, int inst, const char *name,
    const char *class, unsigned char type, unsigned int ndata,
    unsigned char flags)
{
	(void) module; (void) inst; (void) name; (void) class;
	(void) type; (void) ndata; (void) flags;
	return (NULL);
}

void
kstat_install(void *ksp)
{
	(void) ksp;
}

void
kstat_delete(void *ksp)
{
	(void) ksp;
}

/* ------------------------------------------------------------ traps */

static size_t
hex(char *p, unsigned long v)
{
	char tmp[17];
	size_t n = 0, i;

	do {
		tmp[n++] = "0123456789abcdef"[v & 0xf];
		v >>= 4;
	} while (v != 0);
	for (i = 0; i < n; i++)
		p[i] = tmp[n - 1 - i];
	return (n);
}

static void
on_trap(int sig, siginfo_t *si, void *uc)
{
	const char *what;
	char line[256];
	size_t n = 0, m;
	unsigned long thr = (unsigned long)(uintptr_t)self;

	(void) uc;
	switch (sig) {
	case SIGILL: what = "type=6 (#ud Invalid opcode)"; break;
	case SIGFPE: what = "type=0 (#de Divide error)"; break;
	default: what = "type=e (#pf Page fault)"; break;
	}
#define	PUT(s)	do { m = strlen(s); (void) memcpy(line + n, s, m); n += m; } \
	while (0)
	PUT("\nBAD TRAP: ");
	PUT(what);
	PUT(" rp=");
	n += hex(line + n, (unsigned long)(uintptr_t)uc);
	PUT(" addr=");
	n += hex(line + n, (unsigned long)(uintptr_t)si->si_addr);
	PUT("\n");
	(void) write(2, line, n);
	n = 0;
	PUT("\npanic[cpu0]/thread=");
	n += hex(line + n, thr);
	PUT(": BAD TRAP: ");
	PUT(what);
	PUT(" rp=");
	n += hex(line + n, (unsigned long)(uintptr_t)uc);
	PUT(" addr=");
	n += hex(line + n, (unsigned long)(uintptr_t)si->si_addr);
	PUT("\n\n");
#undef PUT
	(void) write(2, line, n);
	_exit(1);
}

/* ------------------------------------------------------------ boot */

void
shim_boot(void)
{
	static const int sigs[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE };
	struct sigaction sa;
	void *heap;
	size_t i;

	shim_layout_check();
	(void) memset(&sa, 0, sizeof (sa));
	sa.sa_sigaction = on_trap;
	sa.sa_flags = SA_SIGINFO;
	(void) sigemptyset(&sa.sa_mask);
	for (i = 0; i < sizeof (sigs) / sizeof (sigs[0]); i++)
		(void) sigaction(sigs[i], &sa, NULL);

	heap = mmap(NULL, HEAP_SIZE, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (heap == MAP_FAILED) {
		perror("gate shim: mmap of the kernel heap");
		exit(2);
	}
	(void) threadp();
	shim_vmem_boot(heap, HEAP_SIZE, HEAP_QUANTUM);
}
