// SPDX-License-Identifier: GPL-2.0
/*
 * ddih: DDI memory-routine harness driver, Linux port.
 *
 * Big Theory Statement
 * ====================
 *
 * What the driver is for
 * ----------------------
 * ddi-harness checks what the kernel memory routines that drivers use
 * really do, by calling them on request and comparing each result with a
 * Python model (harness/model).  On illumos the routines are the DDI ones
 * (rmalloc(9F), ddi_umem_alloc(9F), kmem_alloc(9F)); this Linux port serves
 * the same ioctl ABI (kmod/ddih_ioctl.h) on Linux's nearest real
 * equivalents:
 *
 *	resource maps	gen_pool (gen_pool_create(0, -1), first fit)
 *	umem		vmalloc_user / __vmalloc, exported by mmap(2) with
 *			remap_vmalloc_range
 *	kmem		kmalloc / kzalloc / kfree, ksize reported
 *
 * The exact port policy (which inputs are refused, with which errno, and
 * what is reported) is written in kmod/README.md, "Linux port policy"; the
 * "linux" model mirrors that text, and so does this file.  Do not change
 * one without the other.
 *
 * User space (guest/ddictl) sends one struct ddih_req per op through one of
 * three ioctls (one per op family) on /dev/ddih, a misc device that is
 * root-only (mode 0600).
 *
 * Handle model
 * ------------
 * Every open file owns a handle table (an idr).  Creating an object
 * (rmallocmap, umem_alloc, kmem_alloc, ...) allocates a handle >= 1 in the
 * table of the file that asked; handle 0 means "none" / a NULL pointer.
 * Handles are allocated cyclically, so a released number is not handed out
 * again soon.  Every use looks the handle up in the caller's own table and
 * checks its type; a handle that is unknown, released, or of another type
 * gets EBADF.  A file cannot name another file's objects at all.  The driver
 * never copies a kernel address to user space: memory results carry only
 * `offset = addr & (PAGE_SIZE - 1)' and sizes.
 *
 * kmem handles are not removed by kmem_free: they become tombstones that
 * remember the freed pointer, so that a second kmem_free of the same
 * handle can be refused (EBADF) or, in destructive mode, passed to kfree
 * again (the duplicate-free probes).
 *
 * release() (the last close of the file) frees everything the file still
 * owns: for a map, every unit still allocated is cleared chunk by chunk in
 * the bitmaps before gen_pool_destroy (which would otherwise BUG); umem
 * buffers are vfree'd (release() runs only once no VMA maps the file: each
 * VMA holds it, so no mapping is left), kmem buffers kfree'd.  Closing the
 * device therefore never leaks or BUGs, and a test can verify that with
 * the read-only module parameters `outstanding' (live objects over all
 * files) and `objects' (per kind).
 *
 * Validation rules
 * ----------------
 * Every request is checked before anything is touched:
 *   - the ioctl type and number, then `version' == DDIH_ABI_VERSION and
 *     `size' == sizeof (struct ddih_req) (EINVAL otherwise; a short user
 *     buffer gives EFAULT);
 *   - `op' known and belonging to the ioctl's family, reserved fields
 *     (`xflags' bits, `pad') zero, flag words within their defined bits
 *     (EINVAL);
 *   - the handle: live, owned by this file, of the right type (EBADF);
 *   - sizes and ranges as the policy says: rmfree size 0, a range that
 *     wraps past 2^64, a free of units that are not all allocated, index 0
 *     (EINVAL), a new chunk larger than 2^24 units (E2BIG), more than 4096
 *     chunks (ENOSPC), umem larger than 64 MiB and kmem larger than 4 MiB
 *     (NULL, the allocator is not called), export ranges and protections
 *     (EINVAL, EACCES).
 *   - at most DDIH_MAX_HANDLES handles per file (ENOSPC).
 *
 * Destructive mode
 * ----------------
 * With `destructive=0' (the default) misuse that would crash or corrupt
 * the kernel is refused with an errno.  With `destructive=1' exactly five
 * guards are dropped and the request reaches the kernel as is:
 *   - rmfree of units that are not all allocated (or that gen_pool_free
 *     would reject): gen_pool_free is called and BUGs (genalloc.c:505/508);
 *   - rmfreemap with outstanding allocations: gen_pool_destroy BUGs (255);
 *   - kmem_free of an already freed handle: the pointer is kfree'd again;
 *   - umem_free of a buffer a process still maps (EBUSY; see "Mappings");
 *   - umem_export with DEVMAP_MAPPING_INVALID | DEVMAP_ALLOW_REMAP
 *     (EINVAL at the UMEM_EXPORT ioctl).
 * The last two guard the illumos port against a panic (a fault on a freed
 * or NULL cookie); Linux would survive both (vfree leaves mapped pages to
 * their page references, and the port maps the buffer whatever the devmap
 * flags), but the port keeps the same policy so that one guarded corpus
 * holds on both.
 *
 * The rmfree guard and release() decide from gen_pool's own state, which
 * is as exact as a record of the driver's: gen_pool_free takes the first
 * chunk of the chunk list (newest first, an order nothing ever changes)
 * that holds the address, and ddih_free_ok walks the same list and checks
 * the same bits; release() clears every set bit of every chunk, whichever
 * allocation set it.  Nothing depends on an order the kernel may change
 * later (the illumos port's problem with vmem's hash chains).
 *
 * Layout reporting
 * ----------------
 * RMAP_LAYOUT (a harness helper, like RMAP_STATE) reports a map's whole
 * layout in the map's units, never an address: every chunk of the pool in
 * its list order (newest first) as a span, followed by the runs of
 * allocated and free units of its bitmap in address order (struct
 * ddih_seg, at most DDIH_LAYOUT_MAX entries copied to the caller's array,
 * the total count in `value').  It reads the list under RCU and df_lock and
 * changes nothing, so a refused copy (EFAULT) has no effect.  ddictl calls
 * it after each resource-map step when the trace turned `layout=on'.
 *
 * Mappings
 * --------
 * Each umem buffer counts the VMAs that map it (struct ddih_mref, the
 * VMA's vm_private_data): ddih_mmap counts the new VMA once it is mapped
 * and installs ddih_vm_ops, whose open (fork, a split by a partial munmap
 * or mprotect, mremap) counts a copy and whose close (munmap, exit, the
 * removed piece of a split) uncounts one.  umem_free of a buffer with a
 * non-zero count is refused with EBUSY unless destructive.  The record
 * outlives the buffer while a VMA still points to it.  A failure of
 * mmap_region after ddih_mmap succeeded (it does not call close) would
 * leave the count one too high: the buffer then stays busy until the file
 * is closed, which frees it anyway (memory-safe, never a missed mapping).
 * Every other guard (size and range checks, caps) holds in both modes:
 * they keep the results predictable rather than protect the kernel.  After
 * a BUG the calling task is killed with the file's mutex held; the guest
 * must be rebooted (the harness treats the step as a panic).
 *
 * Locking
 * -------
 * Each open file has a mutex (df_lock) that serialises its table and all
 * bookkeeping: every op runs under it except the sleep of rmalloc_wait.
 * gen_pool_alloc and gen_pool_free are lock-free, and gen_pool_add has its
 * own spinlock, so a sleeper may call gen_pool_alloc without df_lock while
 * another thread of the same file runs rmfree under it.  rmalloc_wait takes
 * a waiter count on the map under df_lock before sleeping; rmfreemap
 * refuses (EBUSY) while that count is non-zero, so a sleeping waiter's map
 * cannot disappear.  Sleepers wait interruptibly on the map's wait queue,
 * woken by every successful rmfree on that map; a signal ends the wait with
 * -ERESTARTSYS (EINTR for handlers without SA_RESTART, or the task dies).
 * release() cannot run while an ioctl is in progress on the file (the
 * ioctl holds a file reference), so it needs no waiter handling.  Driver
 * wide counters are atomics.
 *
 * Fault injection
 * ---------------
 * The `fault' parameter (a comma-separated list, set at load time) makes
 * the driver misbehave on purpose, so that a conformance run can prove it
 * catches real faults.  Each one is safe for the kernel:
 *   rmfree_off_by_one	rmfree's add branch adds size+1 units
 *   umem_not_zeroed	ddi_umem_alloc memory gets one non-zero byte
 *   kmem_bad_offset	kmem results report the address offset plus 4
 *   wait_never_woken	rmfree does not wake rmalloc_wait sleepers
 *   fail_<op>		rmallocmap, rmfree (add), umem_alloc or kmem_alloc
 *			fails as if the kernel had returned NULL/-ENOMEM
 */

