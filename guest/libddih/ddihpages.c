/*
 * ddihpages: the guest-side helper behind the `exported_pages' pytest
 * fixture (harness/pytest_plugin.py).  One process holds one open ddih
 * device, one umem buffer and its mapping, and serves commands from stdin,
 * one per line, with one reply line each on stdout (flushed):
 *
 *   alloc SIZE FLAGS          ddi_umem_alloc(SIZE, FLAGS: DDIH_UMEM_* bits)
 *                             -> ok handle=H size=N offset=N zeroed=0|1
 *                                type=0xN cookie_size=N
 *   map OFF LEN PROT MAPPING  export bytes [OFF, OFF+LEN) and mmap them;
 *                             PROT: DDIH_PROT_* bits, MAPPING shared|private
 *                             -> ok maplen=N
 *   write OFF HEX             user side: store bytes at buffer offset OFF
 *   read OFF LEN              user side: -> ok data=HEX
 *   ufill OFF LEN SEED        user side: write DDIH_PATTERN(SEED, i)
 *   ucheck OFF LEN SEED       user side: -> ok first_bad=-1|N
 *   kfill OFF LEN SEED        kernel side (UMEM_FILL)
 *   kcheck OFF LEN SEED       kernel side (UMEM_CHECK) -> ok match=0|1
 *   run MS OUT HEXARG...      fork and exec argv (hex-encoded; argv[0] is
 *                             the program's path) with the device inherited
 *                             and $DDIH_FD, $DDIH_HANDLE, $DDIH_SIZE,
 *                             $DDIH_OFF, $DDIH_LEN set (libddih:
 *                             ddih_inherited); stdout/stderr to OUT.out and
 *                             OUT.err; killed after MS ms.
 *                             -> ok status=N | ok signal=N | ok timeout=1
 *   unmap | free | quit
 *
 * User-side offsets are offsets in the buffer and must lie inside the
 * mapped window.  Errors: `error errno=N text'.  Built with libddih:
 *   gcc -O2 -static -Wall -I. -I../../kmod -o ddihpages ddihpages.c ddih.c
 */

#if !defined(__sun)
#define	_GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ddih.h"

#define	MAXTOK	256

static int fd = -1;
static uint32_t handle;
static uint64_t bufsize;
static uint8_t *map;		/* byte `moff' of the buffer */
static uint64_t moff, mlen;	/* the mapped window, buffer offsets */
static int mprot;		/* PROT_* of the mapping */

static void
reply(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

static void
reply(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void) vprintf(fmt, ap);
	va_end(ap);
	(void) putchar('\n');
	(void) fflush(stdout);
}

static void
fail(int e, const char *what)
{
	reply("error errno=%d %s: %s", e, what, strerror(e));
}

static int
num(const char *s, uint64_t *out)
{
	char *end;

	if (s == NULL || *s < '0' || *s > '9')
		return (-1);
	errno = 0;
	*out = strtoull(s, &end, 0);
	return (errno != 0 || *end != '\0' ? -1 : 0);
}

static int
hexval(char c)
{
	if (c >= '0' && c <= '9')
		return (c - '0');
	if (c >= 'a' && c <= 'f')
		return (c - 'a' + 10);
	if (c >= 'A' && c <= 'F')
		return (c - 'A' + 10);
	return (-1);
}

/* Decode hex in place; returns the byte count or -1. */
static ssize_t
unhex(char *s)
{
	size_t n = strlen(s), i;

	if (n % 2 != 0)
		return (-1);
	for (i = 0; i < n / 2; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return (-1);
		s[i] = (char)(hi << 4 | lo);
	}
	s[n / 2] = '\0';
	return ((ssize_t)(n / 2));
}

/* [off, off+len) inside the mapped window with the protection `need'. */
static uint8_t *
window(uint64_t off, uint64_t len, int need)
{
	if (map == NULL) {
		fail(ENXIO, "no mapping (map first)");
		return (NULL);
	}
	if (off < moff || len > mlen || off - moff > mlen - len) {
		fail(ERANGE, "outside the mapped window");
		return (NULL);
	}
	if ((mprot & need) != need) {
		fail(EACCES, "the mapping's protection does not allow it");
		return (NULL);
	}
	return (map + (off - moff));
}

