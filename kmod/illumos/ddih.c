/*
 * This file and its contents are supplied under the terms of the
 * Common Development and Distribution License ("CDDL"), version 1.0.
 * You may only use this file in accordance with the terms of version
 * 1.0 of the CDDL.
 */

/*
 * ddih: DDI memory-routine harness driver, illumos port.
 *
 * Big Theory Statement
 * ====================
 *
 * What the driver is for
 * ----------------------
 * ddi-harness checks what the kernel memory routines that drivers use
 * really do, by calling them on request and comparing each result with a
 * Python model (harness/model, the "illumos" model).  This port calls the
 * real DDI routines, nothing else stands in for them:
 *
 *	resource maps	rmallocmap(9F), rmallocmap_wait, rmalloc(9F),
 *			rmalloc_wait(9F), rmfree(9F), rmfreemap
 *	umem		ddi_umem_alloc(9F), ddi_umem_free, exported by mmap(2)
 *			through devmap(9E) and devmap_umem_setup(9F)
 *	kmem		kmem_alloc(9F), kmem_zalloc, kmem_free
 *
 * It serves the ioctl ABI of kmod/ddih_ioctl.h, the same ABI (and the same
 * handle model) as the Linux port kmod/linux/ddih.c.  User space
 * (guest/ddictl) sends one struct ddih_req per op through one of three
 * ioctls (one per op family) on /devices/pseudo/ddih@0:ddih, a node that
 * add_drv makes root-only (-m '* 0600 root sys'); open(9E) also requires
 * drv_priv(9F).  The policy (what is refused, with which errno, what is
 * reported) is kmod/README.md, "illumos port policy"; the illumos model in
 * guarded mode mirrors that text, and so does this file.  Change none of
 * the three without the others.
 *
 * Handle model
 * ------------
 * Every open(9E) of minor 0 is cloned: it gets a fresh minor number (an
 * id_space(9F) of DDIH_MAX_OPENS minors from 1) and a per-open soft state
 * (ddi_soft_state(9F)) keyed by that minor, so each open file has its own
 * handle table and close(9E) is called once per open file.  Creating an
 * object (rmallocmap, umem_alloc, kmem_alloc, ...) hands out a handle >= 1
 * in the table of the file that asked; 0 means "none" / a NULL pointer.
 * Handles are allocated cyclically (a released number is not reused soon)
 * and every use checks that the handle is live, in the caller's own table
 * and of the right type, else EBADF.  A file cannot name another file's
 * objects at all.  At most DDIH_MAX_HANDLES handles per file (ENOSPC).
 *
 * kmem handles are not removed by kmem_free: they become tombstones that
 * remember the freed pointer and size, so a second kmem_free of the handle
 * is refused with EBADF or, in destructive mode, passed to kmem_free again.
 *
 * close(9E) frees everything the file still owns: for each map every
 * outstanding allocation of its record (below) that the rmfree guard would
 * accept is rmfree'd before rmfreemap, so nothing leaks and no "leaked"
 * warning appears (except for a start holding allocations of different
 * sizes, which no free can safely reach); umem cookies are
 * ddi_umem_free'd and live kmem buffers kmem_free'd with their own size.
 * close(9E) never runs while an ioctl of the file is in progress (the
 * ioctl holds the file).  specfs calls it on the last VOP_DELMAP of the
 * minor, which segdev_unmap makes just before it calls the devmap_unmap
 * callbacks: those may run after close(9E), so they touch nothing of the
 * file (see "Mappings").
 *
 * The driver's own record of a map
 * --------------------------------
 * Every guard on a map is decided from what the driver itself saw, never
 * from vmem's internal order.  Per map it keeps the spans rmfree added (in
 * creation order, for vmem_contains' rule) and the outstanding
 * allocations: one record (start, size) per successful rmalloc or
 * rmalloc_wait, removed by the rmfree that frees it.  Overlapping spans
 * give several records with one start; the record is a multiset and its
 * order means nothing.  It has to be so: vmem_free finds a segment through
 * the allocated-segment hash, whose chains hold same-start segments newest
 * first until vmem_hash_rescale (run by vmem_update every 15 s; with the
 * initial 16 buckets it acts once 42 allocations are outstanding) walks
 * each old chain onto the head of the new one, reversing their order, and
 * a later rescale may reverse it again.  The driver cannot know how many
 * rescales have run, so a free at a start is safe only when every segment
 * the hash could find first has the requested size: the guard accepts a
 * contained rmfree(size, index) when the record holds at least one
 * allocation (index, size) and no allocation at index of another size.  Two
 * same-start allocations of different sizes are therefore never freed
 * through the guard (each free would panic under one of the two orders);
 * rmfreemap (or close) gives them back with the "leaked" warning.  Which
 * of two same-size segments vmem frees cannot be known either; both have
 * the size, so only the later coalescing depends on it, never a panic.
 * The record changes only after the routine returned, under df_lock, so an
 * rmalloc_wait that slept is recorded when it has its result; the order in
 * which records were made does not matter to any decision.
 *
 * Mappings
 * --------
 * devmap_umem_setup is given callbacks (devmap_callback_ctl, without
 * devmap_access, so MAP_PRIVATE stays refused by devmap_setup) that count,
 * per umem buffer, the devmap handles (dhp) that map its cookie:
 * devmap_map counts a new dhp (its cookie is looked up among the file's
 * umem objects), devmap_dup counts the child's copy on fork, and
 * devmap_unmap uncounts the dhp and counts what is left of it (new_dhp1,
 * new_dhp2: a partial unmap at the head or tail leaves the count as is, a
 * hole in the middle adds one, a full unmap drops one).  The count lives in
 * a small record (ddih_mref_t, each dhp's private data) that outlives the
 * buffer while a dhp points to it; the last of buffer and dhps frees it.
 * UMEM_FREE of a buffer with a non-zero count is refused with EBUSY, so no
 * process can fault on a freed cookie.  Detach waits until every record
 * is gone (an unmap callback may still be due after the last close).
 *
 * Validation and the destructive switch
 * -------------------------------------
 * Every request is checked before anything is touched: the ioctl type and
 * number (ENOTTY), the caller's data model (ddi_model_convert_from: ILP32
 * and native LP64 only; struct ddih_req has one layout for both, see
 * ddih_ioctl.h), `version' and `size', the op's family, reserved fields and
 * flag words (EINVAL), then the handle (EBADF).  Before it acts, the
 * driver also copies the request (its out-fields cleared) back out with
 * ddi_copyout(9F): a request whose results could not be written back is
 * refused with EFAULT before any allocation or free, so it has no effect
 * (the same order as the Linux port).
 *
 * The guard policy then refuses, before calling the routine, what the
 * illumos model says would panic or silently corrupt the kernel, and
 * nothing else.  Its switch is `destructive': the ddih.conf property read
 * with ddi_prop_get_int(9F) at attach, or the variable ddih_destructive
 * (`set ddih:ddih_destructive = 1' in /etc/system); either one non-zero
 * turns the guards off.  The guards (destructive=0, the default):
 *   - rmalloc / rmalloc_wait of size 0 (vmem_xalloc panics): EINVAL;
 *   - rmfree, decided from the driver's own record (above): a range
 *     "contained" by vmem's rule (a span with index >= start and
 *     (index + size - 1) mod 2^64 <= end - 1) needs an outstanding
 *     allocation (index, size) and none at index of another size, else
 *     EINVAL (vmem_hash_delete would panic, or could after a hash rescale:
 *     bad free / wrong size).  Any other range adds a span: index 0, size 0
 *     or index + size > 2^64 give EINVAL (vmem_add panics; a span reaching
 *     2^64 corrupts the arena);
 *   - rmfreemap while a thread of the file sleeps in rmalloc_wait on the
 *     map: EBUSY (the sleeper would use a freed arena).  rmfreemap with
 *     outstanding units is passed through: the kernel warns
 *     "vmem_destroy('rmap'): leaked N bytes" and goes on;
 *   - kmem_free of a freed handle: EBADF; of NULL with size > 0, with a
 *     size that routes to another cache than the allocation's
 *     (kmem_alloc_<N>, or the oversize arena for 0 and > 131072), of an
 *     oversize buffer with another size, and, when kmem_flags has DEADBEEF
 *     or REDZONE (0x6), with any size but the allocation's: EINVAL;
 *   - umem_export with koff < 0 or koff + len >= 2^64 (devmap_umem_setup
 *     compares the wrapped sum, the mapping would reach outside the
 *     buffer): EINVAL;
 *   - umem_export with DEVMAP_MAPPING_INVALID | DEVMAP_ALLOW_REMAP
 *     (devmap_umem_setup succeeds and leaves the dhp without a cookie; the
 *     first access of the mapping faults on a NULL cookie and panics):
 *     EINVAL.  MAPPING_INVALID alone fails in devmap_umem_setup (ENXIO);
 *   - umem_free of a buffer that a process still maps (see "Mappings"; a
 *     later fault would use the freed cookie): EBUSY.
 * With destructive mode the request reaches the kernel as is (the driver
 * still keeps its own bookkeeping memory-safe).
 *
 * Two further refusals keep the driver itself safe and cannot be reached
 * through ddictl's protocol: umem_free of a PAGEABLE cookie whose pages are
 * still softlocked (ddi_umem_free panics "pending faults") is EBUSY (a
 * softlock needs a mapping, so the mapping count refuses it first), and the
 * kernel-side pattern helpers refuse a TRASH buffer (it has no kernel
 * address).  ddictl keeps a mapping past its umem_export step only when
 * the trace asks for it (mapping: shared-kept).
 *
 * Locking
 * -------
 * Each open file has an adaptive mutex, df_lock, that serialises its
 * handle table, its maps' bookkeeping and the pending export; every op
 * runs under it.  Routines that may block for long are called with
 * df_lock dropped: rmallocmap_wait, ddi_umem_alloc, kmem_alloc/kmem_zalloc
 * (their results are entered in the table after df_lock is taken again)
 * and rmalloc_wait, which sleeps in vmem's cv_wait (not interruptible).
 * rmalloc_wait holds the map with a waiter count taken under df_lock;
 * rmfreemap refuses (EBUSY) while the count is non-zero, so a sleeper's
 * map cannot vanish.  (In destructive mode rmfreemap goes on: the map's
 * handle is removed and the object is kept as an orphan that the last
 * returning waiter frees.)
 *
 * A waiter's allocation is recorded when it has re-taken df_lock, so the
 * driver may know an allocation later than vmem made it: that only makes
 * a free of it refused, never a bad free passed.  Since the guard never
 * depends on the order of the records, a waiter and another allocation at
 * the same start need no special care.
 *
 * The mapping counts have their own lock, ddih_mref_lock, a leaf: the
 * devmap callbacks run with the address space locked and, for unmaps,
 * perhaps after close(9E), so they take only that lock (devmap_map, which
 * runs inside mmap(2) while the file is open, also takes df_lock to find
 * the buffer, as devmap(9E) does).  UMEM_FREE reads the count under
 * df_lock then ddih_mref_lock.
 *
 * rmalloc, rmfree and rmfreemap do not sleep for long (VM_NOSLEEP) and run
 * under df_lock.  The vmem kstat counters are read from the vmem_t under
 * the arena's own vm_lock, which the driver takes only for that copy.
 * Driver-wide counters are atomics.
 *
 * mmap(2) goes through devmap_setup, which calls devmap(9E) once per piece
 * of the mapping.  The first call (offset 0) consumes the pending export
 * set by the UMEM_EXPORT ioctl and calls devmap_umem_setup with its koff,
 * len, maxprot and flags (a second time if setup_twice); *maplen is the
 * export's maplen when given, else the page-rounded length asked for.  When
 * *maplen is shorter than the mapping, devmap_setup calls again at offset
 * *maplen; that continuation maps the rest of the same export.  A call
 * with no export to consume fails, so devmap_setup returns ENXIO (and a
 * *maplen of 0, which would make devmap_setup loop, ends there).
 *
 * What is reported, and why no kernel address leaves the driver
 * -------------------------------------------------------------
 * Results carry integers only: map indexes (rmalloc's own return values,
 * not addresses), sizes, `offset = addr & PAGEOFFSET', the umem cookie's
 * size and type, `zeroed' (a scan of the bytes) and the rmap arena's vmem
 * kstat counters (mem_total, mem_inuse, alloc, free, fail, wait, contains),
 * the same numbers `kstat -p vmem:<id>:rmap' shows.  The request is copied
 * out from a kernel copy whose out-fields were zeroed first, so nothing
 * stale or uninitialised goes back.  kmem results carry offset and zeroed
 * but no value: the cache a buffer came from is not observable from a
 * driver.  Handles are small integers of the file's own table; kernel
 * pointers stay inside the driver.
 *
 * RMAP_LAYOUT reports a map's whole layout the same way, in the map's
 * units: each segment of the vmem arena list (vm_seg0, vs_anext; spans in
 * creation order, each followed by its allocated and free segments in
 * address order) as start, end - start and type, free ones with their
 * freelist highbit(size) - 1 (struct ddih_seg; at most DDIH_LAYOUT_MAX
 * copied, the total in `value').  The list is read under the arena's
 * vm_lock into a buffer allocated beforehand and copied out after the
 * lock is dropped; vs_start and vs_end are map indexes (the rmap arena has
 * quantum 1 and no source), never kernel addresses.  The op changes
 * nothing, so a refused copy (EFAULT) has no effect.
 *
 * Debugging aid: the named kstat ddih:0:objects counts live maps, umem and
 * kmem buffers, open files and the destructive switch.
 */