#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/miscdevice.h>
#include <linux/fs.h>
#include <linux/mm.h>
#include <linux/mman.h>
#include <linux/slab.h>
#include <linux/vmalloc.h>
#include <linux/genalloc.h>
#include <linux/idr.h>
#include <linux/mutex.h>
#include <linux/wait.h>
#include <linux/uaccess.h>
#include <linux/bitmap.h>
#include <linux/rculist.h>
#include <linux/atomic.h>
#include <linux/sched/signal.h>

#include "../ddih_ioctl.h"

#define	DDIH_MAX_HANDLES	65536
#define	DDIH_RMAP_MAX_CHUNK	(1ULL << 24)	/* units per added chunk */
#define	DDIH_RMAP_MAX_CHUNKS	4096		/* chunks per map */
#define	DDIH_UMEM_MAX		(64ULL << 20)	/* bytes */
#define	DDIH_KMEM_MAX		(4ULL << 20)	/* bytes (KMALLOC_MAX_SIZE) */
/*
 * Driver-wide caps on what callers may hold, so that no sequence of valid
 * requests can drive the guest into the OOM killer: past them an
 * allocation returns NULL, as a failed NOSLEEP allocation would.
 */
#define	DDIH_UMEM_TOTAL_MAX	(128ULL << 20)	/* bytes, sum of PAGE_ALIGN(size) */
#define	DDIH_RMAP_TOTAL_UNITS	(1ULL << 28)	/* units in all chunks: 32 MiB of bitmap */
#define	DDIH_KMEM_TOTAL_MAX	(64ULL << 20)	/* bytes, sum of ksize() */

#define	DDIH_UMEM_FLAGS	(DDIH_UMEM_NOSLEEP | DDIH_UMEM_PAGEABLE | \
			 DDIH_UMEM_TRASH)
#define	DDIH_KM_FLAGS	(DDIH_KM_NOSLEEP | DDIH_KM_PUSHPAGE | DDIH_KM_NORMALPRI)
#define	DDIH_DEVMAP_FLAGS (DDIH_DEVMAP_MAPPING_INVALID | \
			 DDIH_DEVMAP_ALLOW_REMAP | DDIH_DEVMAP_USE_PAGESIZE)
#define	DDIH_PROT_FLAGS	(DDIH_PROT_READ | DDIH_PROT_WRITE | DDIH_PROT_EXEC | \
			 DDIH_PROT_USER)

/* ---------------------------------------------------------------- params */

static bool destructive;
module_param(destructive, bool, 0444);
MODULE_PARM_DESC(destructive,
	"0: refuse misuse with an errno (default); 1: pass misuse to the kernel");

static char *fault;
module_param(fault, charp, 0444);
MODULE_PARM_DESC(fault, "comma-separated faults to inject (see the theory statement)");

static atomic_t ddih_nmaps = ATOMIC_INIT(0);
static atomic_t ddih_numem = ATOMIC_INIT(0);
static atomic_t ddih_nkmem = ATOMIC_INIT(0);
static atomic_t ddih_nfiles = ATOMIC_INIT(0);
static atomic64_t ddih_umem_bytes = ATOMIC64_INIT(0);	/* against DDIH_UMEM_TOTAL_MAX */
static atomic64_t ddih_kmem_bytes = ATOMIC64_INIT(0);	/* against DDIH_KMEM_TOTAL_MAX */
static atomic64_t ddih_rmap_units = ATOMIC64_INIT(0);	/* against DDIH_RMAP_TOTAL_UNITS */

/* Reserve n bytes under a cap; false (nothing reserved) when it would pass it. */
static bool ddih_reserve(atomic64_t *used, u64 n, u64 cap)
{
	if ((u64)atomic64_add_return(n, used) > cap) {
		atomic64_sub(n, used);
		return false;
	}
	return true;
}

