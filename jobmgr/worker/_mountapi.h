/* The new mount API by number: older C libraries lack the wrappers. Each returns what the
 * system call does (-1 with errno set on failure); fds come back close-on-exec. */
#ifndef JOBMGR_MOUNTAPI_H
#define JOBMGR_MOUNTAPI_H

int open_tree_(int dirfd, const char *path, unsigned flags);
int move_mount_(int from, const char *fpath, int to, const char *tpath, unsigned flags);
int setattr_(int dirfd, const char *path, unsigned flags, unsigned long long set,
             unsigned long long clear);
int fsconfig_(int fd, unsigned cmd, const char *key, const char *value);
/* openat2 with RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS: a symlink swapped in on the host
 * cannot redirect what the launcher named. */
int resolve(int dirfd, const char *path, int flags);
/* A new tmpfs, detached; its fd, or -1. `size`, `inodes`: 0 for the kernel's default. */
int new_tmpfs(const char *mode, unsigned long long size, unsigned long long inodes,
              unsigned attrs);

#endif