#include <sys/types.h>
#include <sys/param.h>
#include <sys/debug.h>
#include <sys/cmn_err.h>
#include <sys/errno.h>
#include <sys/stat.h>
#include <sys/file.h>
#include <sys/open.h>
#include <sys/cred.h>
#include <sys/conf.h>
#include <sys/devops.h>
#include <sys/modctl.h>
#include <sys/mman.h>
#include <sys/map.h>
#include <sys/kmem.h>
#include <sys/vmem.h>
#include <sys/vmem_impl.h>
#include <sys/kstat.h>
#include <sys/mutex.h>
#include <sys/atomic.h>
#include <sys/id_space.h>
#include <sys/ddidevmap.h>
#include <sys/ddi.h>
#include <sys/sunddi.h>

#include "../ddih_ioctl.h"

typedef struct ddih_req ddih_req_t;

#define	DDIH_U64_MAX		(~(uint64_t)0)
#define	DDIH_MAX_HANDLES	65536	/* per open file */
#define	DDIH_MAX_OPENS		1024	/* cloned minors 1..DDIH_MAX_OPENS */
#define	DDIH_TAB_INITIAL	64
#define	DDIH_KMEM_MAX_CACHED	131072	/* largest kmem_alloc_<N> cache */
#define	DDIH_KMF_BUFTAG		0x6	/* KMF_DEADBEEF | KMF_REDZONE */

#define	DDIH_UMEM_FLAGS	(DDIH_UMEM_NOSLEEP | DDIH_UMEM_PAGEABLE | \
			DDIH_UMEM_TRASH)
#define	DDIH_KM_FLAGS	(DDIH_KM_NOSLEEP | DDIH_KM_PUSHPAGE | DDIH_KM_NORMALPRI)
#define	DDIH_DEVMAP_FLAGS (DDIH_DEVMAP_MAPPING_INVALID | \
			DDIH_DEVMAP_ALLOW_REMAP | DDIH_DEVMAP_USE_PAGESIZE)
#define	DDIH_PROT_FLAGS	(DDIH_PROT_READ | DDIH_PROT_WRITE | DDIH_PROT_EXEC | \
			DDIH_PROT_USER)

/* kmem's debug flags (kmem.c); read to pick the kmem_free guard. */
extern int kmem_flags;

/* ---------------------------------------------------------------- state */

/* Settable in /etc/system: set ddih:ddih_destructive = 1 */
int ddih_destructive = 0;

static dev_info_t *ddih_dip;
static void *ddih_ss;			/* soft state per cloned minor */
static id_space_t *ddih_minors;
static kstat_t *ddih_ksp;
static boolean_t ddih_guards_off;	/* set at attach */

static volatile uint32_t ddih_nmaps;
static volatile uint32_t ddih_numem;
static volatile uint32_t ddih_nkmem;
static volatile uint32_t ddih_nfiles;
static volatile uint32_t ddih_nmrefs;	/* mapping records alive */
static kmutex_t ddih_mref_lock;		/* every ddih_mref_t */

typedef enum ddih_otype {
	DO_MAP = 1,
	DO_UMEM,
	DO_KMEM,
	DO_KMEM_FREED
} ddih_otype_t;

/* A span rmfree added to a map: [ds_start, ds_last], creation order. */
typedef struct ddih_span {
	struct ddih_span	*ds_next;
	uint64_t		ds_start;
	uint64_t		ds_last;	/* start + size - 1, mod 2^64 */
} ddih_span_t;

/*
 * An outstanding allocation, as rmalloc/rmalloc_wait returned it.  The
 * list is a multiset: its order means nothing (see "The driver's own
 * record" above), and two records may share a start.
 */
typedef struct ddih_rec {
	struct ddih_rec	*dr_next;
	uint64_t	dr_start;
	uint64_t	dr_size;
} ddih_rec_t;

typedef struct ddih_map {
	void		*dm_map;	/* rmallocmap's map (a vmem_t) */
	ddih_span_t	*dm_spans;
	ddih_span_t	**dm_spantail;
	ddih_rec_t	*dm_recs;	/* outstanding allocations, a multiset */
	boolean_t	dm_orphan;	/* destructive rmfreemap under waiters */
	uint_t		dm_waiters;	/* threads in rmalloc_wait */
} ddih_map_t;

/*
 * The live user mappings of one umem buffer: one count per devmap handle
 * (dhp) that maps its cookie, kept by the devmap callbacks, and the dhps'
 * private data.  It outlives the buffer's object while a dhp still points
 * to it (the unmap callbacks may run after close(9E), see "Mappings").
 * Guarded by ddih_mref_lock, a leaf lock.
 */
typedef struct ddih_mref {
	uint32_t	mr_maps;	/* live dhps mapping the cookie */
	boolean_t	mr_live;	/* the umem object still refers to it */
} ddih_mref_t;