static int ddih_get_outstanding(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%d\n", atomic_read(&ddih_nmaps) +
	    atomic_read(&ddih_numem) + atomic_read(&ddih_nkmem));
}

static int ddih_get_objects(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "maps=%d umem=%d kmem=%d files=%d\n",
	    atomic_read(&ddih_nmaps), atomic_read(&ddih_numem),
	    atomic_read(&ddih_nkmem), atomic_read(&ddih_nfiles));
}

static const struct kernel_param_ops ddih_outstanding_ops = {
	.get = ddih_get_outstanding,
};
static const struct kernel_param_ops ddih_objects_ops = {
	.get = ddih_get_objects,
};
module_param_cb(outstanding, &ddih_outstanding_ops, NULL, 0444);
MODULE_PARM_DESC(outstanding, "live objects over all open files (read-only)");
module_param_cb(objects, &ddih_objects_ops, NULL, 0444);
MODULE_PARM_DESC(objects, "live maps, umem and kmem buffers, open files");

/* Is the named fault in the `fault' list?  (Whole names between commas.) */
static bool ddih_fault(const char *name)
{
	size_t n = strlen(name);
	const char *p = fault;

	while (p != NULL && *p != '\0') {
		const char *end = strchrnul(p, ',');

		if ((size_t)(end - p) == n && strncmp(p, name, n) == 0)
			return true;
		p = (*end == ',') ? end + 1 : end;
	}
	return false;
}

/* fail_<site>: make an allocation fail as if the kernel returned NULL. */
static bool ddih_fault_hit(const char *site)
{
	char name[32];

	snprintf(name, sizeof (name), "fail_%s", site);
	return ddih_fault(name);
}

/* ---------------------------------------------------------------- objects */

enum ddih_otype { DO_MAP = 1, DO_UMEM, DO_KMEM, DO_KMEM_FREED };

struct ddih_map {
	struct gen_pool		*dm_pool;
	wait_queue_head_t	dm_wq;		/* rmalloc_wait sleepers */
	unsigned int		dm_nchunks;	/* chunks added so far */
	u64			dm_units;	/* units in them (the driver-wide cap) */
	unsigned int		dm_waiters;	/* under df_lock */
};

/*
 * The live user mappings of one umem buffer: the VMAs that map it, counted
 * by ddih_vm_ops (open: a copy by fork, split or mremap; close: a VMA
 * going away) and by ddih_mmap for the first one.  It is each VMA's
 * vm_private_data and outlives the buffer's object while a VMA still
 * points to it (destructive mode frees a mapped buffer); the last of
 * buffer and VMAs frees it.  Guarded by ddih_mref_lock.
 */
struct ddih_mref {
	unsigned int	mr_maps;	/* live VMAs */
	bool		mr_live;	/* the umem object still refers to it */
};

static DEFINE_SPINLOCK(ddih_mref_lock);

struct ddih_umem {
	struct ddih_mref *du_mref;	/* its live mappings */
	void		*du_buf;
	size_t		du_size;	/* PAGE_ALIGN(requested size) */
	bool		du_usermap;	/* vmalloc_user: remap_vmalloc_range ok */
	uint32_t	du_type;
};

struct ddih_obj {
	enum ddih_otype	do_type;
	union {
		struct ddih_map		do_map;
		struct ddih_umem	do_umem;
		void			*do_kmem;	/* also for KMEM_FREED */
	};
};

struct ddih_export {		/* the pending export consumed by mmap */
	bool		de_set;
	uint32_t	de_handle;
	int64_t		de_off;
	uint64_t	de_len;
	uint32_t	de_maxprot;
	uint32_t	de_flags;
	bool		de_maplen_set;
	uint64_t	de_maplen;
	bool		de_twice;
};

struct ddih_file {
	struct mutex		df_lock;
	struct idr		df_idr;
	unsigned int		df_nhandles;
	struct ddih_export	df_export;
};

static struct ddih_obj *ddih_lookup(struct ddih_file *df, uint32_t h,
    enum ddih_otype type)
{
	struct ddih_obj *o;

	if (h == 0 || h > INT_MAX)
		return NULL;
	o = idr_find(&df->df_idr, h);
	if (o == NULL || o->do_type != type)
		return NULL;
	return o;
}

static int ddih_insert(struct ddih_file *df, struct ddih_obj *o, uint32_t *hp)
{
	int id;

	if (df->df_nhandles >= DDIH_MAX_HANDLES)
		return -ENOSPC;
	id = idr_alloc_cyclic(&df->df_idr, o, 1, 0, GFP_KERNEL);
	if (id < 0)
		return id;
	df->df_nhandles++;
	*hp = id;
	return 0;
}

static void ddih_remove(struct ddih_file *df, uint32_t h)
{
	idr_remove(&df->df_idr, h);
	df->df_nhandles--;
}

static void ddih_state(struct ddih_req *r, struct ddih_map *m)
{
	r->avail = gen_pool_avail(m->dm_pool);
	r->total = gen_pool_size(m->dm_pool);
	r->valid |= DDIH_V_STATE;
}

/* ---------------------------------------------------------------- rmap */

/*
 * Would gen_pool_free(pool, addr, size) BUG?  It takes the first chunk in
 * list order (newest first) with start <= addr <= end, BUGs if the range
 * runs past that chunk's end (genalloc.c:505) and if any unit of the range
 * is not currently allocated (genalloc.c:508).  Returns true if the free is
 * safe.  The caller has checked that addr + size - 1 does not wrap.
 */
static bool ddih_free_ok(struct gen_pool *pool, unsigned long addr,
    unsigned long size)
{
	struct gen_pool_chunk *c;
	bool ok = false;

	rcu_read_lock();
	list_for_each_entry_rcu(c, &pool->chunks, next_chunk) {
		unsigned long first, last;

		if (addr < c->start_addr || addr > c->end_addr)
			continue;
		if (addr + size - 1 > c->end_addr)
			break;
		first = addr - c->start_addr;
		last = first + size;	/* exclusive */
		ok = find_next_zero_bit(c->bits, last, first) >= last;
		break;
	}
	rcu_read_unlock();
	return ok;
}

/*
 * Give back every allocated unit so that gen_pool_destroy cannot BUG.  The
 * bits are cleared chunk by chunk directly: with overlapping chunks a
 * gen_pool_free could pick a different chunk than the one that holds the
 * allocation.  Only release() calls this, when nothing else uses the pool.
 */