static void
cmd_alloc(char **tok, int n)
{
	struct ddih_umem_info info;
	uint64_t size, flags;

	if (n != 3 || num(tok[1], &size) || num(tok[2], &flags) ||
	    flags > UINT32_MAX) {
		fail(EINVAL, "usage: alloc SIZE FLAGS");
		return;
	}
	if (handle != 0) {
		fail(EEXIST, "a buffer is already allocated");
		return;
	}
	if (ddih_umem_alloc_info(fd, size, (uint32_t)flags, &handle,
	    &info) != 0) {
		if (errno == ENOMEM && handle == 0)
			reply("null");
		else
			fail(errno, "ddi_umem_alloc");
		return;
	}
	bufsize = info.size;
	reply("ok handle=%u size=%" PRIu64 " offset=%" PRIu64 " zeroed=%d "
	    "type=0x%x cookie_size=%" PRIu64, handle, info.size, info.offset,
	    info.zeroed, info.type, info.cookie_size);
}

static void
cmd_map(char **tok, int n)
{
	uint64_t off, len, prot;
	int flags;
	void *p;

	if (n != 5 || num(tok[1], &off) || num(tok[2], &len) ||
	    num(tok[3], &prot) || prot > 0xf ||
	    (strcmp(tok[4], "shared") != 0 && strcmp(tok[4], "private") != 0)) {
		fail(EINVAL, "usage: map OFF LEN PROT shared|private");
		return;
	}
	if (map != NULL) {
		fail(EEXIST, "already mapped (unmap first)");
		return;
	}
	flags = strcmp(tok[4], "shared") == 0 ? MAP_SHARED : MAP_PRIVATE;
	mprot = ddih_prot_to_mmap((uint32_t)prot);
	p = ddih_umem_map(fd, handle, off, (size_t)len, mprot, flags);
	if (p == NULL) {
		fail(errno, "export and mmap");
		return;
	}
	map = p;
	moff = off;
	mlen = ddih_round_pages(len);
	reply("ok maplen=%" PRIu64, mlen);
}

static void
cmd_write(char **tok, int n)
{
	uint64_t off;
	ssize_t len;
	uint8_t *p;

	if (n != 3 || num(tok[1], &off) || (len = unhex(tok[2])) < 0) {
		fail(EINVAL, "usage: write OFF HEX");
		return;
	}
	if ((p = window(off, (uint64_t)len, PROT_WRITE)) == NULL)
		return;
	(void) memcpy(p, tok[2], (size_t)len);
	reply("ok");
}

static void
cmd_read(char **tok, int n)
{
	static const char digits[] = "0123456789abcdef";
	uint64_t off, len, i;
	uint8_t *p;
	char *out;

	if (n != 3 || num(tok[1], &off) || num(tok[2], &len)) {
		fail(EINVAL, "usage: read OFF LEN");
		return;
	}
	if ((p = window(off, len, PROT_READ)) == NULL)
		return;
	if ((out = malloc(2 * len + 1)) == NULL) {
		fail(ENOMEM, "read");
		return;
	}
	for (i = 0; i < len; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 0xf];
	}
	out[2 * len] = '\0';
	reply("ok data=%s", out);
	free(out);
}

static void
cmd_pattern(char **tok, int n)
{
	uint64_t off, len, seed;
	int user = tok[0][0] == 'u', fill = strcmp(tok[0] + 1, "fill") == 0;
	uint8_t *p;
	int rc;

	if (n != 4 || num(tok[1], &off) || num(tok[2], &len) ||
	    num(tok[3], &seed)) {
		fail(EINVAL, "usage: ufill|ucheck|kfill|kcheck OFF LEN SEED");
		return;
	}
	if (user) {
		if ((p = window(off, len, fill ? PROT_WRITE : PROT_READ)) ==
		    NULL)
			return;
		if (fill) {
			ddih_pattern_fill(p, (size_t)len, seed);
			reply("ok");
		} else {
			reply("ok first_bad=%" PRId64,
			    ddih_pattern_check(p, (size_t)len, seed));
		}
		return;
	}
	if (fill) {
		if (ddih_kernel_fill(fd, handle, off, len, seed) != 0)
			fail(errno, "UMEM_FILL");
		else
			reply("ok");
		return;
	}
	if ((rc = ddih_kernel_check(fd, handle, off, len, seed)) < 0)
		fail(errno, "UMEM_CHECK");
	else
		reply("ok match=%d", rc);
}

static void
setenv_u64(const char *name, uint64_t v)
{
	char buf[32];

	(void) snprintf(buf, sizeof (buf), "%" PRIu64, v);
	(void) setenv(name, buf, 1);
}