typedef struct ddih_umem {
	ddi_umem_cookie_t	du_cookie;
	ddih_mref_t		*du_mref;	/* its live mappings */
	caddr_t			du_buf;		/* NULL for TRASH */
	size_t			du_size;	/* the cookie's size */
	uint_t			du_type;	/* the cookie's type */
} ddih_umem_t;

typedef struct ddih_kmem {
	void		*dk_buf;
	size_t		dk_size;	/* the size allocated (or freed) */
} ddih_kmem_t;

typedef struct ddih_obj {
	ddih_otype_t	do_type;
	union {
		ddih_map_t	do_map;
		ddih_umem_t	do_umem;
		ddih_kmem_t	do_kmem;	/* also for DO_KMEM_FREED */
	} do_u;
} ddih_obj_t;

typedef struct ddih_export {
	boolean_t	de_set;
	uint32_t	de_handle;
	int64_t		de_off;
	uint64_t	de_len;
	uint_t		de_maxprot;	/* PROT_* */
	uint_t		de_flags;	/* DEVMAP_* */
	boolean_t	de_maplen_set;
	uint64_t	de_maplen;
	boolean_t	de_twice;
} ddih_export_t;

typedef struct ddih_file {
	kmutex_t	df_lock;
	minor_t		df_minor;
	ddih_obj_t	**df_tab;	/* handle h lives in df_tab[h - 1] */
	uint32_t	df_cap;
	uint32_t	df_next;	/* cyclic allocation hint */
	uint32_t	df_nhandles;
	ddih_export_t	df_export;	/* pending, set by UMEM_EXPORT */
	ddih_export_t	df_cur;		/* consumed by the current mmap */
	uint64_t	df_cur_next;	/* offset of its next devmap call */
} ddih_file_t;

/* ---------------------------------------------------------------- handles */

static ddih_obj_t *
ddih_lookup(ddih_file_t *df, uint32_t h, ddih_otype_t type)
{
	ddih_obj_t *o;

	ASSERT(mutex_owned(&df->df_lock));
	if (h == 0 || h > df->df_cap)
		return (NULL);
	o = df->df_tab[h - 1];
	if (o == NULL || o->do_type != type)
		return (NULL);
	return (o);
}

static int
ddih_insert(ddih_file_t *df, ddih_obj_t *o, uint32_t *hp)
{
	uint32_t i, slot;

	ASSERT(mutex_owned(&df->df_lock));
	if (df->df_nhandles >= DDIH_MAX_HANDLES)
		return (ENOSPC);
	if (df->df_nhandles == df->df_cap) {
		uint32_t ncap = df->df_cap == 0 ? DDIH_TAB_INITIAL :
		    df->df_cap * 2;
		ddih_obj_t **nt;

		if (ncap > DDIH_MAX_HANDLES)
			ncap = DDIH_MAX_HANDLES;
		nt = kmem_zalloc(ncap * sizeof (ddih_obj_t *), KM_SLEEP);
		if (df->df_cap != 0) {
			bcopy(df->df_tab, nt, df->df_cap *
			    sizeof (ddih_obj_t *));
			kmem_free(df->df_tab, df->df_cap *
			    sizeof (ddih_obj_t *));
		}
		df->df_next = df->df_cap;
		df->df_tab = nt;
		df->df_cap = ncap;
	}
	for (i = 0; i < df->df_cap; i++) {
		slot = (df->df_next + i) % df->df_cap;
		if (df->df_tab[slot] == NULL) {
			df->df_tab[slot] = o;
			df->df_next = (slot + 1) % df->df_cap;
			df->df_nhandles++;
			*hp = slot + 1;
			return (0);
		}
	}
	return (ENOSPC);	/* not reached: nhandles < cap */
}

static void
ddih_remove(ddih_file_t *df, uint32_t h)
{
	ASSERT(mutex_owned(&df->df_lock));
	df->df_tab[h - 1] = NULL;
	df->df_nhandles--;
}

/* ---------------------------------------------------------------- rmap */

/* The arena's kstat counters, read from the vmem_t (vmem_impl.h). */
static void
ddih_counters(ddih_req_t *r, ddih_map_t *m)
{
	vmem_t *vmp = (vmem_t *)m->dm_map;
	vmem_kstat_t *vk = &vmp->vm_kstat;

	mutex_enter(&vmp->vm_lock);
	r->ctr[DDIH_CTR_MEM_TOTAL] = vk->vk_mem_total.value.ui64;
	r->ctr[DDIH_CTR_MEM_INUSE] = vk->vk_mem_inuse.value.ui64;
	r->ctr[DDIH_CTR_ALLOC] = vk->vk_alloc.value.ui64;
	r->ctr[DDIH_CTR_FREE] = vk->vk_free.value.ui64;
	r->ctr[DDIH_CTR_FAIL] = vk->vk_fail.value.ui64;
	r->ctr[DDIH_CTR_WAIT] = vk->vk_wait.value.ui64;
	r->ctr[DDIH_CTR_CONTAINS] = vk->vk_contains.value.ui64;
	mutex_exit(&vmp->vm_lock);
	r->valid |= DDIH_V_VMEM;
}

/* vmem_contains' rule over the spans the driver saw added. */
static boolean_t
ddih_contained(ddih_map_t *m, uint64_t index, uint64_t size)
{
	uint64_t last = index + size - 1;	/* mod 2^64 */
	ddih_span_t *s;

	for (s = m->dm_spans; s != NULL; s = s->ds_next) {
		if (index >= s->ds_start && last <= s->ds_last)
			return (B_TRUE);
	}
	return (B_FALSE);
}

/*
 * The guard of a contained rmfree(size, index), decided from the driver's
 * own record only: true when some outstanding allocation starts at index
 * and every outstanding allocation that starts there has this size.  Then
 * whichever of them vmem_hash_delete finds first (hash-chain order, which
 * vmem_hash_rescale reverses), its size matches: no "bad free", no "wrong
 * size".  Same-start allocations of different sizes make every free at
 * that start a gamble on chain order, so all of them are refused.
 */
static boolean_t
ddih_free_ok(ddih_map_t *m, uint64_t index, uint64_t size)
{
	ddih_rec_t *d;
	boolean_t found = B_FALSE;

	for (d = m->dm_recs; d != NULL; d = d->dr_next) {
		if (d->dr_start != index)
			continue;
		if (d->dr_size != size)
			return (B_FALSE);
		found = B_TRUE;
	}
	return (found);
}

static void
ddih_rec_push(ddih_map_t *m, ddih_rec_t *d, uint64_t start, uint64_t size)
{
	d->dr_start = start;
	d->dr_size = size;
	d->dr_next = m->dm_recs;
	m->dm_recs = d;
}

/* Forget one record of [index, index + size), if there is one. */
static void
ddih_rec_pop(ddih_map_t *m, uint64_t index, uint64_t size)
{
	ddih_rec_t **pp, *d;

	for (pp = &m->dm_recs; (d = *pp) != NULL; pp = &d->dr_next) {
		if (d->dr_start == index && d->dr_size == size) {
			*pp = d->dr_next;
			kmem_free(d, sizeof (*d));
			return;
		}
	}
}

static void
ddih_span_add(ddih_map_t *m, ddih_span_t *s, uint64_t index, uint64_t size)
{
	s->ds_start = index;
	s->ds_last = index + size - 1;
	s->ds_next = NULL;
	*m->dm_spantail = s;
	m->dm_spantail = &s->ds_next;
}

/* Free the driver's bookkeeping of a map (not the kernel map). */
static void
ddih_map_forget(ddih_map_t *m)
{
	ddih_span_t *s;
	ddih_rec_t *d;

	while ((d = m->dm_recs) != NULL) {
		m->dm_recs = d->dr_next;
		kmem_free(d, sizeof (*d));
	}
	while ((s = m->dm_spans) != NULL) {
		m->dm_spans = s->ds_next;
		kmem_free(s, sizeof (*s));
	}
	m->dm_spantail = &m->dm_spans;
}

/*
 * close: give back every allocation the guard would let through, then
 * destroy the map.  A start whose records all have one size is freed once
 * per record (each vmem_free finds some segment of that size, whatever the
 * chain order); a start with mixed sizes is left to rmfreemap, which warns
 * "vmem_destroy('rmap'): leaked N bytes" instead of panicking.  The test
 * is made against the full record, before anything is forgotten.
 */
static void
ddih_map_release(ddih_map_t *m)
{
	ddih_rec_t *d;

	for (d = m->dm_recs; d != NULL; d = d->dr_next) {
		if (ddih_free_ok(m, d->dr_start, d->dr_size))
			rmfree(m->dm_map, (size_t)d->dr_size,
			    (ulong_t)d->dr_start);
	}
	ddih_map_forget(m);
	rmfreemap(m->dm_map);
}