static void ddih_map_drain(struct gen_pool *pool)
{
	struct gen_pool_chunk *c;

	list_for_each_entry(c, &pool->chunks, next_chunk) {
		unsigned long nbits = c->end_addr - c->start_addr + 1;
		unsigned long b = 0, e;

		if (c->end_addr < c->start_addr)	/* cannot be added */
			continue;
		for (;;) {
			b = find_next_bit(c->bits, nbits, b);
			if (b >= nbits)
				break;
			e = find_next_zero_bit(c->bits, nbits, b);
			bitmap_clear(c->bits, b, e - b);
			atomic_long_add(e - b, &c->avail);
			b = e;
		}
	}
}

static int ddih_rmallocmap(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_obj *o;
	int err;

	if (r->handle != 0 || r->flags != 0)
		return -EINVAL;
	o = kzalloc(sizeof (*o), GFP_KERNEL);
	if (o == NULL)
		return -ENOMEM;
	o->do_type = DO_MAP;
	o->do_map.dm_pool = ddih_fault_hit("rmallocmap") ? NULL :
	    gen_pool_create(0, -1);
	if (o->do_map.dm_pool == NULL) {
		kfree(o);
		r->kind = DDIH_KIND_NULL;
		return 0;
	}
	init_waitqueue_head(&o->do_map.dm_wq);
	err = ddih_insert(df, o, &r->ohandle);
	if (err != 0) {
		gen_pool_destroy(o->do_map.dm_pool);
		kfree(o);
		return err;
	}
	atomic_inc(&ddih_nmaps);
	r->valid |= DDIH_V_HANDLE;
	r->kind = DDIH_KIND_OK;
	ddih_state(r, &o->do_map);
	return 0;
}

static int ddih_rmalloc(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_obj *o = ddih_lookup(df, r->handle, DO_MAP);

	if (o == NULL)
		return -EBADF;
	if (r->flags != 0)
		return -EINVAL;
	/* gen_pool_alloc returns 0 for size 0 and on failure */
	r->value = gen_pool_alloc(o->do_map.dm_pool, r->arg[0]);
	r->kind = DDIH_KIND_VALUE;
	r->valid |= DDIH_V_VALUE;
	ddih_state(r, &o->do_map);
	return 0;
}

/* Called with df_lock held; returns with df_lock held. */
static int ddih_rmalloc_wait(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_obj *o = ddih_lookup(df, r->handle, DO_MAP);
	struct ddih_map *m;
	unsigned long size = r->arg[0];
	unsigned long addr = 0;
	int err;

	if (o == NULL)
		return -EBADF;
	if (r->flags != 0)
		return -EINVAL;
	m = &o->do_map;
	ddih_state(r, m);
	if (size == 0)
		return -EINVAL;
	m->dm_waiters++;
	mutex_unlock(&df->df_lock);
	/*
	 * Index 0 can never be handed out (rmfree refuses to add a range at
	 * 0 and ranges that wrap), so a 0 from gen_pool_alloc is a failure.
	 */
	err = wait_event_interruptible(m->dm_wq,
	    (addr = gen_pool_alloc(m->dm_pool, size)) != 0);
	mutex_lock(&df->df_lock);
	m->dm_waiters--;
	ddih_state(r, m);
	if (err != 0)
		return err;
	r->value = addr;
	r->kind = DDIH_KIND_VALUE;
	r->valid |= DDIH_V_VALUE;
	return 0;
}

static int ddih_rmfree(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_obj *o = ddih_lookup(df, r->handle, DO_MAP);
	struct ddih_map *m;
	uint64_t size = r->arg[0], index = r->arg[1];
	int err;

	if (o == NULL)
		return -EBADF;
	if (r->flags != 0)
		return -EINVAL;
	m = &o->do_map;
	ddih_state(r, m);
	if (size == 0)
		return -EINVAL;
	if (size - 1 > U64_MAX - index)		/* index + size - 1 wraps */
		return -EINVAL;

	if (gen_pool_has_addr(m->dm_pool, index, size)) {
		if (!destructive && !ddih_free_ok(m->dm_pool, index, size))
			return -EINVAL;
		gen_pool_free(m->dm_pool, index, size);
	} else {
		if (index == 0)
			return -EINVAL;
		if (size > DDIH_RMAP_MAX_CHUNK)
			return -E2BIG;
		if (m->dm_nchunks >= DDIH_RMAP_MAX_CHUNKS)
			return -ENOSPC;
		if (!ddih_reserve(&ddih_rmap_units, size, DDIH_RMAP_TOTAL_UNITS))
			return -ENOMEM;	/* bitmap memory: the driver-wide cap */
		err = ddih_fault_hit("rmfree") ? -ENOMEM :
		    gen_pool_add(m->dm_pool, index,
		    size + (ddih_fault("rmfree_off_by_one") ? 1 : 0), -1);
		if (err != 0) {
			atomic64_sub(size, &ddih_rmap_units);
			return -ENOMEM;
		}
		m->dm_nchunks++;
		m->dm_units += size;
	}
	r->kind = DDIH_KIND_OK;
	ddih_state(r, m);	/* the counters before any sleeper retries */
	if (!ddih_fault("wait_never_woken"))
		wake_up_interruptible_all(&m->dm_wq);
	return 0;
}

static void ddih_map_destroy(struct ddih_obj *o)
{
	atomic64_sub(o->do_map.dm_units, &ddih_rmap_units);
	gen_pool_destroy(o->do_map.dm_pool);
	kfree(o);
	atomic_dec(&ddih_nmaps);
}

static int ddih_rmfreemap(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_obj *o = ddih_lookup(df, r->handle, DO_MAP);
	struct ddih_map *m;

	if (o == NULL)
		return -EBADF;
	if (r->flags != 0)
		return -EINVAL;
	m = &o->do_map;
	ddih_state(r, m);
	/* a sleeping rmalloc_wait still uses the map: never free under it */
	if (m->dm_waiters != 0)
		return -EBUSY;
	if (!destructive &&
	    gen_pool_avail(m->dm_pool) != gen_pool_size(m->dm_pool))
		return -EBUSY;
	ddih_remove(df, r->handle);
	r->valid &= ~DDIH_V_STATE;
	ddih_map_destroy(o);		/* destructive: may BUG here */
	r->kind = DDIH_KIND_OK;
	return 0;
}

