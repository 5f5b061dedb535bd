/* The in-namespace init of every job, and the zygote that forks it.
 *
 * Why a zygote, and why C: a job's init lives as long as the job. A forked Python process
 * dirties over 1 MiB of private memory just by running, and a fork copies the page tables of
 * all its parent maps (the launcher's 15 MiB heap: thousands of entries, at every start). So
 * the launcher execs this program once, as the zygote, which maps about 100 KiB and never
 * writes it again; every init is forked from it and costs about 110 KiB.
 *
 * zygote (`_pid1 SOCKET_FD`, run by the launcher): builds the jobs' seccomp filters once
 *   (_privilege.c), then each SOCK_SEQPACKET message on SOCKET_FD asks for a slot: the job's
 *   cgroup2 directory (empty on v1) and its cgroup.procs paths, NUL-separated, and six fds
 *   (stdin, stdout, stderr, order, report, and the lease that holds the slot's uid: the
 *   launcher's lock on it lasts as long as the init keeps this fd). It clones a "mid" per
 *   message straight into that directory (clone3 with CLONE_INTO_CGROUP, Linux 5.7), or, where
 *   that fails, forks one (SIGCHLD ignored: the kernel reaps them); exits when the socket
 *   closes.
 * mid: resets signals, closes every other fd, joins the job's cgroup unless cloned into it
 *   (writing cgroup.procs: on v1 that waits for an RCU grace period, about 20 ms), unshares
 *   the namespaces of STEPS, forks the init, reports "pid <init's host pid> <cloned|joined>"
 *   and exits (the init is reparented to the launcher, a child subreaper).
 * init: PID 1 of the new PID namespace. Reads the slot's set-up from the order pipe, runs each
 *   step's inside() (the namespaces', then the job's filesystem view of _sandbox.c), forks the
 *   standby (the job's first process made ahead, its seccomp filter loaded: _privilege.c),
 *   reports "ready", then reads its order (both messages: _order.c; an empty order: exit
 *   quietly). It finishes the view for the order and starts the job's first process: the
 *   standby, given the order, or for a job it cannot serve (a root job) a new one (vfork, or
 *   fork for a root job). That process takes the job's identity, drops its privileges and
 *   execs the command in a new session, every signal at its default; an error on the way
 *   comes back here. It reports "started" or "error <stage> <message>".
 *
 * Signal and reaping rules, as in tini: every child that dies in the namespace is reaped; when
 * the job's main process ends, init reports "exit <wait status>" and exits with its code, and
 * the kernel SIGKILLs whatever is left in the namespace, daemons included. Signals are blocked
 * and taken with sigwaitinfo(), so no handler races the loop; which signal is forwarded and
 * which is the launcher's stop is in _pid1_supervise.c. Each report is one line in one write
 * (under PIPE_BUF); the launcher writes the order and reads the reports in _shim/pid1.py.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/sched.h>
#include <fcntl.h>
#include <limits.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "_pid1.h"
#include "_sandbox.h"

enum { FD_STDIN, FD_STDOUT, FD_STDERR, FD_ORDER, FD_REPORT, FD_LEASE, NFDS };
#define MAX_PROCS_FILES 16

void report(int fd, const char *fmt, ...) {
    char line[4000];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if (n > (int)sizeof line - 2)
        n = sizeof line - 2;
    for (int i = 0; i < n; i++)
        if (line[i] == '\n')
            line[i] = ' ';
    line[n++] = '\n';
    if (write(fd, line, n) < 0)
        return; /* the launcher is gone: nothing to tell */
}

/* Report what failed (printf-style), with errno's reason, and exit. */
static _Noreturn void fail(int fd, const char *stage, const char *fmt, ...) {
    int saved = errno;
    char what[1000];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    report(fd, "error %s %s: %s", stage, what, strerror(saved));
    _exit(127);
}

/* ---- isolation steps: one entry per namespace, then the job's view ----------------- */
static int private_mounts(void) {
    /* Without MS_PRIVATE, mounts propagate back to the host through shared peer groups. */
    return mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL);
}

static int network_inside(void) {
    int sock = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (sock < 0)
        return -1;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    strcpy(ifr.ifr_name, "lo");
    int rc = ioctl(sock, SIOCGIFFLAGS, &ifr);
    if (rc == 0) {
        ifr.ifr_flags |= IFF_UP;
        rc = ioctl(sock, SIOCSIFFLAGS, &ifr);
    }
    close(sock);
    return rc;
}

