/* The job's identity and privileges, and its first process.
 *
 * Every job: no_new_privs, so no setuid program or file capability lifts it; a seccomp filter
 * with the semantics of Docker's default profile, made with libseccomp; no supplementary
 * group. A job as a user (MODE_USER) runs as its uid with an empty capability bounding set and
 * no ambient or inheritable capability. A root job (MODE_ROOT) runs as root of a user
 * namespace of its own, mapped to one unprivileged host uid: its capabilities reach only what
 * that namespace owns, its own mount and UTS namespaces (made with it, so it can mount in its
 * view and name its host), never the host's files, clock, kernel or cgroups. The init writes
 * its uid_map and gid_map from outside, as root of the parent namespace: a process cannot map
 * itself to a uid it does not hold.
 *
 * The filters are built once, for the zygote, and the inits inherit them: building one with
 * libseccomp takes about a millisecond. Loading one costs 0.2-0.4 ms here (the kernel compiles
 * each program it loads), so a job as a user gets it from its slot's standby, which loads it
 * while the slot warms (see standby_make).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sched.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "_sandbox.h"

#define SCRATCH "/scratch"

/* Refused with EPERM for every job: the kernel's own state (modules, kexec, reboot, swap,
 * clock, accounting, keyrings, quotas, the kernel log), raw hardware (iopl, ioperm), tracing
 * and programs run in the kernel (bpf, perf_event_open, fanotify), handles that bypass paths
 * (open_by_handle_at), other processes' memory policy, and userfaultfd. */
static const char *const DENIED[] = {
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "create_module", "query_module", "get_kernel_syms", "reboot", "swapon", "swapoff",
    "settimeofday", "clock_settime", "stime", "acct", "add_key", "request_key", "keyctl",
    "quotactl", "quotactl_fd", "syslog", "iopl", "ioperm", "bpf", "perf_event_open",
    "lookup_dcookie", "fanotify_init", "open_by_handle_at", "userfaultfd", "kcmp",
    "pidfd_getfd", "process_madvise", "get_mempolicy", "set_mempolicy", "mbind",
    "migrate_pages", "move_pages", "set_mempolicy_home_node", "vhangup", "uselib",
    "nfsservctl", "_sysctl", NULL};

/* Refused to a job as a user too: mounts and roots (a root job may change its own view). */
static const char *const DENIED_TO_USERS[] = {
    "mount", "umount", "umount2", "pivot_root", "chroot", "open_tree", "move_mount",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr", "sethostname",
    "setdomainname", "setns", NULL};

static const unsigned long NAMESPACES[] = {CLONE_NEWNS, CLONE_NEWUTS, CLONE_NEWIPC,
                                           CLONE_NEWPID, CLONE_NEWNET, CLONE_NEWCGROUP,
                                           CLONE_NEWTIME};

/* FILTERS[root][userns]: for jobs as a user or as root, making user namespaces or not. The
 * programs live in static memory the zygote writes once and every init shares. */
static struct sock_filter PROGRAMS[2][2][BPF_MAXINSNS];
static struct sock_fprog FILTERS[2][2];

static int deny(scmp_filter_ctx ctx, int err, const char *name, unsigned ncmp,
                const struct scmp_arg_cmp *cmp) {
    int nr = seccomp_syscall_resolve_name(name);
    if (nr == __NR_SCMP_ERROR)
        return 0; /* not a system call of this architecture */
    return seccomp_rule_add_array(ctx, SCMP_ACT_ERRNO(err), nr, ncmp, cmp);
}

/* Refuse clone and unshare when their flags hold `flag`. */
static int deny_flag(scmp_filter_ctx ctx, unsigned long flag) {
    struct scmp_arg_cmp cmp = SCMP_A0(SCMP_CMP_MASKED_EQ, flag, flag);
    int rc = deny(ctx, EPERM, "clone", 1, &cmp);
    return rc < 0 ? rc : deny(ctx, EPERM, "unshare", 1, &cmp);
}

