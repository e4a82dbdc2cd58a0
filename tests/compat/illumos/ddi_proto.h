/*
 * ddi_proto.h: an illumos DDI prototype header for a COMPILE CHECK ONLY.
 *
 * This is NOT the real illumos header set.  It lets the host gcc check
 * kmod/illumos/ddih.c (prototypes, argument counts and types, flag and
 * constant names, struct member names) where no illumos kernel or
 * /usr/include is available:
 *
 *   gcc -fsyntax-only -Wall -Werror -D_KERNEL -m64 \
 *       -I tests/compat/illumos -I kmod kmod/illumos/ddih.c
 *
 * The prototypes, flags and structures below are written from the section
 * 9F/9E/9S manual pages (illumos-gate usr/src/man) for amd64 (LP64); where
 * a manual page gives no layout or value (ddi_umem_cookie, vmem_t and its
 * kstats, ioctl encoding, flag values), the value is the one the illumos
 * headers define, copied as a fact, not as code.  On illumos the driver is
 * built against the real /usr/include headers (system/header); this file
 * is never installed or used there.
 *
 * Every <sys/...> path the driver includes is a two-line shim in
 * tests/compat/illumos/sys that includes this one file.
 */

#ifndef	_DDIH_COMPAT_DDI_PROTO_H
#define	_DDIH_COMPAT_DDI_PROTO_H

#if !defined(_KERNEL)
#error "compile check of a kernel driver: define _KERNEL"
#endif
#if !defined(__x86_64__)
#error "the compile check models amd64 (LP64): use -m64"
#endif

#define	NULL	((void *)0)

/* ------------------------------------------------ sys/types.h (LP64) */
typedef unsigned char		uchar_t;
typedef unsigned short		ushort_t;
typedef unsigned int		uint_t;
typedef unsigned long		ulong_t;
typedef signed char		int8_t;
typedef short			int16_t;
typedef int			int32_t;
typedef long			int64_t;
typedef unsigned char		uint8_t;
typedef unsigned short		uint16_t;
typedef unsigned int		uint32_t;
typedef unsigned long		uint64_t;
typedef long			intptr_t;
typedef unsigned long		uintptr_t;
typedef unsigned long		size_t;
typedef long			ssize_t;
typedef long			off_t;
typedef long long		offset_t;
typedef unsigned long long	u_offset_t;
typedef char			*caddr_t;
typedef long			daddr_t;
typedef unsigned long		dev_t;
typedef unsigned int		major_t;
typedef unsigned int		minor_t;
typedef int			id_t;
typedef unsigned long		pfn_t;
typedef long			clock_t;
typedef long long		hrtime_t;
typedef uintptr_t		pc_t;
typedef enum { B_FALSE, B_TRUE } boolean_t;

/* ------------------------------------------------ sys/param.h */
#define	PAGESIZE	4096
#define	PAGESHIFT	12
#define	PAGEOFFSET	(PAGESIZE - 1)
#define	PAGEMASK	(~PAGEOFFSET)

/* ------------------------------------------------ sys/errno.h */
#define	EPERM		1
#define	ENOENT		2
#define	EINTR		4
#define	EIO		5
#define	ENXIO		6
#define	E2BIG		7
#define	EBADF		9
#define	EAGAIN		11
#define	ENOMEM		12
#define	EACCES		13
#define	EFAULT		14
#define	EBUSY		16
#define	ENODEV		19
#define	EINVAL		22
#define	ENOTTY		25
#define	ENOSPC		28
#define	ENOTSUP		48

/* ------------------------------------------------ sys/debug.h */
/* Type-checks the expression without evaluating it (non-DEBUG ASSERT). */
#define	ASSERT(x)	((void)sizeof (x))

/* ------------------------------------------------ sys/stat.h, sys/open.h */
#define	S_IFCHR		0x2000
#define	OTYP_BLK	0
#define	OTYP_MNT	1
#define	OTYP_CHR	2
#define	OTYP_SWP	3
#define	OTYP_LYR	4

