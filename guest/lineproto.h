/*
 * lineproto.h: the op runners' side of the line protocol (kmod/README.md),
 * shared by the two programs that speak it:
 *
 *   guest/ddictl.c       runs in a guest against the ddih driver;
 *   kmod/gate/gatectl.c  runs the real illumos vmem.c in-process (built with
 *                        -I../../guest, kmod/gate/Makefile).
 *
 * It holds everything the two must do the same way, byte for byte on the
 * wire: result line output (emit, flushed when about to wait for input),
 * protocol errors (kind=error errno=EPROTO plus an explanation on stderr),
 * splitting "OP key=value ..." lines and reading their arguments, object
 * names, the control lines (budget_ms=N, layout=on|off, reset) and the
 * formatting of the ` layout=<total>:<seg>,...' suffix.  The ops themselves
 * and how a layout is read stay in each program.
 *
 * This is not a library: every function is static, and the header is
 * included by exactly one C file of each program.  Before including it,
 * define LINEPROTO_PROG to the program's name (the prefix of its stderr
 * explanations).  The includer provides do_reset() through
 * lp_next_op()'s argument.
 */

#ifndef LINEPROTO_H
#define	LINEPROTO_H

#ifndef LINEPROTO_PROG
#error "define LINEPROTO_PROG (the program's name) before including lineproto.h"
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#define	MAXARGS		16	/* key=value arguments on one line */
#define	NAMELEN		64	/* longest object name */

/* Set by the control lines (lp_next_op). */
static long budget_ms = 10000;	/* `budget_ms=N': per-op time budget */
static int layout_on;		/* `layout=on' */

/* ------------------------------------------------------------ output */

static void
emit(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void) vprintf(fmt, ap);
	va_end(ap);
	(void) putchar('\n');
	/*
	 * Results are flushed when the runner is about to wait for input
	 * (see input_buffered()), not after every line: a streamed batch
	 * then leaves in a few large writes instead of one SSH packet per
	 * op, while a caller sending one op at a time still gets each
	 * answer at once.
	 */
}

/* ------------------------------------------------------------ time and hangs */

/* *ts = now + ns on CLOCK_MONOTONIC. */
static void
deadline(struct timespec *ts, long long ns)
{
	(void) clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += (time_t)(ns / 1000000000LL);
	ts->tv_nsec += (long)(ns % 1000000000LL);
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static int
past(const struct timespec *ts)
{
	struct timespec now;

	(void) clock_gettime(CLOCK_MONOTONIC, &now);
	return (now.tv_sec > ts->tv_sec || (now.tv_sec == ts->tv_sec &&
	    now.tv_nsec >= ts->tv_nsec));
}

/* The op ran past its budget: say so, and exit 3 (stdio first: _exit does not flush it). */
static void
hang(void)
{
	emit("kind=hang");
	(void) fflush(stdout);
	_exit(3);
}

/* Does stdin already hold a whole line we have not read (no wait needed)? */
static int
input_buffered(void)
{
#ifdef __GLIBC__
	return (stdin->_IO_read_ptr < stdin->_IO_read_end &&
	    memchr(stdin->_IO_read_ptr, '\n',
	    (size_t)(stdin->_IO_read_end - stdin->_IO_read_ptr)) != NULL);
#else
	return (0);
#endif
}

/* A malformed line: explain on stderr, answer kind=error errno=EPROTO. */
static void
protoerr(const char *fmt, ...)
{
	va_list ap;

	(void) fprintf(stderr, LINEPROTO_PROG ": ");
	va_start(ap, fmt);
	(void) vfprintf(stderr, fmt, ap);
	va_end(ap);
	(void) fputc('\n', stderr);
	(void) fflush(stderr);
	emit("kind=error errno=EPROTO");
}

/* ------------------------------------------------------------ parsing */

struct kv {
	char	*key;
	char	*val;
	int	used;
};

struct line {
	char		*op;
	struct kv	kv[MAXARGS];
	int		nkv;
};

static int
split_line(char *s, struct line *ln)
{
	char *tok, *save = NULL;

	ln->op = NULL;
	ln->nkv = 0;
	for (tok = strtok_r(s, " \t\r\n", &save); tok != NULL;
	    tok = strtok_r(NULL, " \t\r\n", &save)) {
		char *eq;

		if (ln->op == NULL) {
			ln->op = tok;
			continue;
		}
		if (ln->nkv == MAXARGS) {
			protoerr("too many arguments");
			return (-1);
		}
		eq = strchr(tok, '=');
		if (eq == NULL || eq == tok) {
			protoerr("argument '%s' is not key=value", tok);
			return (-1);
		}
		*eq = '\0';
		ln->kv[ln->nkv].key = tok;
		ln->kv[ln->nkv].val = eq + 1;
		ln->kv[ln->nkv].used = 0;
		ln->nkv++;
	}
	return (0);
}

static const char *
getarg(struct line *ln, const char *key)
{
	int i;

	for (i = 0; i < ln->nkv; i++) {
		if (strcmp(ln->kv[i].key, key) == 0) {
			ln->kv[i].used = 1;
			return (ln->kv[i].val);
		}
	}
	return (NULL);
}

static int
parse_u64(const char *s, uint64_t *out)
{
	char *end;
	int base = 10;

	if (s == NULL || *s == '\0' || *s == '-' || *s == '+' || *s == ' ')
		return (-1);
	if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
		if (*s == '\0' || *s == '-' || *s == '+')
			return (-1);
	}
	errno = 0;
	*out = strtoull(s, &end, base);
	if (errno != 0 || *end != '\0')
		return (-1);
	return (0);
}