/* RMAP_STATE: the map's counters, no routine called (a harness helper). */
static int ddih_rmap_state(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_obj *o = ddih_lookup(df, r->handle, DO_MAP);

	if (o == NULL)
		return -EBADF;
	if (r->flags != 0)
		return -EINVAL;
	r->kind = DDIH_KIND_OK;
	ddih_state(r, &o->do_map);
	return 0;
}

/*
 * RMAP_LAYOUT: the map's layout (a harness helper; no routine called).
 * Each chunk in the pool's list order (newest first, as gen_pool keeps
 * it) as a SPAN of its units, then the maximal runs of allocated and free
 * units of its bitmap in address order.  Up to a1 entries go to the user
 * array at a0; value is how many there are in all.  Read under df_lock
 * and RCU (as gen_pool walks the list); only a sleeping rmalloc_wait of
 * this file can set bits meanwhile, and ddictl asks once waiters settled.
 */
static void ddih_seg_put(struct ddih_seg *segs, uint64_t max, uint64_t *n,
    uint32_t type, uint64_t start, uint64_t size)
{
	if (*n < max) {
		segs[*n].start = start;
		segs[*n].size = size;
		segs[*n].type = type;
		segs[*n].flist = DDIH_SEG_NOLIST;
	}
	(*n)++;
}

static int ddih_rmap_layout(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_obj *o = ddih_lookup(df, r->handle, DO_MAP);
	struct gen_pool_chunk *c;
	struct ddih_seg *segs = NULL;
	uint64_t max = r->arg[1], n = 0;

	if (o == NULL)
		return -EBADF;
	if (r->flags != 0 || max > DDIH_LAYOUT_MAX || r->arg[2] != 0 ||
	    r->arg[3] != 0 || r->soff != 0)
		return -EINVAL;
	if (max != 0) {
		segs = kcalloc(max, sizeof (*segs), GFP_KERNEL);
		if (segs == NULL)
			return -ENOMEM;
	}
	rcu_read_lock();
	list_for_each_entry_rcu(c, &o->do_map.dm_pool->chunks, next_chunk) {
		unsigned long nbits = c->end_addr - c->start_addr + 1;
		unsigned long b = 0, e;
		bool set;

		ddih_seg_put(segs, max, &n, DDIH_SEG_SPAN, c->start_addr, nbits);
		if (c->end_addr < c->start_addr)	/* cannot be added */
			continue;
		while (b < nbits) {
			set = test_bit(b, c->bits);
			e = set ? find_next_zero_bit(c->bits, nbits, b) :
			    find_next_bit(c->bits, nbits, b);
			ddih_seg_put(segs, max, &n, set ? DDIH_SEG_ALLOC :
			    DDIH_SEG_FREE, c->start_addr + b, e - b);
			b = e;
		}
	}
	rcu_read_unlock();
	/* the whole array is written (zeros past n): a bad a0 is EFAULT */
	if (max != 0 && copy_to_user(u64_to_user_ptr(r->arg[0]), segs,
	    max * sizeof (*segs))) {
		kfree(segs);
		return -EFAULT;
	}
	kfree(segs);
	r->value = n;
	r->kind = DDIH_KIND_VALUE;
	r->valid |= DDIH_V_VALUE;
	return 0;
}

/* ---------------------------------------------------------------- umem */

/* Drop one reference to a mapping record: a VMA's, or the buffer's. */
static void ddih_mref_rele(struct ddih_mref *mr, bool buffer)
{
	bool last;

	spin_lock(&ddih_mref_lock);
	if (buffer)
		mr->mr_live = false;
	else
		mr->mr_maps--;
	last = !mr->mr_live && mr->mr_maps == 0;
	spin_unlock(&ddih_mref_lock);
	if (last)
		kfree(mr);
}

static unsigned int ddih_mref_maps(struct ddih_mref *mr)
{
	unsigned int n;

	spin_lock(&ddih_mref_lock);
	n = mr->mr_maps;
	spin_unlock(&ddih_mref_lock);
	return n;
}

static void ddih_umem_destroy(struct ddih_obj *o)
{
	atomic64_sub(o->do_umem.du_size, &ddih_umem_bytes);
	vfree(o->do_umem.du_buf);	/* mapped pages keep their own references */
	ddih_mref_rele(o->do_umem.du_mref, true);
	kfree(o);
	atomic_dec(&ddih_numem);
}

