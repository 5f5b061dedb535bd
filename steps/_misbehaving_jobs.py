"""Misbehaving jobs for features/contained.feature: each program does one thing a job must
not get away with. The Python ones take the scenario's marker as their first argument, so
that whatever of them survives can be found on the host."""

import textwrap

MEMORY_HOG = "x = []\nwhile True:\n    x.append(b'h' * (1 << 20))"
CPU_HOG = "import os\nfor _ in range(2):\n    os.fork()\nwhile True:\n    pass"
# The main process forks the bomb once and then never forks again, so the bomb cannot make it
# fail (and end the job) for want of a pid; everything ignores SIGTERM.
FORK_BOMB = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        bomb = "trap '' TERM; f() { f | f & }; f; wait"
        os.execvp("sh", ["sh", "-c", bomb, sys.argv[1]])
    while True:
        time.sleep(1)
    """
)
# Double fork into a new session, the daemon's stdio closed, SIGTERM ignored throughout.
DAEMONISE = textwrap.dedent(
    """
    import os, signal, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if os.fork() == 0:
        os.setsid()
        if os.fork() == 0:
            for fd in (0, 1, 2):
                os.close(fd)
            while True:
                time.sleep(1)
        os._exit(0)
    os.wait()
    print("daemonised", flush=True)
    if sys.argv[2] == "exit":
        sys.exit(0)
    os.close(1)
    os.close(2)
    while True:
        time.sleep(1)
    """
)
LOOK_AROUND = textwrap.dedent(
    """
    import os, sys, time
    def listing(path):
        return " ".join(sorted(os.listdir(path)))
    print("pids", " ".join(p for p in os.listdir("/proc") if p.isdigit()))
    try:
        os.kill(int(sys.argv[2]), 0)
        print("signal server yes")
    except OSError as exc:
        print("signal server", exc.strerror)
    devices = [l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]]
    print("proc-net", " ".join(devices))
    print("sys-net", listing("/sys/class/net"))
    print("ready", flush=True)
    time.sleep(3)
    print("mounted", sys.argv[3] in open("/proc/self/mountinfo").read(), flush=True)
    """
)
# Tries to leave its cgroup and to lift its memory limit, by /sys/fs/cgroup if it can see it,
# else by mounting the cgroup filesystem itself; then waits, for the host to look.
ESCAPE = textwrap.dedent(
    """
    import os, subprocess, sys, time
    v2 = all(line.startswith("0::") for line in open("/proc/self/cgroup"))
    def group(controller):
        for line in open("/proc/self/cgroup"):
            _, names, path = line.rstrip("\\n").split(":", 2)
            if controller in names.split(",") or names == "":
                return path
    def hierarchy(controller):
        path = "/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/" + controller
        if os.path.exists(path + "/cgroup.procs"):
            return path
        target = "/mnt" if os.path.isdir("/mnt") else "/tmp"
        kind = ["-t", "cgroup2"] if v2 else ["-t", "cgroup", "-o", controller]
        subprocess.run(["mount", *kind, "h5", target], capture_output=True)
        return target
    def attempt(path, value):
        try:
            with open(path, "w") as f:
                f.write(value)
            return "done"
        except OSError as exc:
            return exc.strerror.replace(" ", "-")
    moved = attempt(hierarchy("pids") + "/cgroup.procs", str(os.getpid()))
    memory = hierarchy("memory") + group("memory")
    if v2:
        lifted = attempt(memory + "/memory.max", "max")
    else:  # with swap accounting the memsw limit must be lifted first
        attempt(memory + "/memory.memsw.limit_in_bytes", str(1 << 40))
        lifted = attempt(memory + "/memory.limit_in_bytes", str(1 << 40))
    print("moved", moved, "lifted", lifted, flush=True)
    time.sleep(60)
    """
)
