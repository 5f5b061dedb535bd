/* The job's filesystem view, built by its init in the slot's own mount namespace.
 *
 * The view: a small tmpfs root (the skeleton) holding a read-only, nosuid, nodev bind of each
 * top-level entry of the host's root (recursively: every host mount below it comes along,
 * read-only too), except /dev, /proc, /sys, /tmp and /scratch, which are the job's own, and
 * the hidden top-level paths (/root, /home, /run by default), which stay empty directories.
 *   /dev      a tmpfs with null zero full random urandom tty, a private devpts with ptmx,
 *             shm, and the fd, stdin, stdout, stderr links; read-only
 *   /proc     the job's PID namespace, with runc's masked and read-only paths
 *   /sys      the job's network namespace's sysfs, read-only, firmware and powercap masked
 *   /scratch  (the job's working directory), /tmp, /var/tmp and /dev/shm: four directories of
 *             one tmpfs of the job's own, whose size is its disk limit; its pages are charged
 *             to the memory cgroup of whoever writes them, the job
 *   hidden paths deeper down (the state directory, the server's certificates) are covered by
 *             an empty read-only directory or file
 * Everything but the job's disk size, its opt-in binds, the masks over host sockets and a root
 * filesystem of its own is made while the slot warms; the order adds those (view_order).
 * The whole view goes with the namespace when the job's last process exits: nothing of it is
 * left on the host.
 *
 * Sources are taken from a detached, read-only clone of the host's root (`host`), cloned
 * again per bind; where binds are allowed it is kept until the order is applied, so a bind's
 * source may lie under a path the view hides. Paths from the launcher are resolved there with
 * RESOLVE_NO_SYMLINKS: a symlink swapped in on the host cannot redirect a bind.
 */
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

struct setup SETUP;
char view_problem[600];

static int host = -1;  /* the host's root, read-only, detached */
static int jobfs = -1; /* the job's private tmpfs; its "mask" and "mask-file", empty, read-only
                        * once bound, cover what is hidden */

#define STAGING "/tmp" /* where the skeleton is built, in the init's copy of the host's view */
#define SOURCES "/.jobmgr-sources" /* in the view's root: where older kernels need the sources */
static int attached; /* `host` and `jobfs` are mounted under SOURCES (see attach_sources) */
static int entered;  /* the skeleton is the root */
#define SCRATCH "/scratch"
#define TMPFS_FLAGS (MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV)

int problem(const char *what, const char *path) {
    int saved = errno;
    snprintf(view_problem, sizeof view_problem, " (%s %.500s)", what, path);
    errno = saved;
    return -1;
}

/* Make the view's root writable (0) or read-only again (1). */
static int root_readonly(int readonly) {
    return setattr_(AT_FDCWD, "/", 0, readonly ? MOUNT_ATTR_RDONLY : 0,
                    readonly ? 0 : MOUNT_ATTR_RDONLY);
}

/* ---- where binds come from: `host` and `jobfs`, detached, or attached on older kernels ---
 * Before Linux 6.15, open_tree(OPEN_TREE_CLONE) and mount(MS_BIND) copy only a mount of the
 * caller's own mount namespace (check_mnt in the kernel's __do_loopback): a detached tree, as
 * open_tree and fsmount make, cannot be a source there, and every clone from it fails with
 * EINVAL (measured: Debian's 6.1 refuses, 6.18 allows). A 9p, initramfs or overlay root
 * changes nothing; the kernel's version does. On such a kernel the first refused clone
 * attaches both trees under SOURCES in the skeleton, where they are the namespace's own, and
 * detach_sources lets them go before the job starts: the job never sees them. Newer kernels
 * keep the detached path, which costs no mount, unmount or directory in the view. */
static int attach_sources(void) {
    static const char *const POINTS[] = {STAGING SOURCES, STAGING SOURCES "/host",
                                         STAGING SOURCES "/jobfs"};
    for (size_t i = 0; i < sizeof POINTS / sizeof POINTS[0]; i++)
        if (mkdir(POINTS[i], 0700) < 0)
            return problem("making", POINTS[i]);
    if (move_mount_(host, "", AT_FDCWD, POINTS[1], MOVE_MOUNT_F_EMPTY_PATH) < 0 ||
        move_mount_(jobfs, "", AT_FDCWD, POINTS[2], MOVE_MOUNT_F_EMPTY_PATH) < 0)
        return problem("attaching the sources at", STAGING SOURCES);
    attached = 1;
    return 0;
}