static int ddih_umem_alloc(struct ddih_file *df, struct ddih_req *r)
{
	uint64_t size = r->arg[0];
	struct ddih_obj *o;
	void *buf;
	int err;

	if (r->handle != 0 || (r->flags & ~DDIH_UMEM_FLAGS) != 0)
		return -EINVAL;
	if (r->flags & DDIH_UMEM_TRASH)
		return -EOPNOTSUPP;
	r->kind = DDIH_KIND_NULL;
	if (size == 0 || size > DDIH_UMEM_MAX)
		return 0;		/* NULL; vmalloc is not called */
	if (!ddih_reserve(&ddih_umem_bytes, PAGE_ALIGN(size), DDIH_UMEM_TOTAL_MAX))
		return 0;		/* NULL: the driver-wide cap */
	o = kzalloc(sizeof (*o), GFP_KERNEL);
	if (o == NULL) {
		atomic64_sub(PAGE_ALIGN(size), &ddih_umem_bytes);
		return -ENOMEM;
	}
	if (ddih_fault_hit("umem_alloc"))
		buf = NULL;
	else if (r->flags & DDIH_UMEM_NOSLEEP)
		buf = __vmalloc(size, GFP_NOWAIT | __GFP_ZERO | __GFP_NOWARN);
	else
		buf = vmalloc_user(size);
	if (buf == NULL) {
		atomic64_sub(PAGE_ALIGN(size), &ddih_umem_bytes);
		kfree(o);
		return 0;
	}
	o->do_umem.du_mref = kzalloc(sizeof (*o->do_umem.du_mref), GFP_KERNEL);
	if (o->do_umem.du_mref == NULL) {
		atomic64_sub(PAGE_ALIGN(size), &ddih_umem_bytes);
		vfree(buf);
		kfree(o);
		return -ENOMEM;
	}
	o->do_umem.du_mref->mr_live = true;
	o->do_type = DO_UMEM;
	o->do_umem.du_buf = buf;
	o->do_umem.du_size = PAGE_ALIGN(size);
	o->do_umem.du_usermap = !(r->flags & DDIH_UMEM_NOSLEEP);
	o->do_umem.du_type = (r->flags & DDIH_UMEM_PAGEABLE) ?
	    DDIH_UMEM_TYPE_PAGEABLE : DDIH_UMEM_TYPE_KMEM;
	err = ddih_insert(df, o, &r->ohandle);
	if (err != 0) {
		atomic64_sub(PAGE_ALIGN(size), &ddih_umem_bytes);
		vfree(buf);
		kfree(o->do_umem.du_mref);
		kfree(o);
		return err;
	}
	atomic_inc(&ddih_numem);
	if (ddih_fault("umem_not_zeroed"))
		((u8 *)buf)[o->do_umem.du_size / 2] = 0xa5;
	r->kind = DDIH_KIND_VALUE;
	r->value = o->do_umem.du_size;
	r->offset = (unsigned long)buf & (PAGE_SIZE - 1);
	r->cookie_size = o->do_umem.du_size;
	r->type = o->do_umem.du_type;
	r->zeroed = memchr_inv(buf, 0, o->do_umem.du_size) == NULL;
	r->valid |= DDIH_V_VALUE | DDIH_V_OFFSET | DDIH_V_ZEROED |
	    DDIH_V_TYPE | DDIH_V_COOKIE_SIZE | DDIH_V_HANDLE;
	return 0;
}

static int ddih_umem_free(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_obj *o;

	if (r->flags != 0)
		return -EINVAL;
	r->kind = DDIH_KIND_OK;
	if (r->handle == 0)
		return 0;		/* ddi_umem_free(NULL): no-op */
	o = ddih_lookup(df, r->handle, DO_UMEM);
	if (o == NULL)
		return -EBADF;
	/* a process still maps the buffer (the illumos policy: EBUSY) */
	if (!destructive && ddih_mref_maps(o->do_umem.du_mref) != 0)
		return -EBUSY;
	ddih_remove(df, r->handle);
	ddih_umem_destroy(o);
	return 0;
}

static int ddih_umem_export(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_export *e = &df->df_export;

	/* handle 0 is a NULL cookie: recorded, and mmap fails with EINVAL */
	if (r->handle != 0 && ddih_lookup(df, r->handle, DO_UMEM) == NULL)
		return -EBADF;
	if ((r->flags & ~DDIH_DEVMAP_FLAGS) != 0 ||
	    (r->arg[1] & ~(uint64_t)DDIH_PROT_FLAGS) != 0 || r->arg[3] > 1)
		return -EINVAL;
	/*
	 * MAPPING_INVALID with ALLOW_REMAP: on illumos a handle without a
	 * cookie, whose first access panics.  The Linux port maps the buffer
	 * anyway, but keeps the illumos guard so both ports refuse the same.
	 */
	if (!destructive && (r->flags & DDIH_DEVMAP_MAPPING_INVALID) &&
	    (r->flags & DDIH_DEVMAP_ALLOW_REMAP))
		return -EINVAL;
	e->de_set = true;
	e->de_handle = r->handle;
	e->de_off = r->soff;
	e->de_len = r->arg[0];
	e->de_maxprot = r->arg[1];
	e->de_flags = r->flags;
	e->de_maplen_set = (r->xflags & DDIH_XF_MAPLEN) != 0;
	e->de_maplen = r->arg[2];
	e->de_twice = r->arg[3] != 0;
	r->kind = DDIH_KIND_OK;
	return 0;
}

/* UMEM_CHECK and UMEM_FILL: the kernel side of the coherence check. */
static int ddih_umem_pattern(struct ddih_file *df, struct ddih_req *r,
    bool fill)
{
	struct ddih_obj *o = ddih_lookup(df, r->handle, DO_UMEM);
	uint64_t off = r->arg[0], len = r->arg[1], seed = r->arg[2], i;
	uint8_t *p;

	if (o == NULL)
		return -EBADF;
	if (r->flags != 0)
		return -EINVAL;
	if (off > o->do_umem.du_size || len > o->do_umem.du_size - off)
		return -EINVAL;
	p = (uint8_t *)o->do_umem.du_buf + off;
	r->value = 1;
	for (i = 0; i < len; i++) {
		if (fill) {
			p[i] = DDIH_PATTERN(seed, i);
		} else if (p[i] != DDIH_PATTERN(seed, i)) {
			r->value = 0;
			break;
		}
		if ((i & 0xfffff) == 0xfffff)
			cond_resched();
	}
	if (fill) {
		r->kind = DDIH_KIND_OK;
	} else {
		r->kind = DDIH_KIND_VALUE;
		r->valid |= DDIH_V_VALUE;
	}
	return 0;
}

/* A VMA that maps a buffer was copied (fork, split, mremap). */
static void ddih_vm_open(struct vm_area_struct *vma)
{
	struct ddih_mref *mr = vma->vm_private_data;

	spin_lock(&ddih_mref_lock);
	mr->mr_maps++;
	spin_unlock(&ddih_mref_lock);
}

/* A VMA that maps a buffer goes away (munmap, exit, the unmapped piece). */
static void ddih_vm_close(struct vm_area_struct *vma)
{
	ddih_mref_rele(vma->vm_private_data, false);
}

static const struct vm_operations_struct ddih_vm_ops = {
	.open	= ddih_vm_open,
	.close	= ddih_vm_close,
};

/* The mapping succeeded: the VMA counts from now on. */
static void ddih_mapped(struct vm_area_struct *vma, struct ddih_obj *o)
{
	struct ddih_mref *mr = o->do_umem.du_mref;

	spin_lock(&ddih_mref_lock);
	mr->mr_maps++;
	spin_unlock(&ddih_mref_lock);
	vma->vm_private_data = mr;
	vma->vm_ops = &ddih_vm_ops;
}

/*
 * mmap: consume the pending export and apply the policy checks, in the
 * order kmod/README.md lists them; the errno becomes mmap's.
 */
