/*
 * ddih_ioctl.h: the ioctl ABI of the ddih test driver.
 *
 * One header for the illumos port (kmod/illumos), the Linux port
 * (kmod/linux) and the user-space op runner (guest/ddictl).  See
 * kmod/README.md for the rules; in short:
 *
 *   - fixed-width fields only, no pointers, no longs, no enums;
 *   - every request starts with `version' (DDIH_ABI_VERSION) and `size'
 *     (sizeof (struct ddih_req) as the caller compiled it); the driver
 *     refuses any other version or size with EINVAL;
 *   - kernel objects are named by small per-open-file integer handles
 *     (0 means "none" / a NULL pointer); the driver never returns a
 *     kernel address, only `offset' = addr & (PAGESIZE - 1);
 *   - a refused request fails the ioctl with an errno; the driver still
 *     copies the request back, so `status' holds that errno and the
 *     `valid' bits say which out-fields (e.g. map counters) mean something.
 *
 * A single request structure serves every op.  There is one ioctl number
 * per op family; `op' must belong to the family of the ioctl number used
 * (else EINVAL).  The size encoded in the ioctl number is informative only:
 * the driver matches the type and number and then checks `version' and
 * `size' itself, so a caller built against another layout gets EINVAL,
 * not ENOTTY.
 *
 * Field use per op (a0..a3 = arg[0..3]; "out" lists the fields set):
 *
 *   RMALLOCMAP, RMALLOCMAP_WAIT  a0 = mapsize (ignored by the Linux port)
 *                                out: ohandle, kind OK, avail/total
 *   RMALLOC, RMALLOC_WAIT        handle = map, a0 = size
 *                                out: kind VALUE, value, avail/total
 *   RMFREE                       handle = map, a0 = size, a1 = index
 *                                out: kind OK, avail/total
 *   RMFREEMAP                    handle = map; out: kind OK
 *                                (EBUSY still reports avail/total)
 *   RMAP_STATE                   handle = map; calls no routine, only
 *                                reports the map's counters (ddictl uses
 *                                it after starting a background waiter).
 *                                out: kind OK, avail/total or ctr[]
 *   RMAP_LAYOUT                  handle = map, a0 = user address of an
 *                                array of struct ddih_seg (a 64-bit
 *                                integer, not a pointer field), a1 = its
 *                                length in entries (0..DDIH_LAYOUT_MAX;
 *                                a0 is not used when a1 is 0); a2, a3,
 *                                soff and flags must be 0.  Calls no
 *                                routine: walks the map's segments (the
 *                                vmem arena list / the gen_pool chunks,
 *                                see struct ddih_seg) under the map's
 *                                lock and writes the first min(total, a1)
 *                                of them.  out: kind VALUE, value = total
 *                                (how many segments there are in all).
 *                                An a0 that cannot be written gives
 *                                EFAULT (the op has no side effect).
 *
 *   Map counters: the Linux port reports avail/total (DDIH_V_STATE); the
 *   illumos port reports the arena's vmem kstat counters in ctr[]
 *   (DDIH_V_VMEM), indexed by DDIH_CTR_*, read from the vmem_t.
 *   UMEM_ALLOC                   a0 = size, flags = DDI_UMEM_* bits
 *                                out: ohandle, kind VALUE (value = rounded
 *                                size, offset, zeroed, type, cookie_size)
 *                                or kind NULL (ohandle 0)
 *   UMEM_FREE                    handle = buffer (0 = NULL cookie)
 *   UMEM_EXPORT                  handle = buffer, soff = koff, a0 = len,
 *                                a1 = maxprot (PROT_* bits of ops.py),
 *                                a2 = maplen (if xflags & DDIH_XF_MAPLEN),
 *                                a3 = setup_twice (0/1),
 *                                flags = DEVMAP_* bits.  Records the export
 *                                on the open file; the next mmap(2) of that
 *                                file (offset 0) consumes it and performs
 *                                the checks, so mmap reports their errno.
 *   UMEM_CHECK                   handle = buffer, a0 = byte offset in the
 *                                buffer, a1 = length, a2 = pattern seed.
 *                                out: kind VALUE, value = 1 if every byte i
 *                                equals DDIH_PATTERN(seed, i), else 0
 *   UMEM_FILL                    same arguments; the kernel writes the
 *                                pattern.  out: kind OK
 *   KMEM_ALLOC, KMEM_ZALLOC      a0 = size, flags = KM_* bits
 *                                out: ohandle, kind VALUE (value = usable
 *                                size, offset, zeroed) or kind NULL
 *   KMEM_FREE                    handle = buffer (0 = NULL), a0 = size
 *                                (the Linux port ignores it: kfree has none)
 *
 * ILP32 and LP64 callers: every field has a fixed width, every 64-bit field
 * sits at an offset that is a multiple of 8 and the size is a multiple of
 * 8, so the i386 ABI (4-byte alignment of 64-bit integers) and the amd64
 * ABI give the same layout, without padding; the size check below holds
 * for both.  Drivers may copy a 32-bit caller's request as is.
 *
 * Version history: 1 (136 bytes); 2 adds ctr[] / DDIH_V_VMEM and
 * RMAP_STATE (192 bytes).  RMAP_LAYOUT (op 8, struct ddih_seg) was added
 * within version 2: the request is unchanged, and a driver without it
 * refuses op 8 with EINVAL like any unknown op.
 */