static int build(scmp_filter_ctx ctx, int root, int userns) {
    int rc = 0;
    for (const char *const *name = DENIED; rc == 0 && *name != NULL; name++)
        rc = deny(ctx, EPERM, *name, 0, NULL);
    for (const char *const *name = DENIED_TO_USERS; rc == 0 && !root && *name != NULL; name++)
        rc = deny(ctx, EPERM, *name, 0, NULL);
    /* clone3 passes its flags in memory, out of a filter's sight: ENOSYS makes the C
     * library fall back to clone, whose flags are checked. */
    if (rc == 0)
        rc = deny(ctx, ENOSYS, "clone3", 0, NULL);
    /* AF_VSOCK reaches the hypervisor's host, whatever the network namespace. */
    struct scmp_arg_cmp vsock = SCMP_A0(SCMP_CMP_EQ, AF_VSOCK);
    if (rc == 0)
        rc = deny(ctx, EPERM, "socket", 1, &vsock);
    if (rc == 0 && !userns)
        rc = deny_flag(ctx, CLONE_NEWUSER);
    /* A user cannot make any other namespace without a user namespace of its own. */
    for (size_t i = 0; rc == 0 && !root && !userns && i < sizeof NAMESPACES / sizeof NAMESPACES[0];
         i++)
        rc = deny_flag(ctx, NAMESPACES[i]);
    return rc;
}

/* In a child process, so that libseccomp's working memory never enters the zygote's heap
 * (each init would otherwise copy the pages its own few allocations land in): build the
 * four programs and write each into its memfd. */
static _Noreturn void build_all(const int *memfds) {
    for (int i = 0; i < 4; i++) {
        scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
        if (ctx == NULL)
            _exit(1);
        /* no_new_privs is set by the job itself, just before its filter is loaded */
        seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
        if (build(ctx, i / 2, i % 2) != 0 || seccomp_export_bpf(ctx, memfds[i]) != 0)
            _exit(1);
        seccomp_release(ctx);
    }
    _exit(0);
}

int filters_prepare(void) {
    int memfds[4];
    for (int i = 0; i < 4; i++)
        if ((memfds[i] = memfd_create("jobmgr-seccomp", MFD_CLOEXEC)) < 0)
            return -1;
    /* The zygote ignores SIGCHLD (the kernel reaps its children): this one is waited for. */
    void (*was)(int) = signal(SIGCHLD, SIG_DFL);
    pid_t pid = fork();
    if (pid == 0)
        build_all(memfds);
    int status = 0, rc = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
        WEXITSTATUS(status) != 0)
        rc = -1;
    signal(SIGCHLD, was);
    for (int i = 0; i < 4; i++) {
        struct sock_filter *code = PROGRAMS[i / 2][i % 2];
        ssize_t size = rc == 0 ? pread(memfds[i], code, sizeof PROGRAMS[0][0], 0) : -1;
        if (size <= 0 || size % (ssize_t)sizeof *code != 0)
            rc = -1;
        else
            FILTERS[i / 2][i % 2] = (struct sock_fprog){
                .len = (unsigned short)(size / (ssize_t)sizeof *code), .filter = code};
        close(memfds[i]);
    }
    if (rc < 0)
        errno = EINVAL;
    return rc;
}

/* ---- the job's first process -------------------------------------------------------------- */
/* A job as a user is started with vfork, as posix_spawn does: the init is suspended until
 * the exec, and the child borrows its memory instead of copying it (a fork costs about 0.4 ms
 * more on the start's path here). So the child makes system calls only, through syscall(2)
 * where the C library would keep state of its own, and writes nothing of the init's but its
 * own stack. A root job is forked: the init maps its user namespace while it waits. */
static int drop_capabilities(void) {
    for (int cap = 0;; cap++)
        if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0)
            return errno == EINVAL ? 0 : -1; /* past the last capability the kernel has */
}

static int clear_capabilities(void) {
    struct __user_cap_header_struct head = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct none[2];
    memset(none, 0, sizeof none);
    if (syscall(SYS_capset, &head, none) < 0)
        return -1;
    return prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0);
}

static int become(const struct order *o, int sync, int go, struct failure *f) {
    if (syscall(SYS_setgroups, 0, NULL) < 0)
        return failed(f, "user", "cannot drop the supplementary groups");
    if (o->mode == MODE_ROOT) {
        char byte = 0;
        if (unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWUTS) < 0)
            return failed(f, "user", "cannot make the job's user namespace");
        if (write(sync, "u", 1) != 1 || read(go, &byte, 1) != 1 || byte != 'm')
            return failed(f, "user", "the job's user namespace was not mapped");
        if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
            return failed(f, "user", "cannot become root of the job's user namespace");
        return 0;
    }
    if (syscall(SYS_setresgid, o->gid, o->gid, o->gid) < 0 || drop_capabilities() < 0 ||
        syscall(SYS_setresuid, o->uid, o->uid, o->uid) < 0 || clear_capabilities() < 0)
        return failed(f, "user", "cannot switch to uid %u", (unsigned)o->uid);
    return 0;
}

