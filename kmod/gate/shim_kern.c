/*
 * shim_kern.c: the part of the fake kernel that must see the real illumos
 * kernel structures.  It is compiled exactly like vmem.c and rmap.c (with
 * the gate's kernel headers, -D_KERNEL, -nostdinc), so the layouts it uses
 * are the gate's own:
 *   - it checks that kmutex_t and kcondvar_t have the sizes shim.c assumes
 *     (shim.c is built against glibc and never sees the kernel headers);
 *   - it boots vmem (vmem_init) over the host region shim.c mapped, with a
 *     segkmem stand-in as the metadata import functions;
 *   - it reads an rmap arena's kstat counters from vm_kstat under vm_lock,
 *     as kmod/illumos/ddih.c does;
 *   - it walks an rmap arena's segment list (vm_seg0, vs_anext) under
 *     vm_lock for the layout report, as kmod/illumos/ddih.c's RMAP_LAYOUT
 *     does.
 * Original project code: it includes the gate's headers from $(GATE) at
 * build time and copies nothing from them.
 */

#include <sys/types.h>
#include <sys/mutex.h>
#include <sys/condvar.h>
#include <sys/vmem.h>
#include <sys/vmem_impl.h>
#include <sys/kstat.h>

#include "shim.h"

/* shim.c keeps a kmutex_t as one owner pointer, a kcondvar_t as a ushort */
_Static_assert(sizeof (kmutex_t) == sizeof (void *), "kmutex_t layout");
_Static_assert(sizeof (kcondvar_t) == sizeof (unsigned short),
	"kcondvar_t layout");
_Static_assert(sizeof (unsigned long) == sizeof (ulong_t), "LP64");

void
shim_layout_check(void)
{
}

/*
 * segkmem stand-in.  The real segkmem_alloc() takes virtual space from the
 * heap arena and backs it with pages; the host region is already backed
 * (anonymous memory), so taking the space is all there is to do.
 */
static void *
gate_segkmem_alloc(vmem_t *vmp, size_t size, int vmflag)
{
	return (vmem_alloc(vmp, size, vmflag));
}

static void
gate_segkmem_free(vmem_t *vmp, void *addr, size_t size)
{
	vmem_free(vmp, addr, size);
}

void
shim_vmem_boot(void *base, size_t size, size_t quantum)
{
	(void) vmem_init("heap", base, size, quantum,
	    gate_segkmem_alloc, gate_segkmem_free);
}

void
shim_vmem_counters(void *map, unsigned long long ctr[SHIM_NCTR])
{
	vmem_t *vmp = map;
	vmem_kstat_t *vk = &vmp->vm_kstat;

	mutex_enter(&vmp->vm_lock);
	ctr[0] = vk->vk_mem_total.value.ui64;
	ctr[1] = vk->vk_mem_inuse.value.ui64;
	ctr[2] = vk->vk_alloc.value.ui64;
	ctr[3] = vk->vk_free.value.ui64;
	ctr[4] = vk->vk_fail.value.ui64;
	ctr[5] = vk->vk_wait.value.ui64;
	ctr[6] = vk->vk_contains.value.ui64;
	mutex_exit(&vmp->vm_lock);
}

/* highbit(9F) of a 64-bit word (the highest bit set, from 1; 0 for 0). */
static int
shim_highbit64(unsigned long long v)
{
	int h = 0;

	while (v != 0) {
		h++;
		v >>= 1;
	}
	return (h);
}

size_t
shim_vmem_layout(void *map, struct shim_seg *out, size_t max)
{
	vmem_t *vmp = map;
	vmem_seg_t *vsp;
	size_t n = 0;

	mutex_enter(&vmp->vm_lock);
	for (vsp = vmp->vm_seg0.vs_anext; vsp != &vmp->vm_seg0;
	    vsp = vsp->vs_anext) {
		unsigned long long size =
		    (unsigned long long)(vsp->vs_end - vsp->vs_start);
		char type;
		int flist = -1;

		switch (vsp->vs_type) {
		case VMEM_SPAN:
			type = 's';
			break;
		case VMEM_ALLOC:
			type = 'a';
			break;
		case VMEM_FREE:
			type = 'f';
			if (size != 0)
				flist = shim_highbit64(size) - 1;
			break;
		default:
			continue;	/* VMEM_ROTOR, VMEM_WALKER */
		}
		if (n < max) {
			out[n].start = (unsigned long long)vsp->vs_start;
			out[n].size = size;
			out[n].type = type;
			out[n].flist = flist;
		}
		n++;
	}
	mutex_exit(&vmp->vm_lock);
	return (n);
}