static void
cmd_run(char **tok, int n)
{
	char path[4096], *argv[MAXTOK];
	uint64_t ms;
	struct timespec start, now;
	int i, status, o, e;
	pid_t pid, w;

	if (n < 4 || num(tok[1], &ms) || strlen(tok[2]) > sizeof (path) - 8) {
		fail(EINVAL, "usage: run MS OUT HEXARG...");
		return;
	}
	for (i = 3; i < n; i++) {
		if (unhex(tok[i]) < 0) {
			fail(EINVAL, "run: arguments must be hex");
			return;
		}
		argv[i - 3] = tok[i];
	}
	argv[n - 3] = NULL;
	(void) snprintf(path, sizeof (path), "%s.out", tok[2]);
	o = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	(void) snprintf(path, sizeof (path), "%s.err", tok[2]);
	e = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (o < 0 || e < 0) {
		fail(errno, "run: output files");
		if (o >= 0)
			(void) close(o);
		if (e >= 0)
			(void) close(e);
		return;
	}
	(void) fflush(stdout);
	pid = fork();
	if (pid < 0) {
		fail(errno, "fork");
		(void) close(o);
		(void) close(e);
		return;
	}
	if (pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		if (nul >= 0)
			(void) dup2(nul, 0);
		(void) dup2(o, 1);
		(void) dup2(e, 2);
		(void) fcntl(fd, F_SETFD, 0);	/* inherited across exec */
		setenv_u64("DDIH_FD", (uint64_t)fd);
		setenv_u64("DDIH_HANDLE", handle);
		setenv_u64("DDIH_SIZE", bufsize);
		setenv_u64("DDIH_OFF", moff);
		setenv_u64("DDIH_LEN", mlen);
		(void) execv(argv[0], argv);
		(void) fprintf(stderr, "ddihpages: exec %s: %s\n", argv[0],
		    strerror(errno));
		_exit(127);
	}
	(void) close(o);
	(void) close(e);
	(void) clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (w < 0 && errno != EINTR) {
			fail(errno, "waitpid");
			return;
		}
		(void) clock_gettime(CLOCK_MONOTONIC, &now);
		if ((uint64_t)((now.tv_sec - start.tv_sec) * 1000 +
		    (now.tv_nsec - start.tv_nsec) / 1000000) > ms) {
			(void) kill(pid, SIGKILL);
			(void) waitpid(pid, &status, 0);
			reply("ok timeout=1");
			return;
		}
		(void) usleep(2000);
	}
	if (WIFEXITED(status))
		reply("ok status=%d", WEXITSTATUS(status));
	else
		reply("ok signal=%d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

static void
do_unmap(void)
{
	if (map != NULL)
		(void) ddih_umem_unmap(map, (size_t)mlen);
	map = NULL;
	moff = mlen = 0;
}

int
main(int argc, char **argv)
{
	char *buf = NULL, *tok[MAXTOK], *save = NULL, *t;
	size_t cap = 0;
	int n;

	if ((fd = ddih_open(argc > 1 ? argv[1] : NULL)) < 0) {
		(void) fprintf(stderr, "ddihpages: open %s: %s\n",
		    argc > 1 ? argv[1] : DDIH_DEVICE, strerror(errno));
		return (2);
	}
	reply("ready");
	while (getline(&buf, &cap, stdin) >= 0) {
		n = 0;
		for (t = strtok_r(buf, " \t\r\n", &save); t != NULL && n < MAXTOK - 1;
		    t = strtok_r(NULL, " \t\r\n", &save))
			tok[n++] = t;
		if (n == 0)
			continue;
		if (strcmp(tok[0], "alloc") == 0) {
			cmd_alloc(tok, n);
		} else if (strcmp(tok[0], "map") == 0) {
			cmd_map(tok, n);
		} else if (strcmp(tok[0], "write") == 0) {
			cmd_write(tok, n);
		} else if (strcmp(tok[0], "read") == 0) {
			cmd_read(tok, n);
		} else if (strcmp(tok[0], "ufill") == 0 ||
		    strcmp(tok[0], "ucheck") == 0 ||
		    strcmp(tok[0], "kfill") == 0 ||
		    strcmp(tok[0], "kcheck") == 0) {
			cmd_pattern(tok, n);
		} else if (strcmp(tok[0], "run") == 0) {
			cmd_run(tok, n);
		} else if (strcmp(tok[0], "unmap") == 0) {
			do_unmap();
			reply("ok");
		} else if (strcmp(tok[0], "free") == 0) {
			do_unmap();
			if (handle != 0 && ddih_umem_free(fd, handle) != 0) {
				fail(errno, "ddi_umem_free");
				continue;
			}
			handle = 0;
			bufsize = 0;
			reply("ok");
		} else if (strcmp(tok[0], "quit") == 0) {
			break;
		} else {
			fail(EINVAL, "unknown command");
		}
	}
	do_unmap();
	if (handle != 0)
		(void) ddih_umem_free(fd, handle);
	(void) ddih_close(fd);
	reply("bye");
	return (0);
}