static int
ddih_rmallocmap(ddih_file_t *df, ddih_req_t *r)
{
	ddih_obj_t *o;
	void *map;
	int err;

	if (r->handle != 0 || r->flags != 0)
		return (EINVAL);
	mutex_exit(&df->df_lock);
	if (r->op == DDIH_OP_RMALLOCMAP_WAIT)
		map = rmallocmap_wait((size_t)r->arg[0]);
	else
		map = rmallocmap((size_t)r->arg[0]);
	mutex_enter(&df->df_lock);
	if (map == NULL) {
		r->kind = DDIH_KIND_NULL;
		return (0);
	}
	o = kmem_zalloc(sizeof (*o), KM_SLEEP);
	o->do_type = DO_MAP;
	o->do_u.do_map.dm_map = map;
	o->do_u.do_map.dm_spantail = &o->do_u.do_map.dm_spans;
	if ((err = ddih_insert(df, o, &r->ohandle)) != 0) {
		rmfreemap(map);
		kmem_free(o, sizeof (*o));
		return (err);
	}
	atomic_inc_32(&ddih_nmaps);
	r->valid |= DDIH_V_HANDLE;
	r->kind = DDIH_KIND_OK;
	ddih_counters(r, &o->do_u.do_map);
	return (0);
}

static int
ddih_rmalloc(ddih_file_t *df, ddih_req_t *r)
{
	ddih_obj_t *o = ddih_lookup(df, r->handle, DO_MAP);
	ddih_map_t *m;
	ddih_rec_t *d;
	uint64_t size = r->arg[0];
	ulong_t v;

	if (o == NULL)
		return (EBADF);
	if (r->flags != 0)
		return (EINVAL);
	m = &o->do_u.do_map;
	ddih_counters(r, m);
	if (size == 0 && !ddih_guards_off)
		return (EINVAL);	/* vmem_xalloc(): size == 0 */
	d = kmem_zalloc(sizeof (*d), KM_SLEEP);
	v = rmalloc(m->dm_map, (size_t)size);
	if (v != 0)
		ddih_rec_push(m, d, v, size);
	else
		kmem_free(d, sizeof (*d));
	r->value = v;
	r->kind = DDIH_KIND_VALUE;
	r->valid |= DDIH_V_VALUE;
	ddih_counters(r, m);
	return (0);
}

/* Called with df_lock held; sleeps in vmem with it dropped. */
static int
ddih_rmalloc_wait(ddih_file_t *df, ddih_req_t *r)
{
	ddih_obj_t *o = ddih_lookup(df, r->handle, DO_MAP);
	ddih_map_t *m;
	ddih_rec_t *d;
	uint64_t size = r->arg[0];
	ulong_t v;

	if (o == NULL)
		return (EBADF);
	if (r->flags != 0)
		return (EINVAL);
	m = &o->do_u.do_map;
	ddih_counters(r, m);
	if (size == 0 && !ddih_guards_off)
		return (EINVAL);	/* vmem_xalloc(): size == 0 */
	d = kmem_zalloc(sizeof (*d), KM_SLEEP);
	m->dm_waiters++;
	mutex_exit(&df->df_lock);
	v = rmalloc_wait(m->dm_map, (size_t)size);
	mutex_enter(&df->df_lock);
	m->dm_waiters--;
	if (m->dm_orphan) {
		/* destructive rmfreemap ran while this thread slept */
		kmem_free(d, sizeof (*d));
		r->valid &= ~DDIH_V_VMEM;
		if (m->dm_waiters == 0) {
			ddih_map_forget(m);
			kmem_free(o, sizeof (*o));
		}
		r->value = v;
		r->kind = DDIH_KIND_VALUE;
		r->valid |= DDIH_V_VALUE;
		return (0);
	}
	if (v != 0)
		ddih_rec_push(m, d, v, size);
	else
		kmem_free(d, sizeof (*d));
	r->value = v;
	r->kind = DDIH_KIND_VALUE;
	r->valid |= DDIH_V_VALUE;
	ddih_counters(r, m);
	return (0);
}

static int
ddih_rmfree(ddih_file_t *df, ddih_req_t *r)
{
	ddih_obj_t *o = ddih_lookup(df, r->handle, DO_MAP);
	ddih_map_t *m;
	ddih_span_t *s = NULL;
	uint64_t size = r->arg[0], index = r->arg[1];
	boolean_t contained;

	if (o == NULL)
		return (EBADF);
	if (r->flags != 0)
		return (EINVAL);
	m = &o->do_u.do_map;
	ddih_counters(r, m);
	contained = ddih_contained(m, index, size);
	if (!ddih_guards_off) {
		if (contained) {
			if (!ddih_free_ok(m, index, size))
				return (EINVAL);	/* bad free/wrong size */
		} else if (index == 0 || size == 0 ||
		    size - 1 > DDIH_U64_MAX - index) {
			return (EINVAL);	/* vmem_add: bad arguments */
		}
	}
	if (!contained)
		s = kmem_zalloc(sizeof (*s), KM_SLEEP);
	rmfree(m->dm_map, (size_t)size, (ulong_t)index);
	/* reached only if the kernel did not panic: mirror what it did */
	if (contained)
		ddih_rec_pop(m, index, size);
	else
		ddih_span_add(m, s, index, size);
	r->kind = DDIH_KIND_OK;
	ddih_counters(r, m);
	return (0);
}

static int
ddih_rmfreemap(ddih_file_t *df, ddih_req_t *r)
{
	ddih_obj_t *o = ddih_lookup(df, r->handle, DO_MAP);
	ddih_map_t *m;

	if (o == NULL)
		return (EBADF);
	if (r->flags != 0)
		return (EINVAL);
	m = &o->do_u.do_map;
	ddih_counters(r, m);
	if (m->dm_waiters != 0 && !ddih_guards_off)
		return (EBUSY);
	ddih_remove(df, r->handle);
	atomic_dec_32(&ddih_nmaps);
	r->valid &= ~DDIH_V_VMEM;
	r->kind = DDIH_KIND_OK;
	rmfreemap(m->dm_map);	/* outstanding units: "leaked N bytes" */
	if (m->dm_waiters != 0) {
		m->dm_orphan = B_TRUE;	/* the last waiter frees it */
		return (0);
	}
	ddih_map_forget(m);
	kmem_free(o, sizeof (*o));
	return (0);
}

/* RMAP_STATE: the counters only, no routine called (a harness helper). */
static int
ddih_rmap_state(ddih_file_t *df, ddih_req_t *r)
{
	ddih_obj_t *o = ddih_lookup(df, r->handle, DO_MAP);

	if (o == NULL)
		return (EBADF);
	if (r->flags != 0)
		return (EINVAL);
	r->kind = DDIH_KIND_OK;
	ddih_counters(r, &o->do_u.do_map);
	return (0);
}

/* highbit(9F)'s value for a 64-bit word: the highest bit set, from 1. */
static uint32_t
ddih_highbit64(uint64_t v)
{
	uint32_t h = 0;

	while (v != 0) {
		h++;
		v >>= 1;
	}
	return (h);
}

/*
 * RMAP_LAYOUT: the map's layout (a harness helper; no routine called).
 * The arena's segment list from vm_seg0 along vs_anext, exactly as vmem
 * keeps it (vmem_impl.h): each span in creation order followed by its
 * allocated and free segments in address order; the rotor and any walker
 * marker are skipped.  Read under vm_lock (the list's lock), into a
 * buffer allocated before; the first a1 entries are copied to the array
 * at a0 (all a1 of them: zeros past the last, so a bad a0 is always
 * EFAULT); value is how many there are in all.
 */
static int
ddih_rmap_layout(ddih_file_t *df, ddih_req_t *r, int mode)
{
	ddih_obj_t *o = ddih_lookup(df, r->handle, DO_MAP);
	struct ddih_seg *segs = NULL;
	uint64_t max = r->arg[1], n = 0;
	vmem_t *vmp;
	vmem_seg_t *vsp;
	int err = 0;

	if (o == NULL)
		return (EBADF);
	if (r->flags != 0 || max > DDIH_LAYOUT_MAX || r->arg[2] != 0 ||
	    r->arg[3] != 0 || r->soff != 0)
		return (EINVAL);
	if (max != 0)
		segs = kmem_zalloc((size_t)max * sizeof (*segs), KM_SLEEP);
	vmp = (vmem_t *)o->do_u.do_map.dm_map;
	mutex_enter(&vmp->vm_lock);
	for (vsp = vmp->vm_seg0.vs_anext; vsp != &vmp->vm_seg0;
	    vsp = vsp->vs_anext) {
		uint64_t size = (uint64_t)(vsp->vs_end - vsp->vs_start);
		uint32_t type, flist = DDIH_SEG_NOLIST;

		switch (vsp->vs_type) {
		case VMEM_SPAN:
			type = DDIH_SEG_SPAN;
			break;
		case VMEM_ALLOC:
			type = DDIH_SEG_ALLOC;
			break;
		case VMEM_FREE:
			type = DDIH_SEG_FREE;
			if (size != 0)
				flist = ddih_highbit64(size) - 1;
			break;
		default:
			continue;	/* VMEM_ROTOR, VMEM_WALKER */
		}
		if (n < max) {
			segs[n].start = (uint64_t)vsp->vs_start;
			segs[n].size = size;
			segs[n].type = type;
			segs[n].flist = flist;
		}
		n++;
	}
	mutex_exit(&vmp->vm_lock);
	if (max != 0) {
		if (ddi_copyout(segs, (void *)(uintptr_t)r->arg[0],
		    (size_t)max * sizeof (*segs), mode) != 0)
			err = EFAULT;
		kmem_free(segs, (size_t)max * sizeof (*segs));
	}
	if (err != 0)
		return (err);
	r->value = n;
	r->kind = DDIH_KIND_VALUE;
	r->valid |= DDIH_V_VALUE;
	return (0);
}