static int ddih_mmap(struct file *fp, struct vm_area_struct *vma)
{
	struct ddih_file *df = fp->private_data;
	struct ddih_export e;
	struct ddih_obj *o;
	unsigned long len = vma->vm_end - vma->vm_start, i;
	uint32_t prot = 0;
	int err = 0;

	mutex_lock(&df->df_lock);
	e = df->df_export;
	df->df_export.de_set = false;
	if (!e.de_set || vma->vm_pgoff != 0) {
		err = -ENXIO;
		goto out;
	}
	if (e.de_handle == 0) {		/* remap_vmalloc_range(NULL): EINVAL */
		err = -EINVAL;
		goto out;
	}
	o = ddih_lookup(df, e.de_handle, DO_UMEM);
	if (o == NULL) {
		err = -EBADF;
		goto out;
	}
	if (e.de_off < 0 || (e.de_off & (PAGE_SIZE - 1)) != 0 ||
	    (uint64_t)e.de_off > o->do_umem.du_size ||
	    e.de_len > o->do_umem.du_size - e.de_off) {	/* off + len > size */
		err = -EINVAL;
		goto out;
	}
	if (vma->vm_flags & VM_READ)
		prot |= DDIH_PROT_READ;
	if (vma->vm_flags & VM_WRITE)
		prot |= DDIH_PROT_WRITE;
	if (vma->vm_flags & VM_EXEC)
		prot |= DDIH_PROT_EXEC;
	if ((prot & ~e.de_maxprot) != 0) {
		err = -EACCES;
		goto out;
	}
	if ((e.de_flags & DDIH_DEVMAP_MAPPING_INVALID) &&
	    !(e.de_flags & DDIH_DEVMAP_ALLOW_REMAP)) {
		err = -EINVAL;
		goto out;
	}
	if (e.de_twice) {
		err = -EINVAL;
		goto out;
	}
	if (e.de_maplen_set && (e.de_maplen & (PAGE_SIZE - 1)) != 0) {
		err = -EINVAL;
		goto out;
	}
	/* maxprot also bounds later mprotect(2) calls */
	if (!(e.de_maxprot & DDIH_PROT_READ))
		vma->vm_flags &= ~VM_MAYREAD;
	if (!(e.de_maxprot & DDIH_PROT_WRITE))
		vma->vm_flags &= ~VM_MAYWRITE;
	if (!(e.de_maxprot & DDIH_PROT_EXEC))
		vma->vm_flags &= ~VM_MAYEXEC;

	if (o->do_umem.du_usermap) {
		err = remap_vmalloc_range(vma, o->do_umem.du_buf,
		    e.de_off >> PAGE_SHIFT);
		if (err == 0)
			ddih_mapped(vma, o);
		goto out;
	}
	/*
	 * A NOSLEEP buffer comes from __vmalloc, whose area lacks VM_USERMAP,
	 * so remap_vmalloc_range would refuse it: insert its pages one by one
	 * with the same range check remap_vmalloc_range makes.
	 */
	if (PAGE_ALIGN(len) > o->do_umem.du_size - e.de_off) {
		err = -EINVAL;
		goto out;
	}
	for (i = 0; i < len; i += PAGE_SIZE) {
		struct page *pg = vmalloc_to_page((uint8_t *)o->do_umem.du_buf +
		    e.de_off + i);

		err = vm_insert_page(vma, vma->vm_start + i, pg);
		if (err != 0)
			goto out;
	}
	vma->vm_flags |= VM_DONTEXPAND | VM_DONTDUMP;
	ddih_mapped(vma, o);
out:
	mutex_unlock(&df->df_lock);
	return err;
}

/* ---------------------------------------------------------------- kmem */

static int ddih_kmem_alloc(struct ddih_file *df, struct ddih_req *r, bool zero)
{
	uint64_t size = r->arg[0];
	struct ddih_obj *o;
	gfp_t gfp;
	void *p;
	int err;

	if (r->handle != 0 || (r->flags & ~DDIH_KM_FLAGS) != 0)
		return -EINVAL;
	r->kind = DDIH_KIND_NULL;
	if (size > DDIH_KMEM_MAX)
		return 0;		/* NULL; kmalloc is not called */
	gfp = (r->flags & DDIH_KM_NOSLEEP) ? GFP_NOWAIT : GFP_KERNEL;
	if (r->flags & DDIH_KM_PUSHPAGE)
		gfp |= __GFP_HIGH;
	gfp |= __GFP_NOWARN;
	if (zero)
		gfp |= __GFP_ZERO;
	if (!ddih_reserve(&ddih_kmem_bytes, kmalloc_size_roundup(size), DDIH_KMEM_TOTAL_MAX))
		return 0;		/* NULL: the driver-wide cap */
	o = kzalloc(sizeof (*o), GFP_KERNEL);
	if (o == NULL) {
		atomic64_sub(kmalloc_size_roundup(size), &ddih_kmem_bytes);
		return -ENOMEM;
	}
	p = ddih_fault_hit("kmem_alloc") ? NULL : kmalloc(size, gfp);
	if (p == NULL) {
		atomic64_sub(kmalloc_size_roundup(size), &ddih_kmem_bytes);
		kfree(o);
		return 0;
	}
	o->do_type = DO_KMEM;
	o->do_kmem = p;
	err = ddih_insert(df, o, &r->ohandle);
	if (err != 0) {
		atomic64_sub(kmalloc_size_roundup(size), &ddih_kmem_bytes);
		kfree(p);
		kfree(o);
		return err;
	}
	atomic_inc(&ddih_nkmem);
	r->kind = DDIH_KIND_VALUE;
	r->valid |= DDIH_V_VALUE | DDIH_V_HANDLE;
	if (ZERO_OR_NULL_PTR(p)) {
		/* size 0: ZERO_SIZE_PTR, reported as 0 and never touched */
		r->value = 0;
		return 0;
	}
	r->value = ksize(p);
	r->offset = ((unsigned long)p + (ddih_fault("kmem_bad_offset") ? 4 : 0)) & (PAGE_SIZE - 1);
	r->zeroed = memchr_inv(p, 0, size) == NULL;
	r->valid |= DDIH_V_OFFSET | DDIH_V_ZEROED;
	return 0;
}