/* The value v of argument key, unsigned; protoerr() if it is not. */
static int
arg_parse_u64(struct line *ln, const char *key, const char *v, uint64_t *out)
{
	if (parse_u64(v, out) != 0) {
		protoerr("%s: %s=%s is not an unsigned 64-bit integer",
		    ln->op, key, v);
		return (-1);
	}
	return (0);
}

/* Required unsigned argument. */
static int
arg_u64(struct line *ln, const char *key, uint64_t *out)
{
	const char *v = getarg(ln, key);

	if (v == NULL) {
		protoerr("%s: missing %s=", ln->op, key);
		return (-1);
	}
	return (arg_parse_u64(ln, key, v, out));
}

static int
valid_name(const char *s)
{
	size_t i, n = strlen(s);

	if (n == 0 || n > NAMELEN)
		return (0);
	for (i = 0; i < n; i++) {
		char c = s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    c == '_' || (i > 0 && ((c >= '0' && c <= '9') ||
		    c == '.' || c == '-'))))
			return (0);
	}
	return (1);
}

static int
check_unused(struct line *ln)
{
	int i;

	for (i = 0; i < ln->nkv; i++) {
		if (!ln->kv[i].used) {
			protoerr("%s takes no argument '%s'", ln->op,
			    ln->kv[i].key);
			return (-1);
		}
	}
	return (0);
}

/* ------------------------------------------------------------ input */

/*
 * Read lines from stdin until one holds an op, and split it into *ln
 * (pointing into *bufp, valid until the next call).  Blank lines and '#'
 * comments are skipped; malformed lines get protoerr(); the control lines
 * are handled here (no result line): budget_ms=N, layout=on|off, and
 * reset, which calls reset() (and keeps layout_on).  Returns 1 with an op
 * line to dispatch, 0 at the end of input.  Pending results are flushed
 * before a read that would wait.
 */
static int
lp_next_op(char **bufp, size_t *capp, struct line *ln, void (*reset)(void))
{
	ssize_t n;
	char *s;
	uint64_t v;

	for (;;) {
		if (!input_buffered())
			(void) fflush(stdout);	/* about to wait: answer first */
		if ((n = getline(bufp, capp, stdin)) < 0)
			return (0);
		s = *bufp;
		while (*s == ' ' || *s == '\t')
			s++;
		if (*s == '\0' || *s == '\n' || *s == '\r' || *s == '#')
			continue;
		if (strlen(s) != (size_t)n - (size_t)(s - *bufp)) {
			protoerr("the line contains a NUL byte");
			continue;
		}
		if (split_line(s, ln) != 0 || ln->op == NULL)
			continue;
		if (strncmp(ln->op, "budget_ms=", 10) == 0 && ln->nkv == 0) {
			if (parse_u64(ln->op + 10, &v) != 0 || v == 0 ||
			    v > 86400000ULL) {
				protoerr("budget_ms= needs 1..86400000");
				continue;
			}
			budget_ms = (long)v;
			continue;
		}
		if (strncmp(ln->op, "layout=", 7) == 0 && ln->nkv == 0) {
			if (strcmp(ln->op + 7, "on") == 0)
				layout_on = 1;
			else if (strcmp(ln->op + 7, "off") == 0)
				layout_on = 0;
			else
				protoerr("layout= needs on or off");
			continue;
		}
		if (strcmp(ln->op, "reset") == 0 && ln->nkv == 0) {
			reset();	/* keeps layout_on */
			continue;
		}
		if (strchr(ln->op, '=') != NULL) {
			protoerr("'%s' is not an op name", ln->op);
			continue;
		}
		return (1);
	}
}

/* ------------------------------------------------------------ layout */

/*
 * The ` layout=<total>:<seg>,<seg>,...' suffix of a result line, appended
 * at line + n (capacity cap, n < cap): lp_layout_total() first, then
 * lp_layout_seg() for each listed segment i = 0, 1, ... while n < cap.
 * Both return the new n (snprintf's count: it may pass cap when the line
 * is cut).
 */
static size_t
lp_layout_total(char *line, size_t cap, size_t n, uint64_t total)
{
	return (n + (size_t)snprintf(line + n, cap - n, " layout=%" PRIu64 ":",
	    total));
}

/*
 * Segment i: "[,]<type>:<start>+<size>", <type> being the letter type
 * (s span, a allocated, f free) followed by the freelist number flist when
 * flist >= 0 (a free segment on vmem freelist k: "f<k>").
 */
static size_t
lp_layout_seg(char *line, size_t cap, size_t n, uint64_t i, char type,
    int64_t flist, uint64_t start, uint64_t size)
{
	char t[32];

	if (flist >= 0)
		(void) snprintf(t, sizeof (t), "%c%" PRId64, type, flist);
	else
		(void) snprintf(t, sizeof (t), "%c", type);
	return (n + (size_t)snprintf(line + n, cap - n, "%s%s:%" PRIu64 "+%"
	    PRIu64, i ? "," : "", t, start, size));
}

#endif /* LINEPROTO_H */