/* ---------------------------------------------------------------- umem */

static boolean_t
ddih_all_zero(const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t i;

	for (i = 0; i < n; i++) {
		if (b[i] != 0)
			return (B_FALSE);
	}
	return (B_TRUE);
}

static int
ddih_umem_alloc(ddih_file_t *df, ddih_req_t *r)
{
	struct ddi_umem_cookie *cp;
	ddi_umem_cookie_t cookie = NULL;
	ddih_obj_t *o;
	void *buf;
	int flag = DDI_UMEM_SLEEP, err;

	if (r->handle != 0 || (r->flags & ~DDIH_UMEM_FLAGS) != 0)
		return (EINVAL);
	if (r->flags & DDIH_UMEM_NOSLEEP)
		flag |= DDI_UMEM_NOSLEEP;
	if (r->flags & DDIH_UMEM_PAGEABLE)
		flag |= DDI_UMEM_PAGEABLE;
	if (r->flags & DDIH_UMEM_TRASH)
		flag |= DDI_UMEM_TRASH;
	mutex_exit(&df->df_lock);
	buf = ddi_umem_alloc((size_t)r->arg[0], flag, &cookie);
	mutex_enter(&df->df_lock);
	r->kind = DDIH_KIND_NULL;
	if (cookie == NULL)
		return (0);		/* NULL and no cookie */
	cp = (struct ddi_umem_cookie *)cookie;
	o = kmem_zalloc(sizeof (*o), KM_SLEEP);
	o->do_type = DO_UMEM;
	o->do_u.do_umem.du_cookie = cookie;
	o->do_u.do_umem.du_buf = buf;
	o->do_u.do_umem.du_size = cp->size;
	o->do_u.do_umem.du_type = cp->type;
	if ((err = ddih_insert(df, o, &r->ohandle)) != 0) {
		ddi_umem_free(cookie);
		kmem_free(o, sizeof (*o));
		return (err);
	}
	o->do_u.do_umem.du_mref = kmem_zalloc(sizeof (ddih_mref_t), KM_SLEEP);
	o->do_u.do_umem.du_mref->mr_live = B_TRUE;
	atomic_inc_32(&ddih_nmrefs);
	atomic_inc_32(&ddih_numem);
	r->type = cp->type;
	r->cookie_size = cp->size;
	r->valid |= DDIH_V_HANDLE | DDIH_V_TYPE | DDIH_V_COOKIE_SIZE;
	if (buf == NULL)
		return (0);		/* DDI_UMEM_TRASH: NULL with a cookie */
	r->kind = DDIH_KIND_VALUE;
	r->value = cp->size;
	r->offset = (uintptr_t)buf & PAGEOFFSET;
	r->zeroed = ddih_all_zero(buf, cp->size) ? 1 : 0;
	r->valid |= DDIH_V_VALUE | DDIH_V_OFFSET | DDIH_V_ZEROED;
	return (0);
}

/* Drop one reference to a mapping record: a dhp's, or the buffer's. */
static void
ddih_mref_rele(ddih_mref_t *mr, boolean_t buffer)
{
	boolean_t last;

	mutex_enter(&ddih_mref_lock);
	if (buffer)
		mr->mr_live = B_FALSE;
	else
		mr->mr_maps--;
	last = !mr->mr_live && mr->mr_maps == 0;
	mutex_exit(&ddih_mref_lock);
	if (last) {
		kmem_free(mr, sizeof (*mr));
		atomic_dec_32(&ddih_nmrefs);
	}
}

static uint32_t
ddih_mref_maps(ddih_mref_t *mr)
{
	uint32_t n;

	mutex_enter(&ddih_mref_lock);
	n = mr->mr_maps;
	mutex_exit(&ddih_mref_lock);
	return (n);
}

static void
ddih_umem_destroy(ddih_obj_t *o)
{
	ddi_umem_free(o->do_u.do_umem.du_cookie);
	ddih_mref_rele(o->do_u.do_umem.du_mref, B_TRUE);
	kmem_free(o, sizeof (*o));
	atomic_dec_32(&ddih_numem);
}

static int
ddih_umem_free(ddih_file_t *df, ddih_req_t *r)
{
	ddih_obj_t *o;
	struct ddi_umem_cookie *cp;

	if (r->flags != 0)
		return (EINVAL);
	r->kind = DDIH_KIND_OK;
	if (r->handle == 0) {
		ddi_umem_free(NULL);		/* no effect */
		return (0);
	}
	if ((o = ddih_lookup(df, r->handle, DO_UMEM)) == NULL)
		return (EBADF);
	cp = (struct ddi_umem_cookie *)o->do_u.do_umem.du_cookie;
	/* a process still maps the cookie: its next fault would use it */
	if (!ddih_guards_off && ddih_mref_maps(o->do_u.do_umem.du_mref) != 0)
		return (EBUSY);
	if (!ddih_guards_off && cp->type == KMEM_PAGEABLE && cp->locked != 0)
		return (EBUSY);		/* "pending faults" panic */
	ddih_remove(df, r->handle);
	ddih_umem_destroy(o);
	return (0);
}

/* koff + len would reach outside the buffer (README: umem_export). */
static boolean_t
ddih_export_unsafe(int64_t off, uint64_t len)
{
	return (off < 0 || len > DDIH_U64_MAX - (uint64_t)off);
}

static int
ddih_umem_export(ddih_file_t *df, ddih_req_t *r)
{
	ddih_export_t *e = &df->df_export;
	uint_t prot = 0, flags = 0;

	/* handle 0 is a NULL cookie: recorded, devmap_umem_setup fails */
	if (r->handle != 0 && ddih_lookup(df, r->handle, DO_UMEM) == NULL)
		return (EBADF);
	if ((r->flags & ~DDIH_DEVMAP_FLAGS) != 0 ||
	    (r->arg[1] & ~(uint64_t)DDIH_PROT_FLAGS) != 0 || r->arg[3] > 1)
		return (EINVAL);
	if (!ddih_guards_off && ddih_export_unsafe(r->soff, r->arg[0]))
		return (EINVAL);
	/*
	 * MAPPING_INVALID with ALLOW_REMAP: devmap_umem_setup succeeds but
	 * leaves the handle without a cookie; the first access faults on a
	 * NULL cookie and panics.  Refused unless destructive.
	 */
	if (!ddih_guards_off && (r->flags & DDIH_DEVMAP_MAPPING_INVALID) &&
	    (r->flags & DDIH_DEVMAP_ALLOW_REMAP))
		return (EINVAL);
	if (r->arg[1] & DDIH_PROT_READ)
		prot |= PROT_READ;
	if (r->arg[1] & DDIH_PROT_WRITE)
		prot |= PROT_WRITE;
	if (r->arg[1] & DDIH_PROT_EXEC)
		prot |= PROT_EXEC;
	if (r->arg[1] & DDIH_PROT_USER)
		prot |= PROT_USER;
	if (r->flags & DDIH_DEVMAP_MAPPING_INVALID)
		flags |= DEVMAP_MAPPING_INVALID;
	if (r->flags & DDIH_DEVMAP_ALLOW_REMAP)
		flags |= DEVMAP_ALLOW_REMAP;
	if (r->flags & DDIH_DEVMAP_USE_PAGESIZE)
		flags |= DEVMAP_USE_PAGESIZE;
	e->de_set = B_TRUE;
	e->de_handle = r->handle;
	e->de_off = r->soff;
	e->de_len = r->arg[0];
	e->de_maxprot = prot;
	e->de_flags = flags;
	e->de_maplen_set = (r->xflags & DDIH_XF_MAPLEN) != 0;
	e->de_maplen = r->arg[2];
	e->de_twice = r->arg[3] != 0;
	r->kind = DDIH_KIND_OK;
	return (0);
}

/* UMEM_CHECK and UMEM_FILL: the kernel side of the coherence check. */
static int
ddih_umem_pattern(ddih_file_t *df, ddih_req_t *r, boolean_t fill)
{
	ddih_obj_t *o = ddih_lookup(df, r->handle, DO_UMEM);
	uint64_t off = r->arg[0], len = r->arg[1], seed = r->arg[2], i;
	uint8_t *p;

	if (o == NULL)
		return (EBADF);
	if (r->flags != 0)
		return (EINVAL);
	if (o->do_u.do_umem.du_buf == NULL)
		return (EINVAL);	/* TRASH: no kernel address */
	if (off > o->do_u.do_umem.du_size ||
	    len > o->do_u.do_umem.du_size - off)
		return (EINVAL);
	p = (uint8_t *)o->do_u.do_umem.du_buf + off;
	r->value = 1;
	for (i = 0; i < len; i++) {
		if (fill) {
			p[i] = DDIH_PATTERN(seed, i);
		} else if (p[i] != DDIH_PATTERN(seed, i)) {
			r->value = 0;
			break;
		}
	}
	if (fill) {
		r->kind = DDIH_KIND_OK;
	} else {
		r->kind = DDIH_KIND_VALUE;
		r->valid |= DDIH_V_VALUE;
	}
	return (0);
}

