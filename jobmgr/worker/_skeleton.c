/* The parts of the job's view made from nothing but the host's root and the kernel: the
 * skeleton (the host's top-level entries bound read-only under a small tmpfs), /dev's nodes and
 * links, the job's own devpts, and /proc and /sys with their masks. See _sandbox.c for the
 * whole view and the order in which its steps run. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "_sandbox.h"
#include "_view.h"

static int is_hidden_top(const char *name) {
    for (char **p = SETUP.hidden; *p != NULL; p++)
        if ((*p)[0] == '/' && strcmp(*p + 1, name) == 0)
            return 1;
    return 0;
}

/* ---- the skeleton: `source`'s top-level entries, bound read-only under `target` ---------- */
static const char *const OWN[] = {"dev", "proc", "sys", "tmp", "scratch", NULL};

static int is_own(const char *name) {
    for (const char *const *p = OWN; *p != NULL; p++)
        if (strcmp(*p, name) == 0)
            return 1;
    return 0;
}

static int skeleton_entry(int source, int dir, const char *name, unsigned char type,
                          const char *target, int hide) {
    /* Buffers sized for top-level names: the init's stack is a page copy in every slot. */
    struct stat st;
    char path[512], link[1024];
    if (type == DT_UNKNOWN) {
        if (fstatat(source, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            return problem("looking at", name);
        type = S_ISLNK(st.st_mode) ? DT_LNK : S_ISDIR(st.st_mode) ? DT_DIR : DT_REG;
    }
    snprintf(path, sizeof path, "%s/%s", target, name);
    if (type == DT_LNK) {
        ssize_t n = readlinkat(source, name, link, sizeof link - 1);
        if (n < 0 || n == sizeof link - 1)
            return problem("reading the link", name);
        link[n] = '\0';
        return symlinkat(link, dir, name) < 0 ? problem("linking", path) : 0;
    }
    if (type == DT_DIR) {
        if (mkdirat(dir, name, 0755) < 0)
            return problem("making", path);
    } else if (mknodat(dir, name, S_IFREG | 0644, 0) < 0) {
        return problem("making", path);
    }
    if (hide || is_own(name))
        return 0; /* an empty directory (or file) where the host has one */
    return bind_clone(source, name, type == DT_DIR, 0, 0, path);
}

/* The entries of a directory, read with getdents64 into a buffer on the stack: opendir's
 * 32 KiB heap buffer would be a private page copy in every init. */
struct linux_dirent64 {
    ino64_t d_ino;
    off64_t d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

int skeleton(int source, const char *target, int hide) {
    int dir = open(target, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int list = openat(source, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0 || list < 0)
        return problem("listing", target);
    int rc = 0;
    char buf[2048];
    long n;
    while (rc == 0 && (n = syscall(SYS_getdents64, list, buf, sizeof buf)) > 0)
        for (long at = 0; rc == 0 && at < n;) {
            struct linux_dirent64 *e = (struct linux_dirent64 *)(buf + at);
            at += e->d_reclen;
            if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0)
                rc = skeleton_entry(source, dir, e->d_name, e->d_type, target,
                                    hide && is_hidden_top(e->d_name));
        }
    if (rc == 0 && n < 0)
        rc = problem("listing", target);
    for (const char *const *own = OWN; rc == 0 && *own != NULL; own++)
        if (mkdirat(dir, *own, 0755) < 0 && errno != EEXIST)
            rc = problem("making", *own);
    int saved = errno;
    close(list);
    close(dir);
    errno = saved;
    return rc;
}

static const struct node {
    const char *name;
    unsigned major, minor;
} NODES[] = {{"null", 1, 3}, {"zero", 1, 5},    {"full", 1, 7},
             {"random", 1, 8}, {"urandom", 1, 9}, {"tty", 5, 0}};

static const char *const DEV_LINKS[][2] = {
    {"ptmx", "pts/ptmx"},           {"fd", "/proc/self/fd"},
    {"stdin", "/proc/self/fd/0"},   {"stdout", "/proc/self/fd/1"},
    {"stderr", "/proc/self/fd/2"},
};

/* /dev is a directory of the skeleton, read-only with it: the nodes of NODES (the ones the
 * devices cgroup allows), the links, and mount points for pts and shm. */
int make_dev(const char *dev) {
    char path[64];
    for (size_t i = 0; i < sizeof NODES / sizeof NODES[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dev, NODES[i].name);
        if (mknod(path, S_IFCHR | 0666, makedev(NODES[i].major, NODES[i].minor)) < 0)
            return problem("making", path);
    }
    for (size_t i = 0; i < sizeof DEV_LINKS / sizeof DEV_LINKS[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dev, DEV_LINKS[i][0]);
        if (symlink(DEV_LINKS[i][1], path) < 0)
            return problem("linking", path);
    }
    snprintf(path, sizeof path, "%s/pts", dev);
    if (mkdir(path, 0755) < 0)
        return problem("making", path);
    snprintf(path, sizeof path, "%s/shm", dev);
    return mkdir(path, 01777) < 0 ? problem("making", path) : 0;
}

int view_dev(void) {
    if (mount("devpts", "/dev/pts", "devpts", MS_NOSUID | MS_NOEXEC,
              "newinstance,ptmxmode=0666,mode=0620") < 0)
        return problem("mounting", "/dev/pts");
    return 0;
}

/* runc's lists: what a container should not read, and what it should not write. */
static const char *const PROC_MASKED[] = {
    "/proc/acpi",         "/proc/asound",     "/proc/kcore",       "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi",         NULL};
static const char *const PROC_READONLY[] = {"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
                                            "/proc/sysrq-trigger", NULL};
static const char *const SYS_MASKED[] = {"/sys/firmware", "/sys/devices/virtual/powercap", NULL};

int view_proc(void) {
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0)
        return problem("mounting", "/proc");
    for (const char *const *p = PROC_MASKED; *p != NULL; p++)
        if (cover(*p, 0) < 0)
            return -1;
    for (const char *const *p = PROC_READONLY; *p != NULL; p++)
        if (access(*p, F_OK) == 0 && bind_clone(AT_FDCWD, *p, 0, MOUNT_ATTR_RDONLY, 0, *p) < 0)
            return -1;
    return 0;
}

int view_sys(void) {
    /* A sysfs of the job's own network namespace: /sys/class/net shows only lo, and the
     * host's cgroup mounts under /sys/fs/cgroup are not there at all. */
    if (mount("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY, NULL) < 0)
        return problem("mounting", "/sys");
    for (const char *const *p = SYS_MASKED; *p != NULL; p++)
        if (cover(*p, 0) < 0)
            return -1;
    return 0;
}