#ifndef	_DDIH_IOCTL_H
#define	_DDIH_IOCTL_H

/* Fixed-width types and the ioctl encoding macros, per environment. */
#if defined(__linux__) && defined(__KERNEL__)
#include <linux/types.h>	/* uint32_t, uint64_t, int32_t, int64_t */
#include <linux/ioctl.h>
#elif defined(_KERNEL)		/* illumos kernel */
#include <sys/types.h>
#include <sys/ioccom.h>
#else				/* user space */
#include <stdint.h>
#if defined(__sun)
#include <sys/ioccom.h>
#else
#include <sys/ioctl.h>
#endif
#endif

#ifdef	__cplusplus
extern "C" {
#endif

#define	DDIH_ABI_VERSION	2
#if defined(__sun)
#define	DDIH_DEVICE		"/devices/pseudo/ddih@0:ddih"
#else
#define	DDIH_DEVICE		"/dev/ddih"
#endif
#define	DDIH_PAGESIZE		4096

/* Op codes, named after the ops of harness/ops.py. */
#define	DDIH_OP_RMALLOCMAP	1
#define	DDIH_OP_RMALLOCMAP_WAIT	2
#define	DDIH_OP_RMALLOC		3
#define	DDIH_OP_RMALLOC_WAIT	4
#define	DDIH_OP_RMFREE		5
#define	DDIH_OP_RMFREEMAP	6
#define	DDIH_OP_RMAP_STATE	7	/* harness helper: counters only */
#define	DDIH_OP_RMAP_LAYOUT	8	/* harness helper: the map's segments */
#define	DDIH_OP_UMEM_ALLOC	16
#define	DDIH_OP_UMEM_FREE	17
#define	DDIH_OP_UMEM_EXPORT	18
#define	DDIH_OP_UMEM_CHECK	19	/* harness helper: coherence check */
#define	DDIH_OP_UMEM_FILL	20	/* harness helper: coherence check */
#define	DDIH_OP_KMEM_ALLOC	32
#define	DDIH_OP_KMEM_ZALLOC	33
#define	DDIH_OP_KMEM_FREE	34

/* Result kinds (out: kind).  A refused request fails the ioctl instead. */
#define	DDIH_KIND_VALUE		1	/* `value' holds an integer */
#define	DDIH_KIND_NULL		2	/* the routine returned NULL */
#define	DDIH_KIND_OK		3	/* void routine / non-NULL handle */

/* Bits of `valid': which out-fields carry an observation. */
#define	DDIH_V_VALUE		0x0001	/* value */
#define	DDIH_V_OFFSET		0x0002	/* offset */
#define	DDIH_V_ZEROED		0x0004	/* zeroed */
#define	DDIH_V_TYPE		0x0008	/* type */
#define	DDIH_V_COOKIE_SIZE	0x0010	/* cookie_size */
#define	DDIH_V_COHERENT		0x0020	/* coherent */
#define	DDIH_V_STATE		0x0040	/* avail and total */
#define	DDIH_V_HANDLE		0x0080	/* ohandle */
#define	DDIH_V_VMEM		0x0100	/* ctr[] (illumos vmem kstats) */

/* Indexes of ctr[]: the vmem kstat counters of an rmap arena. */
#define	DDIH_CTR_MEM_TOTAL	0
#define	DDIH_CTR_MEM_INUSE	1
#define	DDIH_CTR_ALLOC		2
#define	DDIH_CTR_FREE		3
#define	DDIH_CTR_FAIL		4
#define	DDIH_CTR_WAIT		5
#define	DDIH_CTR_CONTAINS	6
#define	DDIH_NCTR		7

/* Bits of `xflags': request modifiers. */
#define	DDIH_XF_MAPLEN		0x0001	/* UMEM_EXPORT: a2 overrides maplen */

/* Flag values, identical to harness/ops.py. */
#define	DDIH_UMEM_SLEEP		0x0
#define	DDIH_UMEM_NOSLEEP	0x1
#define	DDIH_UMEM_PAGEABLE	0x2
#define	DDIH_UMEM_TRASH		0x4
#define	DDIH_KM_SLEEP		0x0
#define	DDIH_KM_NOSLEEP		0x1
#define	DDIH_KM_PUSHPAGE	0x4
#define	DDIH_KM_NORMALPRI	0x8
#define	DDIH_DEVMAP_MAPPING_INVALID	0x01
#define	DDIH_DEVMAP_ALLOW_REMAP		0x02
#define	DDIH_DEVMAP_USE_PAGESIZE	0x04
#define	DDIH_PROT_READ		0x1
#define	DDIH_PROT_WRITE		0x2
#define	DDIH_PROT_EXEC		0x4
#define	DDIH_PROT_USER		0x8	/* illumos only; Linux ignores it */

/* Cookie types reported for umem (illumos values). */
#define	DDIH_UMEM_TYPE_PAGEABLE	0x100
#define	DDIH_UMEM_TYPE_KMEM	0x200

/* The coherence-check pattern: byte i of a region filled with `seed'. */
#define	DDIH_PATTERN(seed, i)	\
	((uint8_t)(((uint64_t)(seed) * 151u + (uint64_t)(i) * 31u + 7u) & 0xff))

struct ddih_req {
	/* ---- in: header ---- */
	uint32_t	version;	/* DDIH_ABI_VERSION */
	uint32_t	size;		/* sizeof (struct ddih_req) */
	uint32_t	op;		/* DDIH_OP_* */
	uint32_t	flags;		/* op flags: DDI_UMEM_*, KM_*, DEVMAP_* */
	uint32_t	handle;		/* object operated on; 0 = none/NULL */
	uint32_t	xflags;		/* DDIH_XF_* modifiers; others must be 0 */
	/* ---- in: arguments ---- */
	uint64_t	arg[4];		/* a0..a3: sizes, index, len, ... */
	int64_t		soff;		/* signed offset (umem_export koff) */
	/* ---- out ---- */
	int32_t		status;		/* 0, or the errno the ioctl failed with */
	uint32_t	kind;		/* DDIH_KIND_* when status == 0 */
	uint32_t	valid;		/* DDIH_V_* bits: which fields below */
	uint32_t	ohandle;	/* handle of a newly created object */
	uint64_t	value;		/* integer result */
	uint64_t	offset;		/* address & (PAGESIZE - 1), never more */
	uint64_t	cookie_size;	/* umem: the cookie's (rounded) size */
	uint64_t	avail;		/* rmap: free units after the op */
	uint64_t	total;		/* rmap: units ever added after the op */
	uint64_t	ctr[DDIH_NCTR];	/* rmap: vmem counters (DDIH_CTR_*) */
	uint32_t	type;		/* umem cookie type (0x100 / 0x200) */
	uint32_t	zeroed;		/* 1: the memory read back all zero */
	uint32_t	coherent;	/* 1: user and kernel see the same bytes */
	uint32_t	pad;		/* must be 0 */
};

/* The layout is part of the ABI: 192 bytes, 8-byte aligned fields. */
typedef char ddih_req_size_check[(sizeof (struct ddih_req) == 192) ? 1 : -1];

/*
 * One segment of a map's layout (RMAP_LAYOUT), in the map's own units:
 * never a kernel address.  size is end - start modulo 2^64 (a span may end
 * at or wrap past 2^64 on illumos).  Order:
 *   illumos: the arena's segment list from vm_seg0 along vs_anext, as it
 *     is: each span (SPAN, in creation order) followed by the ALLOC and
 *     FREE segments inside it in address order (vmem's rotor and walker
 *     markers are skipped).  FREE segments carry the vmem freelist they
 *     are on, highbit(size) - 1 = floor(log2(size)).
 *   Linux: each gen_pool chunk in the pool's list order (newest first)
 *     as a SPAN (start, units), then the maximal runs of allocated (ALLOC)
 *     and free (FREE) units inside it in address order.  No freelists:
 *     flist is DDIH_SEG_NOLIST.
 * flist is DDIH_SEG_NOLIST for SPAN and ALLOC segments on both ports.
 * ddictl prints a layout as `layout=<total>:<type>:<start>+<size>,...'
 * with type s (SPAN), a (ALLOC), f<flist> or f (FREE without a freelist).
 */
#define	DDIH_LAYOUT_MAX		64	/* entries one RMAP_LAYOUT returns */
#define	DDIH_SEG_SPAN		1
#define	DDIH_SEG_ALLOC		2
#define	DDIH_SEG_FREE		3
#define	DDIH_SEG_NOLIST		0xffffffffu

struct ddih_seg {
	uint64_t	start;		/* first unit */
	uint64_t	size;		/* units (end - start mod 2^64) */
	uint32_t	type;		/* DDIH_SEG_* */
	uint32_t	flist;		/* FREE: vmem freelist; else NOLIST */
};

typedef char ddih_seg_size_check[(sizeof (struct ddih_seg) == 24) ? 1 : -1];

/* One ioctl number per op family (type 'D'). */
#define	DDIH_IOC_TYPE		'D'
#define	DDIH_IOC_RMAP		_IOWR('D', 1, struct ddih_req)
#define	DDIH_IOC_UMEM		_IOWR('D', 2, struct ddih_req)
#define	DDIH_IOC_KMEM		_IOWR('D', 3, struct ddih_req)

/* Family number (the ioctl's nr) an op belongs to. */
#define	DDIH_OP_FAMILY(op)	((op) < 16 ? 1 : (op) < 32 ? 2 : 3)

#ifdef	__cplusplus
}
#endif

#endif	/* _DDIH_IOCTL_H */