static int ddih_kmem_free(struct ddih_file *df, struct ddih_req *r)
{
	struct ddih_obj *o;

	if (r->flags != 0)
		return -EINVAL;
	r->kind = DDIH_KIND_OK;
	if (r->handle == 0) {
		kfree(NULL);		/* kmem_free(NULL, size): no-op */
		return 0;
	}
	o = ddih_lookup(df, r->handle, DO_KMEM);
	if (o == NULL) {
		o = ddih_lookup(df, r->handle, DO_KMEM_FREED);
		if (o == NULL || !destructive)
			return -EBADF;
		kfree(o->do_kmem);	/* destructive: the double free */
		return 0;
	}
	/* the size (a0) is not checked: kfree takes none */
	atomic64_sub(ksize(o->do_kmem), &ddih_kmem_bytes);
	kfree(o->do_kmem);
	o->do_type = DO_KMEM_FREED;	/* tombstone; the pointer is stale */
	atomic_dec(&ddih_nkmem);
	return 0;
}

/* ---------------------------------------------------------------- file ops */

static int ddih_open(struct inode *ip, struct file *fp)
{
	struct ddih_file *df;

	df = kzalloc(sizeof (*df), GFP_KERNEL);
	if (df == NULL)
		return -ENOMEM;
	mutex_init(&df->df_lock);
	idr_init(&df->df_idr);
	fp->private_data = df;
	atomic_inc(&ddih_nfiles);
	return 0;
}

static int ddih_release(struct inode *ip, struct file *fp)
{
	struct ddih_file *df = fp->private_data;
	struct ddih_obj *o;
	int id;

	idr_for_each_entry(&df->df_idr, o, id) {
		switch (o->do_type) {
		case DO_MAP:
			ddih_map_drain(o->do_map.dm_pool);
			ddih_map_destroy(o);
			break;
		case DO_UMEM:
			ddih_umem_destroy(o);
			break;
		case DO_KMEM:
			atomic64_sub(ksize(o->do_kmem), &ddih_kmem_bytes);
			kfree(o->do_kmem);
			kfree(o);
			atomic_dec(&ddih_nkmem);
			break;
		case DO_KMEM_FREED:
			kfree(o);
			break;
		}
	}
	idr_destroy(&df->df_idr);
	kfree(df);
	atomic_dec(&ddih_nfiles);
	return 0;
}

static long ddih_ioctl(struct file *fp, unsigned int cmd, unsigned long arg)
{
	struct ddih_file *df = fp->private_data;
	void __user *uarg = (void __user *)arg;
	struct ddih_req r;
	uint32_t hdr[2];
	int err;

	if (_IOC_TYPE(cmd) != DDIH_IOC_TYPE || _IOC_NR(cmd) < 1 ||
	    _IOC_NR(cmd) > 3)
		return -ENOTTY;
	if (copy_from_user(hdr, uarg, sizeof (hdr)))
		return -EFAULT;
	if (hdr[0] != DDIH_ABI_VERSION || hdr[1] != sizeof (r))
		return -EINVAL;
	if (copy_from_user(&r, uarg, sizeof (r)))
		return -EFAULT;
	if (r.version != DDIH_ABI_VERSION || r.size != sizeof (r))
		return -EINVAL;		/* changed between the two copies */

	/* clear every out-field: nothing stale goes back */
	r.status = 0;
	r.kind = 0;
	r.valid = 0;
	r.ohandle = 0;
	r.value = r.offset = r.cookie_size = r.avail = r.total = 0;
	memset(r.ctr, 0, sizeof (r.ctr));	/* illumos only (DDIH_V_VMEM) */
	r.type = r.zeroed = r.coherent = 0;

	if (DDIH_OP_FAMILY(r.op) != _IOC_NR(cmd) || r.pad != 0 ||
	    (r.xflags & ~(uint32_t)DDIH_XF_MAPLEN) != 0 ||
	    ((r.xflags & DDIH_XF_MAPLEN) && r.op != DDIH_OP_UMEM_EXPORT)) {
		err = -EINVAL;
		goto out;
	}

	/*
	 * The results go back into the caller's request: make sure they can
	 * before anything happens, so a request refused with EFAULT has no
	 * effect (an allocation the caller never hears of, say).
	 */
	if (copy_to_user(uarg, &r, sizeof (r)))
		return -EFAULT;

	mutex_lock(&df->df_lock);
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
		err = ddih_rmap_layout(df, &r);
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
		err = ddih_umem_pattern(df, &r, false);
		break;
	case DDIH_OP_UMEM_FILL:
		err = ddih_umem_pattern(df, &r, true);
		break;
	case DDIH_OP_KMEM_ALLOC:
		err = ddih_kmem_alloc(df, &r, false);
		break;
	case DDIH_OP_KMEM_ZALLOC:
		err = ddih_kmem_alloc(df, &r, true);
		break;
	case DDIH_OP_KMEM_FREE:
		err = ddih_kmem_free(df, &r);
		break;
	default:
		err = -EINVAL;
		break;
	}
	mutex_unlock(&df->df_lock);
out:
	if (err == -ERESTARTSYS)
		r.status = EINTR;
	else
		r.status = -err;
	if (err != 0)
		r.kind = 0;
	if (copy_to_user(uarg, &r, sizeof (r)))
		return -EFAULT;
	return err;
}

static const struct file_operations ddih_fops = {
	.owner		= THIS_MODULE,
	.open		= ddih_open,
	.release	= ddih_release,
	.unlocked_ioctl	= ddih_ioctl,
	.compat_ioctl	= compat_ptr_ioctl,
	.mmap		= ddih_mmap,
	.llseek		= noop_llseek,
};

static struct miscdevice ddih_misc = {
	.minor	= MISC_DYNAMIC_MINOR,
	.name	= "ddih",
	.fops	= &ddih_fops,
	.mode	= 0600,
};

static int __init ddih_init(void)
{
	return misc_register(&ddih_misc);
}

static void __exit ddih_exit(void)
{
	misc_deregister(&ddih_misc);
}

module_init(ddih_init);
module_exit(ddih_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("ddi-harness: kernel memory routines driven by ioctl/mmap");
MODULE_AUTHOR("ddi-harness");
