/* What the init (_pid1.c), the job's filesystem view (_sandbox.c), its privileges
 * (_privilege.c) and the messages from the launcher (_order.c) share.
 *
 * A slot is made in two steps. While it warms, the init reads its set-up (struct setup: what
 * does not depend on any request) and builds the job's view from it; when a start takes the
 * slot, it reads the order (struct order: the request) and finishes the view and the job's
 * identity from that. The launcher writes both to the init's order pipe (_shim/pid1.py).
 */
#ifndef JOBMGR_SANDBOX_H
#define JOBMGR_SANDBOX_H

#include <stddef.h>
#include <sys/types.h>

/* Where a step failed, for the report line "error <stage> <what>: <strerror(err)>". */
struct failure {
    const char *stage; /* a StartStage value: "user", "cwd", "exec", "mount", "setup" */
    int err;           /* errno; 0: the message says it all */
    char what[700];
};

/* Fill *f and return -1, keeping errno as it was when the step failed. */
int failed(struct failure *f, const char *stage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The slot's set-up: the first message on the order pipe. */
struct setup {
    uid_t uid;                /* the slot's own uid (its lease) and gid */
    gid_t gid;
    unsigned long long disk;  /* bytes its private tmpfs holds at first; 0: no size limit */
    int binds;                /* an order may bind host paths (or a root of its own) */
    int userns;               /* its jobs may make user namespaces of their own */
    char **hidden;            /* host paths hidden behind an empty directory or file */
};

/* How the job runs. */
enum job_mode {
    MODE_USER, /* as uid/gid on the host: no capability left at all */
    MODE_ROOT, /* as root of a user namespace of its own, mapped to uid/gid on the host */
};

struct bind {
    const char *source; /* a host path, resolved (no symlink in it) */
    const char *target; /* where the job sees it */
    int writable;
};

/* The order: the second message, read once a start has taken the slot. */
struct order {
    enum job_mode mode;
    uid_t uid;
    gid_t gid;
    unsigned long long disk; /* the job's disk limit in bytes; 0: none but its memory */
    int user_namespaces;     /* the job may make user namespaces of its own */
    const char *cwd;         /* empty: the scratch directory */
    char **argv, **envp;
    struct bind *binds;
    size_t nbinds;
    char **masks;            /* host path sockets to cover with an empty file */
    const char *rootfs;      /* empty: the host's root */
};

/* _order.c: both messages, parsed in place in buffers read from the order pipe. */
int read_setup(int fd, struct setup *s);
char *read_order(int fd, size_t *len);
int parse_order(char *buf, size_t len, struct order *o);

/* _sandbox.c: the job's filesystem view. The warm steps run as PID 1 of the slot's fresh
 * namespaces, in this order, each a row of the init's STEPS table; view_order applies the
 * order; view_release lets go of what only the order needed. */
extern struct setup SETUP;
int view_skeleton(void);
int view_dev(void);
int view_proc(void);
int view_sys(void);
int view_private(void);
int view_hidden(void);
int view_enter(void);
int view_order(const struct order *o, struct failure *f);
void view_release(void);
extern char view_problem[600]; /* the path a warm step failed on, if any */

/* _privilege.c: the filter every job gets, made once by the zygote, and the job's first
 * process: forked by the init, given its identity and limits, then exec'd. */
int filters_prepare(void);
pid_t launch_job(const struct order *o, const int *stdio, struct failure *f);

/* The job's first process made ahead, its filter loaded, waiting for the order (see
 * _privilege.c). */
struct standby {
    pid_t pid;  /* -1: none */
    int order;  /* the order's bytes go here, then it is closed */
    int status; /* a struct failure comes back here, or EOF once the command runs */
    int userns; /* the filter it loaded lets the job make user namespaces */
};
/* Fork it while the slot warms; fds[0..2] are the job's stdio, the rest are closed in it. */
void standby_make(struct standby *s, const int *fds, size_t nfds, int userns);
/* Kill it (a start it cannot serve, or none). */
void standby_drop(struct standby *s);
/* Start the job of order `o` (whose bytes, unparsed, are `raw`): through the standby when it
 * can take it, else by launch_job. Returns its pid, or -1 with *f filled in. */
pid_t start_job(struct standby *s, const char *raw, size_t len, const struct order *o,
                const int *stdio, struct failure *f);

#endif