/* Take the attached sources along into a new root at `stage` (a root of the job's own). */
static int carry_sources(const char *stage) {
    char path[128];
    const char *const names[] = {"", "/host", "/jobfs"};
    for (size_t i = 0; attached && i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s%s%s", stage, SOURCES, names[i]);
        if (mkdir(path, 0700) < 0)
            return problem("making", path);
        if (i > 0 && move_mount_(i == 1 ? host : jobfs, "", AT_FDCWD, path,
                                 MOVE_MOUNT_F_EMPTY_PATH) < 0)
            return problem("moving the sources to", path);
    }
    return 0;
}

/* Unmount the attached sources (`which`: "/host", or NULL for both, and their directories):
 * the fds stay usable, and nothing of them is left in the view. */
static int detach_sources(const char *which) {
    if (!attached)
        return 0;
    const char *const names[] = {"/host", "/jobfs"};
    char path[64];
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if (which != NULL && strcmp(which, names[i]) != 0)
            continue;
        snprintf(path, sizeof path, "%s%s", SOURCES, names[i]);
        if (umount2(path, MNT_DETACH) < 0 && errno != EINVAL) /* EINVAL: already gone */
            return problem("unmounting", path);
    }
    if (which != NULL)
        return 0;
    int rc = root_readonly(0);
    for (size_t i = 0; rc == 0 && i < sizeof names / sizeof names[0]; i++) {
        snprintf(path, sizeof path, "%s%s", SOURCES, names[i]);
        rc = rmdir(path);
    }
    if (rc == 0)
        rc = rmdir(SOURCES);
    if (root_readonly(1) < 0 || rc < 0)
        return problem("removing", SOURCES);
    attached = 0;
    return 0;
}

/* Mount a clone of `name` under `from` (recursively) at `target`, with attributes set. */
int bind_clone(int from, const char *name, int recursive, unsigned long long set,
                      unsigned long long clear, const char *target) {
    unsigned flags = OPEN_TREE_CLONE | (recursive ? AT_RECURSIVE : 0) |
                     (name[0] == '\0' ? AT_EMPTY_PATH : 0);
    int tree = open_tree_(from, name, flags);
    if (tree < 0 && errno == EINVAL && !attached && !entered) {
        if (attach_sources() < 0)
            return -1;
        tree = open_tree_(from, name, flags);
    }
    if (tree < 0)
        return problem("cloning", name);
    int rc = 0;
    if (set || clear)
        rc = setattr_(tree, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), set, clear);
    if (rc == 0)
        rc = move_mount_(tree, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH);
    int saved = errno;
    close(tree);
    errno = saved;
    return rc < 0 ? problem("mounting on", target) : 0;
}

/* Cover `path` (a directory or a file) with an empty read-only one; a path that is not there
 * is not there to hide. */
int cover(const char *path, int sockets_only) {
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT || errno == ENOTDIR ? 0 : problem("looking at", path);
    if (sockets_only && !S_ISSOCK(st.st_mode))
        return 0;
    int rc = bind_clone(jobfs, S_ISDIR(st.st_mode) ? "mask" : "mask-file", 0,
                        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOEXEC, 0, path);
    /* Gone between the lstat and the mount (a host socket removed as its service restarts):
     * as when it was not there at all. */
    return rc < 0 && errno == ENOENT ? 0 : rc;
}

/* Make the skeleton at `target` the root: the old one is let go entirely. */
static int enter(const char *target) {
    if (chdir(target) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
        umount2(".", MNT_DETACH) < 0 || chdir("/") < 0)
        return problem("entering", target);
    entered = 1;
    return root_readonly(1);
}

/* ---- the warm steps ------------------------------------------------------------------------ */
/* One inode per 4 KiB of disk, as a filesystem full of small files would use. */
static unsigned long long inodes_for(unsigned long long disk) {
    return disk == 0 ? 0 : disk / 4096 < 4096 ? 4096 : disk / 4096;
}