/* ------------------------------------------------ sys/model.h, sys/file.h */
#define	DATAMODEL_MASK	0x0FF00000
#define	DATAMODEL_ILP32	0x00100000
#define	DATAMODEL_LP64	0x00200000
#define	DATAMODEL_NONE	0
#define	FMODELS		DATAMODEL_MASK
#define	FKIOCTL		0x80000000

/* ------------------------------------------------ sys/mman.h */
#define	PROT_READ	0x1
#define	PROT_WRITE	0x2
#define	PROT_EXEC	0x4
#define	PROT_USER	0x8
#define	PROT_ALL	(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_USER)
#define	MAP_SHARED	1
#define	MAP_PRIVATE	2

/* ------------------------------------------------ sys/ioccom.h */
#define	IOCPARM_MASK	0xff
#define	IOC_VOID	0x20000000
#define	IOC_OUT		0x40000000
#define	IOC_IN		0x80000000
#define	IOC_INOUT	(IOC_IN | IOC_OUT)
#define	_IOWR(x, y, t)							\
	((int)((uint32_t)(IOC_INOUT | (((sizeof (t)) & IOCPARM_MASK) << 16) | \
	((x) << 8) | (y))))

/* ------------------------------------------------ opaque kernel types */
typedef struct cred		cred_t;
typedef struct dev_info		dev_info_t;
typedef struct page		page_t;
typedef struct kthread		kthread_t;
struct as;
struct buf;
struct uio;
struct pollhead;
struct streamtab;
struct aio_req;
struct bus_ops;
enum seg_rw { S_OTHER, S_READ, S_WRITE, S_EXEC, S_CREATE, S_READ_NOCOW };

/* ------------------------------------------------ mutex(9F), condvar(9F) */
typedef struct _kmutex { void *_opaque[1]; } kmutex_t;
typedef struct _kcondvar { ushort_t _opaque; } kcondvar_t;
typedef enum {
	MUTEX_ADAPTIVE = 0, MUTEX_SPIN = 1, MUTEX_DRIVER = 4, MUTEX_DEFAULT = 6
} kmutex_type_t;
extern void mutex_init(kmutex_t *mp, char *name, kmutex_type_t type,
    void *arg);
extern void mutex_destroy(kmutex_t *mp);
extern void mutex_enter(kmutex_t *mp);
extern void mutex_exit(kmutex_t *mp);
extern int mutex_tryenter(kmutex_t *mp);
extern int mutex_owned(kmutex_t *mp);

/* ------------------------------------------------ atomic_ops(9F) */
extern void atomic_inc_32(volatile uint32_t *target);
extern void atomic_dec_32(volatile uint32_t *target);