/* ---------------------------------------------------------------- kmem */

static const uint32_t ddih_kmem_small[] = {
	8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256,
	320, 384, 448, 512, 640, 768, 896, 1152, 1344, 1600, 2048, 2688, 4096
};
static const uint32_t ddih_kmem_big[] = {
	8192, 12288, 16384, 24576, 32768, 40960, 49152, 57344, 65536, 73728,
	81920, 90112, 98304, 106496, 114688, 122880, 131072
};

/* The kmem_alloc_<N> cache a size routes to; 0: the oversize arena. */
static uint64_t
ddih_kmem_cache(uint64_t size)
{
	const uint32_t *t;
	size_t i, n;

	if (size == 0 || size > DDIH_KMEM_MAX_CACHED)
		return (0);
	if (size <= 4096) {
		t = ddih_kmem_small;
		n = sizeof (ddih_kmem_small) / sizeof (ddih_kmem_small[0]);
	} else {
		t = ddih_kmem_big;
		n = sizeof (ddih_kmem_big) / sizeof (ddih_kmem_big[0]);
	}
	for (i = 0; i < n; i++) {
		if (t[i] >= size)
			return (t[i]);
	}
	return (0);		/* not reached */
}

static int
ddih_kmem_alloc(ddih_file_t *df, ddih_req_t *r, boolean_t zero)
{
	uint64_t size = r->arg[0];
	ddih_obj_t *o;
	int kmflag, err;
	void *p;

	if (r->handle != 0 || (r->flags & ~DDIH_KM_FLAGS) != 0)
		return (EINVAL);
	kmflag = (r->flags & DDIH_KM_NOSLEEP) ? KM_NOSLEEP : KM_SLEEP;
	/*
	 * A sleeping request whose page rounding overflows panics in
	 * vmem_xalloc ("size overflow"): refused unless destructive.
	 */
	if (kmflag == KM_SLEEP && size > (uint64_t)-1 - PAGESIZE && !ddih_guards_off)
		return (EINVAL);
	if (r->flags & DDIH_KM_PUSHPAGE)
		kmflag |= KM_PUSHPAGE;
	if (r->flags & DDIH_KM_NORMALPRI)
		kmflag |= KM_NORMALPRI;
	mutex_exit(&df->df_lock);
	if (zero)
		p = kmem_zalloc((size_t)size, kmflag);
	else
		p = kmem_alloc((size_t)size, kmflag);
	mutex_enter(&df->df_lock);
	r->kind = DDIH_KIND_NULL;
	if (p == NULL)
		return (0);
	o = kmem_zalloc(sizeof (*o), KM_SLEEP);
	o->do_type = DO_KMEM;
	o->do_u.do_kmem.dk_buf = p;
	o->do_u.do_kmem.dk_size = (size_t)size;
	if ((err = ddih_insert(df, o, &r->ohandle)) != 0) {
		kmem_free(p, (size_t)size);
		kmem_free(o, sizeof (*o));
		return (err);
	}
	atomic_inc_32(&ddih_nkmem);
	/* non-NULL; no value: the cache is not observable from a driver */
	r->kind = DDIH_KIND_VALUE;
	r->offset = (uintptr_t)p & PAGEOFFSET;
	r->zeroed = ddih_all_zero(p, (size_t)size) ? 1 : 0;
	r->valid |= DDIH_V_HANDLE | DDIH_V_OFFSET | DDIH_V_ZEROED;
	return (0);
}

/* Would kmem_free(buf of `asize', size) panic or corrupt the heap? */
static boolean_t
ddih_kmem_free_bad(uint64_t asize, uint64_t size)
{
	uint64_t ac = ddih_kmem_cache(asize), fc = ddih_kmem_cache(size);

	if (ac != fc)
		return (B_TRUE);	/* another cache, or oversize vs cache */
	if (ac == 0 && size != asize)
		return (B_TRUE);	/* oversize: wrong size */
	if ((kmem_flags & DDIH_KMF_BUFTAG) != 0 && size != asize)
		return (B_TRUE);	/* buftag: bad free size */
	return (B_FALSE);
}

static int
ddih_kmem_free(ddih_file_t *df, ddih_req_t *r)
{
	uint64_t size = r->arg[0];
	ddih_obj_t *o;

	if (r->flags != 0)
		return (EINVAL);
	r->kind = DDIH_KIND_OK;
	if (r->handle == 0) {
		if (size != 0 && !ddih_guards_off)
			return (EINVAL);	/* NULL into a magazine */
		kmem_free(NULL, (size_t)size);
		return (0);
	}
	o = ddih_lookup(df, r->handle, DO_KMEM);
	if (o == NULL) {
		o = ddih_lookup(df, r->handle, DO_KMEM_FREED);
		if (o == NULL || !ddih_guards_off)
			return (EBADF);
		/* destructive: the duplicate free */
		kmem_free(o->do_u.do_kmem.dk_buf, (size_t)size);
		return (0);
	}
	if (!ddih_guards_off &&
	    ddih_kmem_free_bad(o->do_u.do_kmem.dk_size, size))
		return (EINVAL);
	kmem_free(o->do_u.do_kmem.dk_buf, (size_t)size);
	o->do_type = DO_KMEM_FREED;	/* tombstone; the pointer is stale */
	atomic_dec_32(&ddih_nkmem);
	return (0);
}

/* ---------------------------------------------------------------- devmap */

/*
 * The mapping record of the umem object whose cookie a dhp maps.  The
 * export of the current mmap names it (the fast path); a dhp whose cookie
 * is not that one (another process mmapping the same file at the same
 * time) is looked up in the whole table.  Called with df_lock held.
 */
static ddih_mref_t *
ddih_mref_of(ddih_file_t *df, ddi_umem_cookie_t cookie)
{
	ddih_obj_t *o;
	uint32_t i;

	ASSERT(mutex_owned(&df->df_lock));
	if (df->df_cur.de_handle != 0 &&
	    (o = ddih_lookup(df, df->df_cur.de_handle, DO_UMEM)) != NULL &&
	    o->do_u.do_umem.du_cookie == cookie)
		return (o->do_u.do_umem.du_mref);
	for (i = 0; i < df->df_cap; i++) {
		o = df->df_tab[i];
		if (o != NULL && o->do_type == DO_UMEM &&
		    o->do_u.do_umem.du_cookie == cookie)
			return (o->do_u.do_umem.du_mref);
	}
	return (NULL);
}

/*
 * devmap_map: devmap_setup calls it once per dhp, after every devmap(9E)
 * call of the mmap succeeded; the dhp starts to count here.  Its private
 * data is the buffer's mapping record.  A dhp without a cookie (a
 * MAPPING_INVALID export, destructive mode only) maps nothing and is not
 * counted.  A cookie no live object owns (freed by another thread since
 * devmap(9E)) fails the mmap: devmap_setup unmaps the dhps already
 * counted and returns ENXIO.
 */
static int
ddih_devmap_map(devmap_cookie_t dhp, dev_t dev, uint_t flags, offset_t off,
    size_t len, void **pvtp)
{
	ddi_umem_cookie_t cookie = ((devmap_handle_t *)dhp)->dh_cookie;
	ddih_file_t *df = ddi_get_soft_state(ddih_ss, getminor(dev));
	ddih_mref_t *mr;

	(void) flags;
	(void) off;
	(void) len;
	*pvtp = NULL;
	if (cookie == NULL)
		return (0);
	if (df == NULL)
		return (ENXIO);
	mutex_enter(&df->df_lock);
	if ((mr = ddih_mref_of(df, cookie)) != NULL) {
		mutex_enter(&ddih_mref_lock);
		mr->mr_maps++;
		mutex_exit(&ddih_mref_lock);
		*pvtp = mr;
	}
	mutex_exit(&df->df_lock);
	return (mr == NULL ? ENXIO : 0);
}

/* devmap_dup: fork copies the dhp; the copy maps the cookie too. */
static int
ddih_devmap_dup(devmap_cookie_t dhp, void *pvtp, devmap_cookie_t new_dhp,
    void **new_pvtp)
{
	ddih_mref_t *mr = pvtp;

	(void) dhp;
	(void) new_dhp;
	*new_pvtp = pvtp;
	if (mr != NULL) {
		mutex_enter(&ddih_mref_lock);
		mr->mr_maps++;
		mutex_exit(&ddih_mref_lock);
	}
	return (0);
}

/*
 * devmap_unmap: [off, off + len) of the dhp goes away.  What is left of
 * it is new_dhp1 (the part before the hole, the dhp itself) and new_dhp2
 * (the part after it: the dhp itself for a head unmap, a new dhp for a hole
 * in the middle); NULL for a part that does not exist (seg_dev.c:
 * segdev_unmap, devmap_handle_unmap_head/_tail, devmap_handle_unmap).  So
 * the dhp stops counting and every remaining part counts: a full unmap
 * drops one, a hole in the middle adds one, a head or tail unmap none.
 * This runs from munmap(2), exit and a failed devmap_setup, possibly after
 * close(9E) (segdev_unmap calls VOP_DELMAP first): it touches only the
 * mapping record.
 */