/* fd 0, 1 and 2 from `stdio`, whatever numbers those have. */
static int standard_streams(const int *stdio) {
    int moved[3];
    for (int i = 0; i < 3; i++)
        if ((moved[i] = fcntl(stdio[i], F_DUPFD_CLOEXEC, 3)) < 0)
            return -1;
    for (int i = 0; i < 3; i++)
        if (dup2(moved[i], i) < 0)
            return -1;
    return 0;
}

/* The command, looked up in the job's PATH as execvp would, without its fallback to /bin/sh
 * for a file the kernel cannot run (ENOEXEC is reported instead). */
static void exec_command(const struct order *o) {
    const char *name = o->argv[0];
    if (strchr(name, '/') != NULL) {
        execve(name, o->argv, o->envp);
        return;
    }
    const char *path = "/usr/local/bin:/usr/bin:/bin";
    for (char **e = o->envp; *e != NULL; e++)
        if (strncmp(*e, "PATH=", 5) == 0)
            path = *e + 5;
    size_t length = strlen(name);
    int denied = 0;
    for (const char *dir = path;; dir++) {
        const char *end = strchrnul(dir, ':');
        char file[1024];
        size_t used = (size_t)(end - dir);
        if (used == 0)
            file[used++] = '.'; /* an empty entry is the working directory */
        else if (used < sizeof file)
            memcpy(file, dir, used);
        if (used + 1 + length < sizeof file) {
            file[used] = '/';
            memcpy(file + used + 1, name, length + 1);
            execve(file, o->argv, o->envp);
            if (errno == EACCES)
                denied = 1;
            else if (errno != ENOENT && errno != ENOTDIR && errno != ENAMETOOLONG)
                return;
        }
        if (*end == '\0')
            break;
        dir = end;
    }
    errno = denied ? EACCES : ENOENT;
}

static _Noreturn void run_job(const struct order *o, const int *stdio, int status, int sync,
                              int go, int filtered) {
    struct failure f = {0};
    sigset_t none;
    sigemptyset(&none);
    /* Every handler of the init is at its default already: only the mask is to undo. */
    sigprocmask(SIG_SETMASK, &none, NULL);
    umask(022); /* the init builds the view with 0; the job gets the usual mask */
    if (setsid() < 0 || standard_streams(stdio) < 0 ||
        close_range(3, ~0U, CLOSE_RANGE_CLOEXEC) < 0) {
        failed(&f, "setup", "preparing the job's process");
    } else if (become(o, sync, go, &f) == 0) {
        const char *cwd = o->cwd[0] != '\0' ? o->cwd : SCRATCH;
        const struct sock_fprog *filter = &FILTERS[o->mode == MODE_ROOT][o->user_namespaces];
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0) {
            failed(&f, "setup", "setting no_new_privs");
        } else if (chdir(cwd) < 0) {
            failed(&f, "cwd", "cannot change to working directory '%.500s'", cwd);
        } else if (!filtered && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, filter, 0, 0) < 0) {
            failed(&f, "setup", "loading the job's seccomp filter");
        } else {
            exec_command(o);
            failed(&f, "exec", "%.600s", o->argv[0]);
        }
    }
    if (write(status, &f, sizeof f) < 0)
        _exit(127); /* the init is gone: nobody to tell */
    _exit(127);
}

/* Wait for the job's first process to exec (its status pipe closes) or to say why it could
 * not (a struct failure on it); returns its pid, or -1 with *f filled in. */
static pid_t exec_awaited(pid_t pid, int status, struct failure *f) {
    ssize_t n;
    do
        n = read(status, f, sizeof *f);
    while (n < 0 && errno == EINTR);
    close(status);
    if (n == 0)
        return pid; /* the pipe closed on exec: the command runs */
    if (n != (ssize_t)sizeof *f)
        failed(f, "setup", "the job's process died before its command ran");
    waitpid(pid, NULL, 0);
    errno = f->err;
    return -1;
}

/* Map root of the child's new user namespace to the order's host uid and gid. */
static int map_root(pid_t child, const struct order *o) {
    static const char *const MAPS[] = {"uid_map", "gid_map"};
    for (int i = 0; i < 2; i++) {
        char path[64], line[64];
        snprintf(path, sizeof path, "/proc/%d/%s", (int)child, MAPS[i]);
        int len = snprintf(line, sizeof line, "0 %u 1\n", i == 0 ? (unsigned)o->uid
                                                                  : (unsigned)o->gid);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        int rc = fd < 0 ? -1 : (int)write(fd, line, (size_t)len);
        if (fd >= 0)
            close(fd);
        if (rc != len)
            return -1;
    }
    return 0;
}

