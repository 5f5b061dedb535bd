/* What the two files of the job's view share: _sandbox.c (the view's steps, its sources and
 * the order) and _skeleton.c (the skeleton, /dev, /proc and /sys). */
#ifndef JOBMGR_VIEW_H
#define JOBMGR_VIEW_H

#include "_mountapi.h"

/* Note `what` and `path` in view_problem for the failure message; returns -1, errno kept. */
int problem(const char *what, const char *path);
/* Mount a clone of `name` under `from` (recursively) at `target`, with attributes set. */
int bind_clone(int from, const char *name, int recursive, unsigned long long set,
               unsigned long long clear, const char *target);
/* Cover `path` with an empty read-only directory or file (`sockets_only`: only a socket). */
int cover(const char *path, int sockets_only);
/* Bind `source`'s top-level entries read-only under `target` (`hide`: the hidden ones stay
 * empty), and make the job's own mount points there. */
int skeleton(int source, const char *target, int hide);
/* /dev's nodes, links and mount points under `dev`. */
int make_dev(const char *dev);

#endif