static const struct step {
    const char *name;
    int flag;
    int (*inside)(void); /* run as PID 1 before the job starts; NULL: nothing to do */
} STEPS[] = {
    {"pid namespace", CLONE_NEWPID, NULL},
    {"mount namespace (private mounts)", CLONE_NEWNS, private_mounts},
    {"network namespace (loopback up)", CLONE_NEWNET, network_inside},
    {"uts namespace", CLONE_NEWUTS, NULL},
    {"ipc namespace", CLONE_NEWIPC, NULL},
    /* After the mid joined the job's cgroup: that cgroup becomes the root the job sees. */
    {"cgroup namespace", CLONE_NEWCGROUP, NULL},
    /* The job's filesystem view (_sandbox.c), in the mount namespace above: what does not
     * depend on the request is made here, while the slot warms. */
    {"view: the host's root, read-only", 0, view_skeleton},
    {"view: entering it", 0, view_enter},
    {"view: /dev/pts of its own", 0, view_dev},
    {"view: /proc, masked", 0, view_proc},
    {"view: /sys, read-only", 0, view_sys},
    {"view: scratch, /tmp, /var/tmp and /dev/shm", 0, view_private},
    {"view: hidden paths", 0, view_hidden},
};
#define NSTEPS (sizeof STEPS / sizeof STEPS[0])

/* ---- the init ------------------------------------------------------------------------- */
static _Noreturn void report_failure(int rep, const struct failure *f) {
    const char *prog = f->what;
    if (strcmp(f->stage, "exec") != 0)
        report(rep, "error %s %s%s%s", f->stage, f->what, f->err ? ": " : "",
               f->err ? strerror(f->err) : "");
    else if (f->err == ENOENT)
        report(rep, "error notfound command not found: '%.1000s'", prog);
    else if (f->err == EACCES)
        report(rep, "error exec permission denied: '%.1000s' is not executable", prog);
    else if (f->err == ENOEXEC)
        report(rep, "error exec cannot execute '%.1000s': it is not a program the kernel "
                    "can run", prog);
    else
        report(rep, "error exec cannot execute '%.1000s': %s", prog, strerror(f->err));
    _exit(127);
}

static _Noreturn void run_init(const int *fds) {
    int rep = fds[FD_REPORT];
    sigset_t watched;
    watched_signals(&watched);
    sigprocmask(SIG_SETMASK, &watched, NULL);
    if (read_setup(fds[FD_ORDER], &SETUP) < 0)
        fail(rep, "setup", "reading the slot's set-up");
    for (size_t i = 0; i < NSTEPS; i++)
        if (STEPS[i].inside != NULL && STEPS[i].inside() < 0)
            fail(rep, "setup", "%s%s", STEPS[i].name, view_problem);
    struct standby standby;
    standby_make(&standby, fds, NFDS, SETUP.userns);
    report(rep, "ready");
    size_t len = 0;
    char *buf = read_order(fds[FD_ORDER], &len);
    close(fds[FD_ORDER]);
    if (buf == NULL)
        fail(rep, "setup", "reading the job's order");
    if (len == 0)
        _exit(0);
    char *raw = malloc(len); /* the standby parses the order itself; parsing cuts it up */
    if (raw == NULL)
        fail(rep, "setup", "keeping a copy of the job's order");
    memcpy(raw, buf, len);
    struct order order;
    if (parse_order(buf, len, &order) < 0) {
        report(rep, "error setup the job's order is malformed");
        _exit(127);
    }
    struct failure failure = {0};
    pid_t job = -1;
    if (view_order(&order, &failure) < 0 ||
        (job = start_job(&standby, raw, len, &order, fds, &failure)) < 0)
        report_failure(rep, &failure);
    free(raw);
    /* Our copies of the pipes would keep the launcher from seeing EOF when the job ends. */
    for (int i = FD_STDIN; i <= FD_STDERR; i++)
        close(fds[i]);
    report(rep, "started");
    view_release();
    supervise(job, &watched, rep);
}

