/* What the two source files of the init program share: _pid1.c (the zygote, the mid child and
 * the init up to the job's start) and _pid1_supervise.c (the init once the job runs). */
#ifndef JOBMGR_PID1_H
#define JOBMGR_PID1_H
#include <signal.h>
#include <sys/types.h>

/* One report line (printf-style) on the report pipe, in one write. */
void report(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The signals the init blocks from its start and takes with sigwaitinfo(). */
void watched_signals(sigset_t *set);
/* Supervise the running job until its main process ends; then report and exit. */
_Noreturn void supervise(pid_t job, const sigset_t *watched, int rep);

#endif
