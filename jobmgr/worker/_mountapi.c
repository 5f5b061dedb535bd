/* The new mount API by number (older C libraries lack the wrappers), and a detached tmpfs. */
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

#include "_mountapi.h"

int open_tree_(int dirfd, const char *path, unsigned flags) {
    return (int)syscall(SYS_open_tree, dirfd, path, flags | OPEN_TREE_CLOEXEC);
}
int move_mount_(int from, const char *fpath, int to, const char *tpath, unsigned flags) {
    return (int)syscall(SYS_move_mount, from, fpath, to, tpath, flags);
}
int setattr_(int dirfd, const char *path, unsigned flags, unsigned long long set,
                    unsigned long long clear) {
    struct mount_attr attr = {.attr_set = set, .attr_clr = clear, .propagation = 0};
    return (int)syscall(SYS_mount_setattr, dirfd, path, flags, &attr, sizeof attr);
}
int fsconfig_(int fd, unsigned cmd, const char *key, const char *value) {
    return (int)syscall(SYS_fsconfig, fd, cmd, key, value, 0);
}
int resolve(int dirfd, const char *path, int flags) {
    struct open_how how = {.flags = (unsigned long long)(flags | O_CLOEXEC),
                           .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS};
    return (int)syscall(SYS_openat2, dirfd, path, &how, sizeof how);
}

/* A new tmpfs, detached; its fd, or -1. */
int new_tmpfs(const char *mode, unsigned long long size, unsigned long long inodes,
                     unsigned attrs) {
    int fs = (int)syscall(SYS_fsopen, "tmpfs", FSOPEN_CLOEXEC);
    if (fs < 0)
        return -1;
    char text[32];
    int rc = fsconfig_(fs, FSCONFIG_SET_STRING, "mode", mode);
    if (rc == 0 && size > 0) {
        snprintf(text, sizeof text, "%llu", size);
        rc = fsconfig_(fs, FSCONFIG_SET_STRING, "size", text);
    }
    if (rc == 0 && inodes > 0) {
        snprintf(text, sizeof text, "%llu", inodes);
        rc = fsconfig_(fs, FSCONFIG_SET_STRING, "nr_inodes", text);
    }
    if (rc == 0)
        rc = fsconfig_(fs, FSCONFIG_CMD_CREATE, NULL, NULL);
    int mnt = rc == 0 ? (int)syscall(SYS_fsmount, fs, FSMOUNT_CLOEXEC, attrs) : -1;
    int saved = errno;
    close(fs);
    errno = saved;
    return mnt;
}
