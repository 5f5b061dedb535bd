/* The two messages the launcher writes on a slot's order pipe (built in _shim/pid1.py).
 *
 * set-up, written as the slot is made:  "<length>\n" then <length> bytes of NUL-terminated
 *   fields:  uid gid disk binds userns nhidden hidden...  (binds "1": an order may bind host
 *   paths; userns "1": jobs may make user namespaces)
 * order, written when a start takes the slot, then the pipe is closed: NUL-terminated fields
 *   mode uid gid disk userns cwd argc argv... envc env... nbinds (source target rw)...
 *   nmasks masks... rootfs
 * (mode "user" or "root"; userns "1" lets the job make user namespaces). An empty order (the
 * pipe closed without one) tells the init to exit quietly. Both are parsed in place: the
 * strings point into the buffer read.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "_sandbox.h"

#define MAX_SETUP (1 << 20)

int failed(struct failure *f, const char *stage, const char *fmt, ...) {
    int saved = errno;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->what, sizeof f->what, fmt, ap);
    va_end(ap);
    f->stage = stage;
    f->err = saved;
    errno = saved;
    return -1;
}

static int read_exactly(int fd, char *buf, size_t len) {
    size_t n = 0;
    while (n < len) {
        ssize_t got = read(fd, buf + n, len - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0) {
            if (got == 0)
                errno = EPIPE;
            return -1;
        }
        n += (size_t)got;
    }
    return 0;
}

char *read_order(int fd, size_t *len) {
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap + 1);
    for (;;) {
        if (buf == NULL)
            return NULL;
        ssize_t got = read(fd, buf + n, cap - n);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            free(buf);
            return NULL;
        }
        if (got == 0)
            break;
        n += (size_t)got;
        if (n == cap) {
            cap *= 2;
            buf = realloc(buf, cap + 1);
        }
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

/* The next NUL-terminated field at *pos, or NULL past the end. */
static char *field(char *buf, size_t len, size_t *pos) {
    if (*pos >= len)
        return NULL;
    char *start = buf + *pos;
    char *end = memchr(start, '\0', len - *pos);
    if (end == NULL)
        return NULL;
    *pos = (size_t)(end - buf) + 1;
    return start;
}

static int number(char *buf, size_t len, size_t *pos, unsigned long long max,
                  unsigned long long *out) {
    char *text = field(buf, len, pos), *end = NULL;
    if (text == NULL || *text == '\0')
        return -1;
    errno = 0;
    *out = strtoull(text, &end, 10);
    return errno != 0 || *end != '\0' || *out > max ? -1 : 0;
}

/* A count, then that many fields (groups of `width`), as a NULL-terminated array. */
static char **list(char *buf, size_t len, size_t *pos, size_t width, size_t *count) {
    unsigned long long n;
    if (number(buf, len, pos, 10000000, &n) < 0)
        return NULL;
    char **items = calloc((size_t)n * width + 1, sizeof *items);
    for (size_t i = 0; items != NULL && i < n * width; i++)
        if ((items[i] = field(buf, len, pos)) == NULL)
            return NULL;
    if (count != NULL)
        *count = (size_t)n;
    return items;
}

static int ids(char *buf, size_t len, size_t *pos, uid_t *uid, gid_t *gid) {
    unsigned long long u, g;
    if (number(buf, len, pos, 0xfffffffeULL, &u) < 0 ||
        number(buf, len, pos, 0xfffffffeULL, &g) < 0)
        return -1;
    *uid = (uid_t)u;
    *gid = (gid_t)g;
    return 0;
}

int read_setup(int fd, struct setup *s) {
    char head[24];
    size_t n = 0;
    for (;;) { /* the length line, a byte at a time: the order may follow it in the pipe */
        if (n == sizeof head - 1 || read_exactly(fd, head + n, 1) < 0)
            return -1;
        if (head[n] == '\n')
            break;
        n++;
    }
    head[n] = '\0';
    long len = strtol(head, NULL, 10);
    if (len <= 0 || len > MAX_SETUP)
        return -1;
    char *buf = malloc((size_t)len); /* kept for the slot's life: SETUP points into it */
    if (buf == NULL || read_exactly(fd, buf, (size_t)len) < 0)
        return -1;
    size_t pos = 0;
    unsigned long long binds, userns;
    if (ids(buf, (size_t)len, &pos, &s->uid, &s->gid) < 0 ||
        number(buf, (size_t)len, &pos, ~0ULL, &s->disk) < 0 ||
        number(buf, (size_t)len, &pos, 1, &binds) < 0 ||
        number(buf, (size_t)len, &pos, 1, &userns) < 0)
        return -1;
    s->binds = (int)binds;
    s->userns = (int)userns;
    return (s->hidden = list(buf, (size_t)len, &pos, 1, NULL)) == NULL ? -1 : 0;
}

int parse_order(char *buf, size_t len, struct order *o) {
    size_t pos = 0;
    unsigned long long userns;
    char *mode = field(buf, len, &pos);
    if (mode == NULL || (strcmp(mode, "user") != 0 && strcmp(mode, "root") != 0))
        return -1;
    o->mode = mode[0] == 'r' ? MODE_ROOT : MODE_USER;
    if (ids(buf, len, &pos, &o->uid, &o->gid) < 0 ||
        number(buf, len, &pos, ~0ULL, &o->disk) < 0 || number(buf, len, &pos, 1, &userns) < 0)
        return -1;
    o->user_namespaces = (int)userns;
    if ((o->cwd = field(buf, len, &pos)) == NULL)
        return -1;
    if ((o->argv = list(buf, len, &pos, 1, NULL)) == NULL || o->argv[0] == NULL)
        return -1;
    if ((o->envp = list(buf, len, &pos, 1, NULL)) == NULL)
        return -1;
    char **binds = list(buf, len, &pos, 3, &o->nbinds);
    if (binds == NULL || (o->binds = calloc(o->nbinds + 1, sizeof *o->binds)) == NULL)
        return -1;
    for (size_t i = 0; i < o->nbinds; i++) {
        o->binds[i].source = binds[3 * i];
        o->binds[i].target = binds[3 * i + 1];
        o->binds[i].writable = strcmp(binds[3 * i + 2], "rw") == 0;
    }
    if ((o->masks = list(buf, len, &pos, 1, NULL)) == NULL)
        return -1;
    return (o->rootfs = field(buf, len, &pos)) == NULL ? -1 : 0;
}
