"""The kernel-facing suite inside a cgroup-v2-only VM: ``make test-v2`` runs ``python -m vm``.

The host boots a stock distribution kernel with virtme-ng (``vng``): the host's root shared
read-only over 9p, writable overlays that vanish at exit, cgroup2 mounted alone. Inside,
``vm._guest`` checks that the v2 driver is the one chosen, makes a cached mount of the host's
root the guest's root (vng's own caches nothing), formats a scratch virtio disk for
the I/O scenarios, runs the kernel-facing features against the real kernel and writes a
summary into a directory shared with the host; the host prints it and decides the exit code.

    _deps    what the run needs on the host, and the Debian package of each
    _host    booting the VM (KVM where it works, else emulation), collecting the summary
    _guest   what runs inside
"""