/* The job's tmpfs comes first: the masks are made of it. */
static int make_jobfs(void) {
    jobfs = new_tmpfs("0755", SETUP.disk, inodes_for(SETUP.disk), TMPFS_FLAGS);
    if (jobfs < 0 || mkdirat(jobfs, "mask", 0555) < 0 ||
        mknodat(jobfs, "mask-file", S_IFREG | 0444, 0) < 0)
        return problem("making", "the job's tmpfs");
    return 0;
}

int view_skeleton(void) {
    umask(0);
    host = open_tree_(AT_FDCWD, "/", OPEN_TREE_CLONE | AT_RECURSIVE);
    if (host < 0 || setattr_(host, "", AT_EMPTY_PATH | AT_RECURSIVE,
                             MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0) < 0)
        return problem("cloning", "/");
    if (make_jobfs() < 0)
        return -1;
    /* Not nodev: /dev's nodes are in it. Nobody adds one: it is read-only once entered. */
    if (mount("jobmgr", STAGING, "tmpfs", MS_NOSUID, "mode=0755,size=1m") < 0)
        return problem("mounting", STAGING);
    return skeleton(host, STAGING, 1) < 0 ? -1 : make_dev(STAGING "/dev");
}

int view_enter(void) {
    return enter(STAGING);
}

static const struct private_dir {
    const char *name, *target;
    mode_t mode;
} PRIVATE[] = {{"scratch", SCRATCH, 0700},
               {"tmp", "/tmp", 01777},
               {"vartmp", "/var/tmp", 01777},
               {"shm", "/dev/shm", 01777}};

int view_private(void) {
    for (size_t i = 0; i < sizeof PRIVATE / sizeof PRIVATE[0]; i++) {
        const struct private_dir *d = &PRIVATE[i];
        if (mkdirat(jobfs, d->name, d->mode) < 0)
            return problem("making", d->name);
        if (i == 0 && fchownat(jobfs, d->name, SETUP.uid, SETUP.gid, 0) < 0)
            return problem("handing over", d->target);
        if (access(d->target, F_OK) == 0 && bind_clone(jobfs, d->name, 0, 0, 0, d->target) < 0)
            return -1;
    }
    return 0;
}

int view_hidden(void) {
    for (char **p = SETUP.hidden; *p != NULL; p++)
        if (strchr(*p + 1, '/') != NULL && cover(*p, 0) < 0) /* top-level ones stay empty */
            return -1;
    /* No order will bind a host path: the host's clone goes now, while the slot warms.
     * Dropping it waits for an RCU grace period (about 1 ms here, little CPU). */
    if (!SETUP.binds) {
        if (detach_sources("/host") < 0)
            return -1;
        close(host);
        host = -1;
    }
    return 0;
}

/* ---- the order ----------------------------------------------------------------------------- */
static int resize(unsigned long long disk) {
    char size[32], inodes[32];
    snprintf(size, sizeof size, "%llu", disk);
    snprintf(inodes, sizeof inodes, "%llu", inodes_for(disk));
    int fs = (int)syscall(SYS_fspick, jobfs, "", FSPICK_EMPTY_PATH | FSPICK_CLOEXEC);
    int rc = fs < 0 ? -1 : fsconfig_(fs, FSCONFIG_SET_STRING, "size", size);
    if (rc == 0)
        rc = fsconfig_(fs, FSCONFIG_SET_STRING, "nr_inodes", inodes);
    if (rc == 0)
        rc = fsconfig_(fs, FSCONFIG_CMD_RECONFIGURE, NULL, NULL);
    int saved = errno;
    if (fs >= 0)
        close(fs);
    errno = saved;
    return rc;
}

/* A root of the job's own: a skeleton of the tree's entries, the private mounts moved over. */
#define STAGED_DEV "/.rootfs/dev"