/* The root job's child: made, then mapped while it waits. */
static pid_t fork_root(const struct order *o, const int *stdio, int status) {
    int sync[2], go[2];
    if (pipe2(sync, O_CLOEXEC) < 0 || pipe2(go, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0)
        run_job(o, stdio, status, sync[1], go[0], 0);
    close(sync[1]);
    close(go[0]);
    char byte;
    /* No byte: the child failed before its namespace was made, and says why. */
    if (pid > 0 && read(sync[0], &byte, 1) == 1 && map_root(pid, o) == 0 &&
        write(go[1], "m", 1) != 1)
        errno = EPIPE;
    close(sync[0]);
    close(go[1]);
    return pid;
}

pid_t launch_job(const struct order *o, const int *stdio, struct failure *f) {
    int status[2];
    if (pipe2(status, O_CLOEXEC) < 0)
        return failed(f, "setup", "making the job's pipes");
    pid_t pid;
    if (o->mode == MODE_ROOT) {
        pid = fork_root(o, stdio, status[1]);
    } else {
        pid = vfork();
        if (pid == 0)
            run_job(o, stdio, status[1], -1, -1, 0);
    }
    if (pid < 0)
        return failed(f, "setup", "starting the job's process");
    close(status[1]);
    return exec_awaited(pid, status[0], f);
}

/* ---- the standby ---------------------------------------------------------------------------- */
/* A job as a user takes its filter from here: a child forked while the slot warms loads it
 * then, as root (CAP_SYS_ADMIN, so before no_new_privs), and waits for the order; the start
 * forwards it and the child goes on as run_job does. The kernel compiles every filter it
 * loads, 0.2-0.4 ms for these here, which no start then pays, nor the fork. Any other job (as
 * root, or on a root of its own), or a standby that is gone, is started by launch_job and the
 * standby killed. */
void standby_make(struct standby *s, const int *fds, size_t nfds, int userns) {
    int order[2], status[2];
    *s = (struct standby){.pid = -1, .order = -1, .status = -1, .userns = userns};
    if (pipe2(order, O_CLOEXEC) < 0)
        return;
    if (pipe2(status, O_CLOEXEC) < 0) {
        close(order[0]);
        close(order[1]);
        return;
    }
    s->pid = fork();
    if (s->pid == 0) {
        for (size_t i = 3; i < nfds; i++) /* the init's own: its order, its reports, the lease */
            close(fds[i]);
        close(order[1]);
        close(status[0]);
        if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &FILTERS[MODE_USER][userns], 0, 0) < 0)
            _exit(127); /* the start finds the order pipe closed and uses launch_job */
        size_t len = 0;
        char *buf = read_order(order[0], &len);
        struct order o;
        if (buf == NULL || len == 0 || parse_order(buf, len, &o) < 0) {
            struct failure f = {0};
            failed(&f, "setup", "the job's order did not reach its process");
            if (write(status[1], &f, sizeof f) < 0)
                _exit(127);
            _exit(127);
        }
        run_job(&o, fds, status[1], -1, -1, 1);
    }
    close(order[0]);
    close(status[1]);
    s->order = order[1];
    s->status = status[0];
    if (s->pid < 0)
        standby_drop(s);
}

void standby_drop(struct standby *s) {
    if (s->pid > 0) {
        kill(s->pid, SIGKILL);
        waitpid(s->pid, NULL, 0);
    }
    if (s->order >= 0)
        close(s->order);
    if (s->status >= 0)
        close(s->status);
    s->pid = s->order = s->status = -1;
}

pid_t start_job(struct standby *s, const char *raw, size_t len, const struct order *o,
                const int *stdio, struct failure *f) {
    /* A root of its own moves the init (pivot_root): the standby stays where it was. */
    if (s->pid > 0 && o->mode == MODE_USER && o->user_namespaces == s->userns &&
        o->rootfs[0] == '\0') {
        size_t sent = 0;
        while (sent < len) {
            ssize_t n = write(s->order, raw + sent, len - sent);
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                break;
            sent += (size_t)n;
        }
        close(s->order);
        s->order = -1;
        if (sent == len) { /* it has the order: it execs the command, or says why not */
            pid_t pid = s->pid;
            int status = s->status;
            s->pid = s->status = -1; /* the job's now, and exec_awaited closes the pipe */
            return exec_awaited(pid, status, f);
        }
    }
    standby_drop(s);
    return launch_job(o, stdio, f);
}