/* ------------------------------------------------ cmn_err(9F) */
#define	CE_CONT		0
#define	CE_NOTE		1
#define	CE_WARN		2
#define	CE_PANIC	3
#define	CE_IGNORE	4
extern void cmn_err(int level, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* ------------------------------------------------ bcopy(9F), bzero(9F) */
extern void bcopy(const void *from, void *to, size_t bcount);
extern void bzero(void *addr, size_t bytes);

/* ------------------------------------------------ kmem_alloc(9F) */
#define	KM_SLEEP	0x0000
#define	KM_NOSLEEP	0x0001
#define	KM_PANIC	0x0002
#define	KM_PUSHPAGE	0x0004
#define	KM_NORMALPRI	0x0008
extern void *kmem_alloc(size_t size, int flag);
extern void *kmem_zalloc(size_t size, int flag);
extern void kmem_free(void *buf, size_t size);

/* ------------------------------------------------ rmallocmap(9F) & co */
struct map;
extern struct map *rmallocmap(size_t mapsize);
extern struct map *rmallocmap_wait(size_t mapsize);
extern void rmfreemap(struct map *mp);
extern unsigned long rmalloc(struct map *mp, size_t size);
extern unsigned long rmalloc_wait(struct map *mp, size_t size);
extern void rmfree(struct map *mp, size_t size, ulong_t index);

/* ------------------------------------------------ kstat_create(9F) */
#define	KSTAT_STRLEN		31
#define	KSTAT_TYPE_RAW		0
#define	KSTAT_TYPE_NAMED	1
#define	KSTAT_DATA_CHAR		0
#define	KSTAT_DATA_INT32	1
#define	KSTAT_DATA_UINT32	2
#define	KSTAT_DATA_INT64	3
#define	KSTAT_DATA_UINT64	4
#define	KSTAT_READ		0
#define	KSTAT_WRITE		1
#define	KSTAT_FLAG_VIRTUAL	0x01

typedef struct kstat_named {
	char	name[KSTAT_STRLEN];
	uchar_t	data_type;
	union {
		char		c[16];
		int32_t		i32;
		uint32_t	ui32;
		struct {
			union {
				char	*ptr;
				char	__pad[8];
			} addr;
			uint32_t	len;
		} str;
		int64_t		i64;
		uint64_t	ui64;
		long		l;
		ulong_t		ul;
	} value;
} kstat_named_t;

typedef struct kstat {
	hrtime_t	ks_crtime;
	struct kstat	*ks_next;
	int		ks_kid;
	char		ks_module[KSTAT_STRLEN];
	uchar_t		ks_resv;
	int		ks_instance;
	char		ks_name[KSTAT_STRLEN];
	uchar_t		ks_type;
	char		ks_class[KSTAT_STRLEN];
	uchar_t		ks_flags;
	void		*ks_data;
	uint_t		ks_ndata;
	size_t		ks_data_size;
	hrtime_t	ks_snaptime;
	int		(*ks_update)(struct kstat *, int);
	void		*ks_private;
	int		(*ks_snapshot)(struct kstat *, void *, int);
	void		*ks_lock;
} kstat_t;

extern kstat_t *kstat_create(const char *module, int instance,
    const char *name, const char *class, uchar_t type, uint_t ndata,
    uchar_t ks_flag);
extern void kstat_install(kstat_t *ksp);
extern void kstat_delete(kstat_t *ksp);
extern void kstat_named_init(kstat_named_t *knp, const char *name,
    uchar_t data_type);

/* ------------------------------------------------ sys/vmem.h, vmem_impl.h */
typedef struct vmem vmem_t;
typedef struct vmem_seg vmem_seg_t;

#define	VMEM_STACK_DEPTH	20
#define	VMEM_NAMELEN		30
#define	VMEM_HASH_INITIAL	16
#define	VMEM_NQCACHE_MAX	16
#define	VMEM_FREELISTS		(sizeof (void *) * 8)

struct vmem_seg {
	uintptr_t	vs_start;
	uintptr_t	vs_end;
	vmem_seg_t	*vs_knext;
	vmem_seg_t	*vs_kprev;
	vmem_seg_t	*vs_anext;
	vmem_seg_t	*vs_aprev;
	uint8_t		vs_type;
	uint8_t		vs_import;
	uint8_t		vs_depth;
	kthread_t	*vs_thread;
	hrtime_t	vs_timestamp;
	pc_t		vs_stack[VMEM_STACK_DEPTH];
};

typedef struct vmem_freelist {
	uintptr_t	vs_start;
	uintptr_t	vs_end;
	vmem_seg_t	*vs_knext;
	vmem_seg_t	*vs_kprev;
} vmem_freelist_t;

typedef struct vmem_kstat {
	kstat_named_t	vk_mem_inuse;
	kstat_named_t	vk_mem_import;
	kstat_named_t	vk_mem_total;
	kstat_named_t	vk_source_id;
	kstat_named_t	vk_alloc;
	kstat_named_t	vk_free;
	kstat_named_t	vk_wait;
	kstat_named_t	vk_fail;
	kstat_named_t	vk_lookup;
	kstat_named_t	vk_search;
	kstat_named_t	vk_populate_wait;
	kstat_named_t	vk_populate_fail;
	kstat_named_t	vk_contains;
	kstat_named_t	vk_contains_search;
} vmem_kstat_t;

struct vmem {
	char		vm_name[VMEM_NAMELEN];
	kcondvar_t	vm_cv;
	kmutex_t	vm_lock;
	uint32_t	vm_id;
	uint32_t	vm_mtbf;
	int		vm_cflags;
	int		vm_qshift;
	size_t		vm_quantum;
	size_t		vm_qcache_max;
	size_t		vm_min_import;
	void		*(*vm_source_alloc)(vmem_t *, size_t, int);
	void		(*vm_source_free)(vmem_t *, void *, size_t);
	vmem_t		*vm_source;
	vmem_t		*vm_next;
	kstat_t		*vm_ksp;
	ssize_t		vm_nsegfree;
	vmem_seg_t	*vm_segfree;
	vmem_seg_t	**vm_hash_table;
	size_t		vm_hash_mask;
	size_t		vm_hash_shift;
	ulong_t		vm_freemap;
	vmem_seg_t	vm_seg0;
	vmem_seg_t	vm_rotor;
	vmem_seg_t	*vm_hash0[VMEM_HASH_INITIAL];
	void		*vm_qcache[VMEM_NQCACHE_MAX];
	vmem_freelist_t	vm_freelist[VMEM_FREELISTS + 1];
	vmem_kstat_t	vm_kstat;
};

/* ------------------------------------------------ id_space(9F) */
typedef struct id_space id_space_t;
extern id_space_t *id_space_create(const char *name, id_t low, id_t high);
extern void id_space_destroy(id_space_t *idspace);
extern id_t id_alloc(id_space_t *idspace);
extern id_t id_alloc_nosleep(id_space_t *idspace);
extern void id_free(id_space_t *idspace, id_t id);

/* ------------------------------------------------ sys/ddidevmap.h */
typedef void *ddi_umem_cookie_t;
typedef void *devmap_cookie_t;
typedef struct as *ddi_as_handle_t;

struct umem_callback_ops {
	int	cbo_umem_callback_version;
	void	(*cbo_umem_lock_cleanup)(ddi_umem_cookie_t *);
};

struct ddi_umem_cookie {
	size_t		size;
	caddr_t		cvaddr;
	kmutex_t	lock;
	uint_t		type;
	page_t		**pparray;
	void		*procp;
	struct as	*asp;
	enum seg_rw	s_flags;
	uint_t		locked;
	struct umem_callback_ops callbacks;
	ulong_t		cook_refcnt;
	struct ddi_umem_cookie *unl_forw;
	ulong_t		upd_max_lock_rctl;
};

#define	KMEM_PAGEABLE		0x100
#define	KMEM_NON_PAGEABLE	0x200
#define	UMEM_LOCKED		0x400
#define	UMEM_TRASH		0x800

struct devmap_callback_ctl {
	int	devmap_rev;
	int	(*devmap_map)(devmap_cookie_t dhp, dev_t dev, uint_t flags,
		    offset_t off, size_t len, void **pvtp);
	int	(*devmap_access)(devmap_cookie_t dhp, void *pvtp,
		    offset_t off, size_t len, uint_t type, uint_t rw);
	int	(*devmap_dup)(devmap_cookie_t dhp, void *pvtp,
		    devmap_cookie_t new_dhp, void **new_pvtp);
	void	(*devmap_unmap)(devmap_cookie_t dhp, void *pvtp, offset_t off,
		    size_t len, devmap_cookie_t new_dhp1, void **new_pvtp1,
		    devmap_cookie_t new_dhp2, void **new_pvtp2);
};

#define	DEVMAP_OPS_REV		1
#define	DEVMAP_DEFAULTS		0x00
#define	DEVMAP_MAPPING_INVALID	0x01
#define	DEVMAP_ALLOW_REMAP	0x02
#define	DEVMAP_USE_PAGESIZE	0x04

#define	DDI_UMEM_SLEEP		0x0
#define	DDI_UMEM_NOSLEEP	0x01
#define	DDI_UMEM_PAGEABLE	0x02
#define	DDI_UMEM_TRASH		0x04

typedef struct ddi_device_acc_attr ddi_device_acc_attr_t;

/* ddi_umem_alloc(9F) */
extern void *ddi_umem_alloc(size_t size, int flag,
    ddi_umem_cookie_t *cookiep);
extern void ddi_umem_free(ddi_umem_cookie_t cookie);
/* devmap_umem_setup(9F) */
extern int devmap_umem_setup(devmap_cookie_t dhp, dev_info_t *dip,
    struct devmap_callback_ctl *callbackops, ddi_umem_cookie_t cookie,
    offset_t koff, size_t len, uint_t maxprot, uint_t flags,
    ddi_device_acc_attr_t *accattrp);
/* devmap_setup(9F) */
extern int ddi_devmap_segmap(dev_t dev, off_t off, ddi_as_handle_t as,
    caddr_t *addrp, off_t len, uint_t prot, uint_t maxprot, uint_t flags,
    cred_t *cred);

/* ------------------------------------------------ sys/devops.h (9S) */
typedef enum {
	DDI_ATTACH = 0, DDI_RESUME = 1, DDI_PM_RESUME = 2
} ddi_attach_cmd_t;
typedef enum {
	DDI_DETACH = 0, DDI_SUSPEND = 1, DDI_PM_SUSPEND = 2,
	DDI_HOTPLUG_DETACH = 3
} ddi_detach_cmd_t;
typedef enum {
	DDI_INFO_DEVT2DEVINFO = 0, DDI_INFO_DEVT2INSTANCE = 1
} ddi_info_cmd_t;
typedef enum { DDI_RESET_FORCE = 0 } ddi_reset_cmd_t;
typedef enum {
	PROP_LEN = 0, PROP_LEN_AND_VAL_BUF = 1, PROP_LEN_AND_VAL_ALLOC = 2,
	PROP_EXISTS = 3
} ddi_prop_op_t;

/* cb_ops(9S) */
struct cb_ops {
	int	(*cb_open)(dev_t *devp, int flag, int otyp, cred_t *credp);
	int	(*cb_close)(dev_t dev, int flag, int otyp, cred_t *credp);
	int	(*cb_strategy)(struct buf *bp);
	int	(*cb_print)(dev_t dev, char *str);
	int	(*cb_dump)(dev_t dev, caddr_t addr, daddr_t blkno, int nblk);
	int	(*cb_read)(dev_t dev, struct uio *uiop, cred_t *credp);
	int	(*cb_write)(dev_t dev, struct uio *uiop, cred_t *credp);
	int	(*cb_ioctl)(dev_t dev, int cmd, intptr_t arg, int mode,
		    cred_t *credp, int *rvalp);
	int	(*cb_devmap)(dev_t dev, devmap_cookie_t dhp, offset_t off,
		    size_t len, size_t *maplen, uint_t model);
	int	(*cb_mmap)(dev_t dev, off_t off, uint_t prot);
	int	(*cb_segmap)(dev_t dev, off_t off, struct as *asp,
		    caddr_t *addrp, off_t len, unsigned int prot,
		    unsigned int maxprot, unsigned int flags, cred_t *credp);
	int	(*cb_chpoll)(dev_t dev, short events, int anyyet,
		    short *reventsp, struct pollhead **phpp);
	int	(*cb_prop_op)(dev_t dev, dev_info_t *dip,
		    ddi_prop_op_t prop_op, int mod_flags, char *name,
		    caddr_t valuep, int *length);
	struct streamtab *cb_str;
	int	cb_flag;
	int	cb_rev;
	int	(*cb_aread)(dev_t dev, struct aio_req *aio, cred_t *credp);
	int	(*cb_awrite)(dev_t dev, struct aio_req *aio, cred_t *credp);
};
#define	CB_REV		1

/* dev_ops(9S) */
struct dev_ops {
	int	devo_rev;
	int	devo_refcnt;
	int	(*devo_getinfo)(dev_info_t *dip, ddi_info_cmd_t infocmd,
		    void *arg, void **result);
	int	(*devo_identify)(dev_info_t *dip);
	int	(*devo_probe)(dev_info_t *dip);
	int	(*devo_attach)(dev_info_t *dip, ddi_attach_cmd_t cmd);
	int	(*devo_detach)(dev_info_t *dip, ddi_detach_cmd_t cmd);
	int	(*devo_reset)(dev_info_t *dip, ddi_reset_cmd_t cmd);
	struct cb_ops	*devo_cb_ops;
	struct bus_ops	*devo_bus_ops;
	int	(*devo_power)(dev_info_t *dip, int component, int level);
	int	(*devo_quiesce)(dev_info_t *dip);
};
#define	DEVO_REV	4

/* ------------------------------------------------ sys/conf.h */
#define	D_NEW		0x00
#define	D_MTSAFE	0x0020
#define	D_MP		D_MTSAFE
#define	D_64BIT		0x200
#define	D_DEVMAP	0x100

/* ------------------------------------------------ sys/modctl.h */
struct mod_ops;
extern struct mod_ops mod_driverops;
struct modinfo;
struct modldrv {
	struct mod_ops	*drv_modops;
	char		*drv_linkinfo;
	struct dev_ops	*drv_dev_ops;
};
#define	MODMAXLINK	7
struct modlinkage {
	int	ml_rev;
	void	*ml_linkage[MODMAXLINK];
};
#define	MODREV_1	1
/* _init(9E), _fini(9E), _info(9E); mod_install(9F) */
extern int _init(void);
extern int _fini(void);
extern int _info(struct modinfo *modinfop);
extern int mod_install(struct modlinkage *modlinkage);
extern int mod_remove(struct modlinkage *modlinkage);
extern int mod_info(struct modlinkage *modlinkage, struct modinfo *modinfop);

/* ------------------------------------------------ sys/ddi.h */
extern major_t getmajor(dev_t dev);
extern minor_t getminor(dev_t dev);
extern dev_t makedevice(major_t majnum, minor_t minnum);
extern unsigned long btop(unsigned long numbytes);
extern unsigned long btopr(unsigned long numbytes);
extern unsigned long ptob(unsigned long numpages);
extern int drv_priv(cred_t *cr);

/* ------------------------------------------------ sys/sunddi.h */
#define	DDI_SUCCESS	0
#define	DDI_FAILURE	(-1)
#define	DDI_PSEUDO	"ddi_pseudo"
#define	DDI_DEV_T_NONE	((dev_t)-1)
#define	DDI_DEV_T_ANY	((dev_t)-2)
#define	DDI_PROP_DONTPASS	0x0001
#define	DDI_MODEL_MASK	DATAMODEL_MASK
#define	DDI_MODEL_ILP32	DATAMODEL_ILP32
#define	DDI_MODEL_LP64	DATAMODEL_LP64
#define	DDI_MODEL_NATIVE	DATAMODEL_LP64
#define	DDI_MODEL_NONE	DATAMODEL_NONE

/*
 * nodev(9F), nulldev(9F): the manual pages show (void), but the headers
 * declare them without a prototype so that drivers can place them in any
 * cb_ops/dev_ops slot; this check does the same.
 */
extern int nodev();
extern int nulldev();
extern int nochpoll(dev_t dev, short events, int anyyet, short *reventsp,
    struct pollhead **phpp);
extern int ddi_prop_op(dev_t dev, dev_info_t *dip, ddi_prop_op_t prop_op,
    int flags, char *name, caddr_t valuep, int *lengthp);
extern int ddi_quiesce_not_needed(dev_info_t *dip);

extern int ddi_create_minor_node(dev_info_t *dip, const char *name,
    int spec_type, minor_t minor_num, const char *node_type, int flag);
extern void ddi_remove_minor_node(dev_info_t *dip, const char *name);
extern int ddi_get_instance(dev_info_t *dip);
extern void ddi_report_dev(dev_info_t *dip);
extern int ddi_prop_get_int(dev_t match_dev, dev_info_t *dip, uint_t flags,
    const char *name, int defvalue);

extern int ddi_soft_state_init(void **state_p, size_t size, size_t n_items);
extern int ddi_soft_state_zalloc(void *state, int item);
extern void *ddi_get_soft_state(void *state, int item);
extern void ddi_soft_state_free(void *state, int item);
extern void ddi_soft_state_fini(void **state_p);

extern int ddi_copyin(const void *buf, void *driverbuf, size_t cn,
    int flags);
extern int ddi_copyout(const void *driverbuf, void *buf, size_t cn,
    int flags);
extern uint_t ddi_model_convert_from(uint_t model);

#endif	/* _DDIH_COMPAT_DDI_PROTO_H */