static void
ddih_devmap_unmap(devmap_cookie_t dhp, void *pvtp, offset_t off, size_t len,
    devmap_cookie_t new_dhp1, void **new_pvtp1, devmap_cookie_t new_dhp2,
    void **new_pvtp2)
{
	ddih_mref_t *mr = pvtp;
	uint32_t parts = 0;

	(void) dhp;
	(void) off;
	(void) len;
	if (new_dhp1 != NULL) {
		*new_pvtp1 = pvtp;
		parts++;
	}
	if (new_dhp2 != NULL) {
		*new_pvtp2 = pvtp;
		parts++;
	}
	if (mr == NULL)
		return;
	if (parts != 0) {
		mutex_enter(&ddih_mref_lock);
		mr->mr_maps += parts;
		mutex_exit(&ddih_mref_lock);
	}
	ddih_mref_rele(mr, B_FALSE);
}

static struct devmap_callback_ctl ddih_callbacks = {
	.devmap_rev = DEVMAP_OPS_REV,
	.devmap_map = ddih_devmap_map,
	.devmap_access = NULL,		/* MAP_PRIVATE stays EINVAL */
	.devmap_dup = ddih_devmap_dup,
	.devmap_unmap = ddih_devmap_unmap
};

/*
 * devmap(9E): see "Locking" above for the first call and continuations.
 * Any non-zero return makes mmap(2) fail with ENXIO (devmap_setup).
 */
static int
ddih_devmap(dev_t dev, devmap_cookie_t dhp, offset_t off, size_t len,
    size_t *maplen, uint_t model)
{
	ddih_file_t *df = ddi_get_soft_state(ddih_ss, getminor(dev));
	ddi_umem_cookie_t cookie = NULL;
	ddih_export_t *e;
	ddih_obj_t *o;
	boolean_t first;
	uint64_t koff, slen, ml;
	int err = 0;

	if (df == NULL)
		return (ENXIO);
	(void) model;		/* one layout for every data model */
	mutex_enter(&df->df_lock);
	e = &df->df_cur;
	if (off == 0 && df->df_export.de_set) {
		*e = df->df_export;
		df->df_export.de_set = B_FALSE;
		first = B_TRUE;
		koff = (uint64_t)e->de_off;
		slen = e->de_len;
	} else if (e->de_set && off > 0 && (uint64_t)off == df->df_cur_next) {
		first = B_FALSE;
		koff = (uint64_t)e->de_off + (uint64_t)off;
		slen = len;
		if (!ddih_guards_off && ddih_export_unsafe((int64_t)koff,
		    slen)) {
			err = EINVAL;
			goto out;
		}
	} else {
		err = ENXIO;		/* nothing exported for this mapping */
		goto out;
	}
	if (e->de_handle != 0) {
		if ((o = ddih_lookup(df, e->de_handle, DO_UMEM)) == NULL) {
			err = EBADF;
			goto fail;
		}
		cookie = o->do_u.do_umem.du_cookie;
	}
	if (devmap_umem_setup(dhp, ddih_dip, &ddih_callbacks, cookie,
	    (offset_t)koff, (size_t)slen, e->de_maxprot, e->de_flags, NULL) !=
	    DDI_SUCCESS) {
		err = EINVAL;
		goto fail;
	}
	if (first && e->de_twice &&
	    devmap_umem_setup(dhp, ddih_dip, &ddih_callbacks, cookie,
	    (offset_t)koff,
	    (size_t)slen, e->de_maxprot, e->de_flags, NULL) != DDI_SUCCESS) {
		err = EINVAL;		/* DEVMAP_SETUP_DONE */
		goto fail;
	}
	ml = ptob(btopr(len));
	if (first && e->de_maplen_set)
		ml = e->de_maplen;
	*maplen = (size_t)ml;
	df->df_cur_next = (uint64_t)off + ml;
	goto out;
fail:
	e->de_set = B_FALSE;
out:
	mutex_exit(&df->df_lock);
	return (err);
}

/* ---------------------------------------------------------------- ioctl */

static int
ddih_ioctl(dev_t dev, int cmd, intptr_t arg, int mode, cred_t *credp,
    int *rvalp)
{
	ddih_file_t *df = ddi_get_soft_state(ddih_ss, getminor(dev));
	uint_t nr = (uint_t)cmd & 0xff, type = ((uint_t)cmd >> 8) & 0xff;
	ddih_req_t r;
	uint32_t hdr[2];
	int err;

	(void) credp;
	*rvalp = 0;
	if (df == NULL)
		return (ENXIO);
	if (type != DDIH_IOC_TYPE || nr < 1 || nr > 3)
		return (ENOTTY);
	switch (ddi_model_convert_from(mode & FMODELS)) {
	case DDI_MODEL_ILP32:	/* same layout as LP64: see ddih_ioctl.h */
	case DDI_MODEL_NONE:
		break;
	default:
		return (EINVAL);
	}
	if (ddi_copyin((void *)arg, hdr, sizeof (hdr), mode) != 0)
		return (EFAULT);
	if (hdr[0] != DDIH_ABI_VERSION || hdr[1] != sizeof (r))
		return (EINVAL);
	if (ddi_copyin((void *)arg, &r, sizeof (r), mode) != 0)
		return (EFAULT);
	if (r.version != DDIH_ABI_VERSION || r.size != sizeof (r))
		return (EINVAL);	/* changed between the two copies */

	/* clear every out-field: nothing stale goes back */
	r.status = 0;
	r.kind = 0;
	r.valid = 0;
	r.ohandle = 0;
	r.value = r.offset = r.cookie_size = r.avail = r.total = 0;
	bzero(r.ctr, sizeof (r.ctr));
	r.type = r.zeroed = r.coherent = 0;

	if (DDIH_OP_FAMILY(r.op) != nr || r.pad != 0 ||
	    (r.xflags & ~(uint32_t)DDIH_XF_MAPLEN) != 0 ||
	    ((r.xflags & DDIH_XF_MAPLEN) && r.op != DDIH_OP_UMEM_EXPORT)) {
		err = EINVAL;
		goto out;
	}

	/*
	 * The results go back into the caller's request: make sure they can
	 * (ddi_copyout of the request with its out-fields cleared) before
	 * anything happens, so a request refused with EFAULT has no effect
	 * (an allocation the caller never hears of, or a free it cannot
	 * learn of).
	 */
	if (ddi_copyout(&r, (void *)arg, sizeof (r), mode) != 0)
		return (EFAULT);

	mutex_enter(&df->df_lock);
	switch (r.op) {
	case DDIH_OP_RMALLOCMAP:
	case DDIH_OP_RMALLOCMAP_WAIT:
		err = ddih_rmallocmap(df, &r);
		break;
	case DDIH_OP_RMALLOC:
		err = ddih_rmalloc(df, &r);
		break;
	case DDIH_OP_RMALLOC_WAIT:
		err = ddih_rmalloc_wait(df, &r);
		break;
	case DDIH_OP_RMFREE:
		err = ddih_rmfree(df, &r);
		break;
	case DDIH_OP_RMFREEMAP:
		err = ddih_rmfreemap(df, &r);
		break;
	case DDIH_OP_RMAP_STATE:
		err = ddih_rmap_state(df, &r);
		break;
	case DDIH_OP_RMAP_LAYOUT:
		err = ddih_rmap_layout(df, &r, mode);
		break;
	case DDIH_OP_UMEM_ALLOC:
		err = ddih_umem_alloc(df, &r);
		break;
	case DDIH_OP_UMEM_FREE:
		err = ddih_umem_free(df, &r);
		break;
	case DDIH_OP_UMEM_EXPORT:
		err = ddih_umem_export(df, &r);
		break;
	case DDIH_OP_UMEM_CHECK:
		err = ddih_umem_pattern(df, &r, B_FALSE);
		break;
	case DDIH_OP_UMEM_FILL:
		err = ddih_umem_pattern(df, &r, B_TRUE);
		break;
	case DDIH_OP_KMEM_ALLOC:
		err = ddih_kmem_alloc(df, &r, B_FALSE);
		break;
	case DDIH_OP_KMEM_ZALLOC:
		err = ddih_kmem_alloc(df, &r, B_TRUE);
		break;
	case DDIH_OP_KMEM_FREE:
		err = ddih_kmem_free(df, &r);
		break;
	default:
		err = EINVAL;
		break;
	}
	mutex_exit(&df->df_lock);
out:
	r.status = err;
	if (err != 0)
		r.kind = 0;
	if (ddi_copyout(&r, (void *)arg, sizeof (r), mode) != 0)
		return (EFAULT);
	return (err);
}

/* ---------------------------------------------------------------- open */

static int
ddih_open(dev_t *devp, int flag, int otyp, cred_t *credp)
{
	ddih_file_t *df;
	id_t id;
	int err;

	(void) flag;
	if (otyp != OTYP_CHR)
		return (EINVAL);
	if (getminor(*devp) != 0)
		return (ENXIO);
	if ((err = drv_priv(credp)) != 0)
		return (err);
	if ((id = id_alloc_nosleep(ddih_minors)) == -1)
		return (EAGAIN);
	if (ddi_soft_state_zalloc(ddih_ss, (int)id) != DDI_SUCCESS) {
		id_free(ddih_minors, id);
		return (ENOMEM);
	}
	df = ddi_get_soft_state(ddih_ss, (int)id);
	mutex_init(&df->df_lock, NULL, MUTEX_DRIVER, NULL);
	df->df_minor = (minor_t)id;
	atomic_inc_32(&ddih_nfiles);
	*devp = makedevice(getmajor(*devp), (minor_t)id);
	return (0);
}