static int enter_rootfs(const char *rootfs, struct failure *f) {
    const char *stage = "/.rootfs";
    int tree = resolve(host, rootfs + 1, O_PATH | O_DIRECTORY);
    if (tree < 0)
        return failed(f, "mount", "the root filesystem '%.300s' cannot be opened", rootfs);
    if (root_readonly(0) < 0 || mkdir(stage, 0755) < 0 ||
        mount("jobmgr", stage, "tmpfs", MS_NOSUID, "mode=0755,size=1m") < 0 ||
        skeleton(tree, stage, 0) < 0 || make_dev(STAGED_DEV) < 0 || carry_sources(stage) < 0)
        return failed(f, "mount", "building the job's root from '%.300s'%s", rootfs,
                      view_problem);
    close(tree);
    static const char *const MOVED[] = {"/dev/pts", "/dev/shm", "/proc",   "/sys",
                                        "/tmp",     SCRATCH,    "/var/tmp"};
    for (size_t i = 0; i < sizeof MOVED / sizeof MOVED[0]; i++) {
        char target[64];
        snprintf(target, sizeof target, "%s%s", stage, MOVED[i]);
        if (access(target, F_OK) == 0 && move_mount_(AT_FDCWD, MOVED[i], AT_FDCWD, target, 0) < 0)
            return failed(f, "setup", "moving %s into the job's root", MOVED[i]);
    }
    return enter(stage) < 0 ? failed(f, "setup", "entering the job's root%s", view_problem) : 0;
}

/* Where a bind goes: an existing path, or a new directory (or file) at the top of the view. */
static int bind_target(const struct bind *b, int is_dir, struct failure *f) {
    struct stat st;
    if (lstat(b->target, &st) == 0)
        return 0;
    const char *slash = strrchr(b->target, '/');
    if (errno != ENOENT || slash != b->target)
        return failed(f, "mount", "the mount target '%.300s' is not in the job's view",
                      b->target);
    int rc = root_readonly(0);
    if (rc == 0)
        rc = is_dir ? mkdir(b->target, 0755) : mknod(b->target, S_IFREG | 0644, 0);
    if (root_readonly(1) < 0 || rc < 0)
        return failed(f, "setup", "making the mount target '%.300s'", b->target);
    return 0;
}

static int bind_host(const struct bind *b, struct failure *f) {
    int source = resolve(host, b->source + 1, O_PATH);
    struct stat st;
    if (source < 0 || fstat(source, &st) < 0)
        return failed(f, "mount", "the mount source '%.300s' cannot be opened", b->source);
    int rc = bind_target(b, S_ISDIR(st.st_mode), f);
    if (rc == 0) {
        unsigned long long set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        set |= b->writable ? 0 : MOUNT_ATTR_RDONLY;
        rc = bind_clone(source, "", S_ISDIR(st.st_mode), set,
                        b->writable ? MOUNT_ATTR_RDONLY : 0, b->target);
        if (rc < 0)
            failed(f, "mount", "mounting '%.300s' on '%.300s'", b->source, b->target);
    }
    close(source);
    return rc;
}

int view_order(const struct order *o, struct failure *f) {
    if ((o->nbinds > 0 || o->rootfs[0] != '\0') && host < 0) {
        errno = 0;
        return failed(f, "mount", "this server lets no job bind a host path or use a root of its own");
    }
    if (o->disk != SETUP.disk && resize(o->disk) < 0)
        return failed(f, "setup", "setting the job's disk limit to %llu bytes", o->disk);
    if ((o->uid != SETUP.uid || o->gid != SETUP.gid) && o->mode == MODE_USER &&
        fchownat(jobfs, "scratch", o->uid, o->gid, 0) < 0)
        return failed(f, "setup", "handing the scratch directory to uid %u", (unsigned)o->uid);
    if (o->rootfs[0] != '\0' && enter_rootfs(o->rootfs, f) < 0)
        return -1;
    for (size_t i = 0; i < o->nbinds; i++)
        if (bind_host(&o->binds[i], f) < 0)
            return -1;
    for (char **p = o->masks; *p != NULL; p++)
        if (cover(*p, 1) < 0)
            return failed(f, "setup", "covering a host socket%s", view_problem);
    if (detach_sources(NULL) < 0)
        return failed(f, "setup", "letting go of the view's sources%s", view_problem);
    return 0;
}

void view_release(void) {
    /* Closing the host's clone lets go of its copies of every host mount: the job never
     * had these fds (they are close-on-exec and closed in its first process). */
    int *fds[] = {&host, &jobfs};
    for (size_t i = 0; i < sizeof fds / sizeof fds[0]; i++) {
        if (*fds[i] >= 0)
            close(*fds[i]);
        *fds[i] = -1;
    }
}
