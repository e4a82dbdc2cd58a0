/*
 * shim.h: the private interface of the gate runner's fake kernel.
 *
 * Three translation units meet here:
 *   shim.c       the fake kernel proper, built with glibc (pthreads, stdio);
 *   shim_kern.c  the few lines that must see real illumos kernel structures
 *                (vmem_t, vmem_kstat_t, kmutex_t), built with the gate's
 *                kernel headers like vmem.c and rmap.c;
 *   gatectl.c    the line-protocol runner, built with glibc.
 * Only plain C types cross this interface, so both header worlds can
 * include it.  The rmap entry points are the real ones from
 * usr/src/uts/common/os/rmap.c, declared here with their C types.
 * (This file is original project code; it copies nothing from illumos.)
 */

#ifndef	GATE_SHIM_H
#define	GATE_SHIM_H

#include <stddef.h>

/* usr/src/uts/common/os/rmap.c (ulong_t is unsigned long on LP64) */
void *rmallocmap(size_t);
void *rmallocmap_wait(size_t);
void rmfreemap(void *);
unsigned long rmalloc(void *, size_t);
unsigned long rmalloc_wait(void *, size_t);
void rmfree(void *, size_t, unsigned long);

/* The seven vmem kstat counters, in ddictl's order. */
#define	SHIM_NCTR	7

/*
 * One segment of an arena's layout (shim_vmem_layout), in the map's units:
 * type 's' (span), 'a' (allocated) or 'f' (free, with flist = the vmem
 * freelist it is on, highbit(size) - 1); flist is -1 for the others.
 * size is vs_end - vs_start modulo 2^64.
 */
struct shim_seg {
	unsigned long long	start;
	unsigned long long	size;
	char			type;
	int			flist;
};

/* shim_kern.c */
void shim_vmem_boot(void *base, size_t size, size_t quantum);
void shim_vmem_counters(void *map, unsigned long long ctr[SHIM_NCTR]);
void shim_layout_check(void);
/* The arena list from vm_seg0 (vs_anext) under vm_lock: the first max
 * segments into out[], the total returned (rotor/walkers skipped). */
size_t shim_vmem_layout(void *map, struct shim_seg *out, size_t max);

/* shim.c */
void shim_boot(void);			/* host region, vmem_init, traps */
void *shim_curthread(void);		/* the calling thread's kthread token */
int shim_thread_asleep(void *t);	/* in cv_wait and not yet woken */
void shim_thread_park(void *t);		/* wake it into a sleep for good */
void shim_busy_add(int n);		/* background waiters running: +1 before start, -1 when done */
void shim_thread_counted(int on);	/* the calling thread is such a waiter */
int shim_quiescent(void);		/* no counted waiter is running */
void shim_console_quiet(int on);	/* 1: console messages go to the log */

#endif	/* GATE_SHIM_H */
