/* The init once the job runs: its signals, its reaping and its exit report.
 *
 * Every signal below is blocked from the init's start and taken with sigwaitinfo(), so no
 * handler races the loop and none is dropped (the kernel discards a signal that a namespace
 * init leaves at SIG_DFL, but never a blocked one). What a signal means depends on its sender:
 *
 *   SIGTERM or SIGUSR1 from outside the namespace (si_code SI_USER and si_pid 0: the launcher,
 *   through its pidfd of this init) is a stop. Every child that has ended is reaped first, so
 *   a job that ended by itself before the stop reached it is reported as having ended by
 *   itself. Otherwise the job is marked stopped and every process of the namespace but this
 *   init gets SIGTERM (for SIGUSR1: SIGKILL) through kill(-1), daemons and setsid grandchildren
 *   included: the init keeps its privileges (only the job's first process takes the job's
 *   identity, see _privilege.c), so every process of the namespace is within its reach.
 *   SIGTERM, SIGINT and SIGHUP from anyone else are forwarded to the job's main process;
 *   SIGUSR1 from inside the namespace is ignored.
 *   SIGCHLD: every child that died is reaped.
 *
 * When the main process ends the init reports "exit <wait status>", followed by " stopped" if a
 * stop took effect on it, and exits with its code (128+N for signal N); the kernel then
 * SIGKILLs whatever is left in the namespace. A stop took effect when the main process died of
 * a signal, or when it exited with a code while it handled SIGTERM (a shell's `trap 'exit 4'
 * TERM`). A main process that exits with a code without handling SIGTERM was already past its
 * exit() when the signal came (the kernel drops a signal sent to an exiting task; reaping
 * first does not close that window, which stays open for the whole of the task's exit): it
 * ended by itself.
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "_pid1.h"

#define STOP_SIGNAL SIGTERM /* from the launcher: SIGTERM to every process of the job */
#define KILL_SIGNAL SIGUSR1 /* from the launcher: SIGKILL to every process of the job */

void watched_signals(sigset_t *set) {
    sigemptyset(set);
    sigaddset(set, SIGCHLD);
    sigaddset(set, SIGTERM);
    sigaddset(set, SIGINT);
    sigaddset(set, SIGHUP);
    sigaddset(set, KILL_SIGNAL);
}

/* Whether ``pid`` catches or ignores SIGTERM, from /proc/PID/status (the job's own /proc);
 * when that cannot be read, 1: the stop is then counted whenever it was sent. */
static int handles_sigterm(pid_t pid) {
    char path[64], line[128];
    unsigned long long caught = 0, ignored = 0;
    int found = 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return 1;
    while (fgets(line, sizeof line, f)) {
        found += sscanf(line, "SigCgt: %llx", &caught) == 1;
        found += sscanf(line, "SigIgn: %llx", &ignored) == 1;
    }
    fclose(f);
    if (found < 2)
        return 1;
    return ((caught | ignored) >> (SIGTERM - 1)) & 1;
}

/* Reap every child that has ended; if the job's main process is one, report and exit.
 * ``stopped``: a stop was sent; ``handled``: the main process handled SIGTERM then. */
static void reap(pid_t job, int stopped, int handled, int rep) {
    for (;;) {
        int status;
        pid_t dead = waitpid(-1, &status, WNOHANG);
        if (dead <= 0)
            return;
        if (dead == job) {
            int took_effect = stopped && (WIFSIGNALED(status) || handled);
            report(rep, "exit %d%s", status, took_effect ? " stopped" : "");
            _exit(WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status));
        }
    }
}

static int from_outside(const siginfo_t *info) {
    return info->si_code == SI_USER && info->si_pid == 0;
}

_Noreturn void supervise(pid_t job, const sigset_t *watched, int rep) {
    int stopped = 0, handled = 0;
    for (;;) {
        siginfo_t info;
        int sig = sigwaitinfo(watched, &info);
        if (sig < 0)
            continue; /* EINTR */
        if (sig == SIGCHLD) {
            reap(job, stopped, handled, rep);
        } else if ((sig == STOP_SIGNAL || sig == KILL_SIGNAL) && from_outside(&info)) {
            reap(job, stopped, handled, rep); /* a job that has ended already was not stopped */
            if (!stopped)
                handled = sig == STOP_SIGNAL && handles_sigterm(job);
            stopped = 1;
            kill(-1, sig == KILL_SIGNAL ? SIGKILL : SIGTERM);
        } else if (sig != KILL_SIGNAL) {
            kill(job, sig);
        }
    }
}