/* ---- the mid child -------------------------------------------------------------------- */
static int by_number(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

static void close_all_but(const int *fds) {
    int keep[NFDS];
    memcpy(keep, fds, sizeof keep);
    qsort(keep, NFDS, sizeof keep[0], by_number);
    unsigned low = 0;
    for (int i = 0; i < NFDS; i++) {
        if ((unsigned)keep[i] > low)
            close_range(low, (unsigned)keep[i] - 1, 0);
        low = (unsigned)keep[i] + 1;
    }
    close_range(low, ~0U, 0);
}

static int filters_made; /* by the zygote, before any slot */

static _Noreturn void run_mid(const char **procs, size_t nprocs, int cloned, const int *fds) {
    int rep = fds[FD_REPORT];
    signal(SIGCHLD, SIG_DFL); /* the zygote ignores it; the init must not */
    close_all_but(fds);
    if (!filters_made)
        fail(rep, "setup", "building the jobs' seccomp filters with libseccomp");
    char pid[32];
    int len = snprintf(pid, sizeof pid, "%d", (int)getpid());
    for (size_t i = 0; i < nprocs && !cloned; i++) {
        int fd = open(procs[i], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, pid, (size_t)len) != len)
            fail(rep, "setup", "joining the job's cgroup (%.500s)", procs[i]);
        close(fd);
    }
    int flags = 0;
    for (size_t i = 0; i < NSTEPS; i++)
        flags |= STEPS[i].flag;
    if (unshare(flags) < 0)
        fail(rep, "setup", "unsharing the job's namespaces");
    pid_t init = fork();
    if (init < 0)
        fail(rep, "setup", "forking the job's init");
    if (init == 0)
        run_init(fds);
    report(rep, "pid %d %s", (int)init, cloned ? "cloned" : "joined");
    _exit(0);
}

/* A child born in the cgroup2 directory ``dir`` (CLONE_INTO_CGROUP); -1 if that cannot be
 * (no such directory, v1, a kernel before 5.7): the caller forks one the old way. As fork(),
 * it returns twice; SIGCHLD is its exit signal, which the zygote ignores so the kernel reaps. */
static pid_t clone_into(const char *dir) {
    if (dir[0] == '\0')
        return -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    struct clone_args args = {.flags = CLONE_INTO_CGROUP, .exit_signal = SIGCHLD,
                              .cgroup = (unsigned)fd};
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid != 0)
        close(fd);
    return pid;
}

/* ---- the zygote ----------------------------------------------------------------------- */
#define MAX_REQUEST 8192

static _Noreturn void run_zygote(int sock) {
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);
    signal(SIGCHLD, SIG_IGN); /* the kernel reaps the mids */
    int keep[NFDS] = {sock, sock, sock, sock, sock, sock};
    close_all_but(keep);
    filters_made = filters_prepare() == 0;
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (;;) {
        char data[MAX_REQUEST + 1];
        char control[CMSG_SPACE(NFDS * sizeof(int))];
        struct iovec iov = {data, MAX_REQUEST};
        struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control,
                             .msg_controllen = sizeof control};
        ssize_t n = recvmsg(sock, &msg, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            _exit(0); /* the launcher is gone */
        struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
        if (cmsg == NULL || cmsg->cmsg_type != SCM_RIGHTS ||
            cmsg->cmsg_len != CMSG_LEN(NFDS * sizeof(int)))
            continue; /* only the launcher holds the other end; it never sends this */
        int fds[NFDS];
        memcpy(fds, CMSG_DATA(cmsg), sizeof fds);
        data[n] = '\0';
        const char *dir = data, *procs[MAX_PROCS_FILES];
        size_t nprocs = 0;
        for (char *p = data + strlen(data) + 1; p < data + n && nprocs < MAX_PROCS_FILES;
             p += strlen(p) + 1)
            procs[nprocs++] = p;
        pid_t pid = clone_into(dir);
        int cloned = pid >= 0;
        if (!cloned)
            pid = fork();
        if (pid == 0)
            run_mid(procs, nprocs, cloned, fds);
        if (pid < 0)
            report(fds[FD_REPORT], "error setup forking the job's slot: %s", strerror(errno));
        for (int i = 0; i < NFDS; i++)
            close(fds[i]);
    }
}

int main(int argc, char **argv) {
    char *end = NULL;
    long sock = argc == 2 ? strtol(argv[1], &end, 10) : -1;
    if (sock < 0 || sock > INT_MAX || end == argv[1] || *end != '\0') {
        fprintf(stderr, "usage: %s SOCKET_FD\n(the jobmgr launcher runs this; see its source)\n",
                argv[0]);
        return 2;
    }
    run_zygote((int)sock);
}