static int
ddih_close(dev_t dev, int flag, int otyp, cred_t *credp)
{
	minor_t minor = getminor(dev);
	ddih_file_t *df = ddi_get_soft_state(ddih_ss, (int)minor);
	uint32_t i;

	(void) flag;
	(void) otyp;
	(void) credp;
	if (df == NULL)
		return (ENXIO);
	mutex_enter(&df->df_lock);
	for (i = 0; i < df->df_cap; i++) {
		ddih_obj_t *o = df->df_tab[i];

		if (o == NULL)
			continue;
		df->df_tab[i] = NULL;
		switch (o->do_type) {
		case DO_MAP:
			ddih_map_release(&o->do_u.do_map);
			kmem_free(o, sizeof (*o));
			atomic_dec_32(&ddih_nmaps);
			break;
		case DO_UMEM:
			ddih_umem_destroy(o);
			break;
		case DO_KMEM:
			kmem_free(o->do_u.do_kmem.dk_buf,
			    o->do_u.do_kmem.dk_size);
			kmem_free(o, sizeof (*o));
			atomic_dec_32(&ddih_nkmem);
			break;
		case DO_KMEM_FREED:
			kmem_free(o, sizeof (*o));
			break;
		}
	}
	if (df->df_cap != 0)
		kmem_free(df->df_tab, df->df_cap * sizeof (ddih_obj_t *));
	df->df_tab = NULL;
	df->df_cap = df->df_nhandles = 0;
	mutex_exit(&df->df_lock);
	mutex_destroy(&df->df_lock);
	ddi_soft_state_free(ddih_ss, (int)minor);
	id_free(ddih_minors, (id_t)minor);
	atomic_dec_32(&ddih_nfiles);
	return (0);
}

/* ---------------------------------------------------------------- kstat */

typedef struct ddih_kstats {
	kstat_named_t	dk_maps;
	kstat_named_t	dk_umem;
	kstat_named_t	dk_kmem;
	kstat_named_t	dk_files;
	kstat_named_t	dk_destructive;
} ddih_kstats_t;

static int
ddih_kstat_update(kstat_t *ksp, int rw)
{
	ddih_kstats_t *k = ksp->ks_data;

	if (rw == KSTAT_WRITE)
		return (EACCES);
	k->dk_maps.value.ui32 = ddih_nmaps;
	k->dk_umem.value.ui32 = ddih_numem;
	k->dk_kmem.value.ui32 = ddih_nkmem;
	k->dk_files.value.ui32 = ddih_nfiles;
	k->dk_destructive.value.ui32 = ddih_guards_off ? 1 : 0;
	return (0);
}

static void
ddih_kstat_create(void)
{
	ddih_kstats_t *k;

	ddih_ksp = kstat_create("ddih", 0, "objects", "misc", KSTAT_TYPE_NAMED,
	    sizeof (ddih_kstats_t) / sizeof (kstat_named_t), 0);
	if (ddih_ksp == NULL)
		return;		/* only a debugging aid */
	k = ddih_ksp->ks_data;
	kstat_named_init(&k->dk_maps, "maps", KSTAT_DATA_UINT32);
	kstat_named_init(&k->dk_umem, "umem", KSTAT_DATA_UINT32);
	kstat_named_init(&k->dk_kmem, "kmem", KSTAT_DATA_UINT32);
	kstat_named_init(&k->dk_files, "files", KSTAT_DATA_UINT32);
	kstat_named_init(&k->dk_destructive, "destructive",
	    KSTAT_DATA_UINT32);
	ddih_ksp->ks_update = ddih_kstat_update;
	kstat_install(ddih_ksp);
}

/* ---------------------------------------------------------------- attach */

static int
ddih_attach(dev_info_t *dip, ddi_attach_cmd_t cmd)
{
	int prop;

	switch (cmd) {
	case DDI_ATTACH:
		break;
	case DDI_RESUME:
		return (DDI_SUCCESS);
	default:
		return (DDI_FAILURE);
	}
	if (ddi_get_instance(dip) != 0 || ddih_dip != NULL)
		return (DDI_FAILURE);
	prop = ddi_prop_get_int(DDI_DEV_T_ANY, dip, DDI_PROP_DONTPASS,
	    "destructive", 0);
	ddih_guards_off = (prop != 0 || ddih_destructive != 0);
	if (ddi_create_minor_node(dip, "ddih", S_IFCHR, 0, DDI_PSEUDO, 0) !=
	    DDI_SUCCESS)
		return (DDI_FAILURE);
	ddih_dip = dip;
	ddih_kstat_create();
	ddi_report_dev(dip);
	cmn_err(CE_NOTE, "!ddih: attached, destructive=%d",
	    ddih_guards_off ? 1 : 0);
	return (DDI_SUCCESS);
}

static int
ddih_detach(dev_info_t *dip, ddi_detach_cmd_t cmd)
{
	switch (cmd) {
	case DDI_DETACH:
		break;
	case DDI_SUSPEND:
		return (DDI_SUCCESS);
	default:
		return (DDI_FAILURE);
	}
	if (ddih_nfiles != 0 || ddih_nmrefs != 0)
		return (DDI_FAILURE);	/* unmap callbacks may still come */
	if (ddih_ksp != NULL) {
		kstat_delete(ddih_ksp);
		ddih_ksp = NULL;
	}
	ddi_remove_minor_node(dip, NULL);
	ddih_dip = NULL;
	return (DDI_SUCCESS);
}

static int
ddih_getinfo(dev_info_t *dip, ddi_info_cmd_t cmd, void *arg, void **resultp)
{
	(void) dip;
	(void) arg;
	switch (cmd) {
	case DDI_INFO_DEVT2DEVINFO:
		if (ddih_dip == NULL)
			return (DDI_FAILURE);
		*resultp = ddih_dip;
		return (DDI_SUCCESS);
	case DDI_INFO_DEVT2INSTANCE:
		*resultp = (void *)0;	/* every minor belongs to instance 0 */
		return (DDI_SUCCESS);
	default:
		return (DDI_FAILURE);
	}
}

/* ---------------------------------------------------------------- module */

static struct cb_ops ddih_cb_ops = {
	.cb_open = ddih_open,
	.cb_close = ddih_close,
	.cb_strategy = nodev,
	.cb_print = nodev,
	.cb_dump = nodev,
	.cb_read = nodev,
	.cb_write = nodev,
	.cb_ioctl = ddih_ioctl,
	.cb_devmap = ddih_devmap,
	.cb_mmap = nodev,
	.cb_segmap = ddi_devmap_segmap,
	.cb_chpoll = nochpoll,
	.cb_prop_op = ddi_prop_op,
	.cb_str = NULL,
	.cb_flag = D_NEW | D_MP | D_DEVMAP,
	.cb_rev = CB_REV,
	.cb_aread = nodev,
	.cb_awrite = nodev
};

static struct dev_ops ddih_dev_ops = {
	.devo_rev = DEVO_REV,
	.devo_refcnt = 0,
	.devo_getinfo = ddih_getinfo,
	.devo_identify = nulldev,
	.devo_probe = nulldev,
	.devo_attach = ddih_attach,
	.devo_detach = ddih_detach,
	.devo_reset = nodev,
	.devo_cb_ops = &ddih_cb_ops,
	.devo_bus_ops = NULL,
	.devo_power = NULL,
	.devo_quiesce = ddi_quiesce_not_needed
};

static struct modldrv ddih_modldrv = {
	&mod_driverops,
	"ddi-harness memory routines",
	&ddih_dev_ops
};

static struct modlinkage ddih_modlinkage = {
	MODREV_1,
	{ &ddih_modldrv, NULL }
};

int
_init(void)
{
	int err;

	if ((err = ddi_soft_state_init(&ddih_ss, sizeof (ddih_file_t), 1)) !=
	    0)
		return (err);
	ddih_minors = id_space_create("ddih_minors", 1, DDIH_MAX_OPENS + 1);
	if (ddih_minors == NULL) {
		ddi_soft_state_fini(&ddih_ss);
		return (ENOMEM);
	}
	mutex_init(&ddih_mref_lock, NULL, MUTEX_DRIVER, NULL);
	if ((err = mod_install(&ddih_modlinkage)) != 0) {
		mutex_destroy(&ddih_mref_lock);
		id_space_destroy(ddih_minors);
		ddi_soft_state_fini(&ddih_ss);
	}
	return (err);
}

int
_fini(void)
{
	int err;

	if ((err = mod_remove(&ddih_modlinkage)) != 0)
		return (err);
	mutex_destroy(&ddih_mref_lock);
	id_space_destroy(ddih_minors);
	ddi_soft_state_fini(&ddih_ss);
	return (0);
}

int
_info(struct modinfo *modinfop)
{
	return (mod_info(&ddih_modlinkage, modinfop));
}
