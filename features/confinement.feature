Feature: Every job runs in a sandbox of its own, by default
  Each job runs as a uid of its own, in a read-only view of the host's files whose /tmp,
  /var/tmp, /dev/shm and /scratch are its own (one tmpfs, its disk limit, gone when it ends);
  /root, /home, /run, the state directory and the server's certificates are empty to it, and
  so is every path socket of the host; it has no_new_privs, a seccomp filter, no capability,
  and only the devices of its minimal /dev. A job allowed to run as root is root of a user
  namespace of its own, mapped to an unprivileged uid. Each scenario tries an escape through a
  real jobmgr-server over mutual TLS, as the default user and as root, then looks at the host.

  Scenario Outline: A job as <user> writes none of the host's files; /tmp, /var/tmp and /dev/shm are its own
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    When the admin starts a job as <user> that writes a marker into /tmp, /var/tmp, /dev/shm, /scratch, /etc, /usr and /, and lists /tmp
    Then it could write only into /tmp, /var/tmp, /dev/shm and /scratch, and its /tmp held nothing of the host's
    And once it has ended, no marker is on the host

    Examples:
      | user        |
      | its own uid |
      | root        |

  Scenario Outline: A job as <user> sees /root, /home, /run, the state directory and the certificates as empty
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    When the admin starts a job as <user> that lists /root, /home, /run, /var/run, the state directory and the certificates' directory, and reads the CA's key
    Then every listing was empty and the CA's key could not be read

    Examples:
      | user        |
      | its own uid |
      | root        |

  Scenario Outline: A job as <user> cannot reach a path socket a host service listens on
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    And a host service listening on a socket, mode 0777, at /var/lib and at /run, and on an abstract name
    When the admin starts a job as <user> that connects to the three of them
    Then every connection failed, and the service accepted none

    Examples:
      | user        |
      | its own uid |
      | root        |

  Scenario Outline: A job as <user> writing past its disk limit of 32 MiB gets ENOSPC near it, and leaves nothing behind
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    And the host's /dev/shm and the free space of / are measured
    When the admin starts a job as <user> with a disk limit of 32 MiB that writes 20 MiB into /tmp, then into /dev/shm until a write fails
    Then the write into /dev/shm failed with ENOSPC after 11 to 12 MiB
    And once it has ended, no marker is on the host, /dev/shm holds what it held, and / lost less than 16 MiB

    Examples:
      | user        |
      | its own uid |
      | root        |

  Scenario: Shared memory a job fills goes with it, even when it is OOM-killed
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    And the host's /dev/shm and the free space of / are measured
    When the admin starts a job with a memory and disk limit of 64 MiB that writes 40 MiB into /dev/shm, then allocates memory without end
    Then within 30 seconds the job is FAILED by signal 9 with its OOM flag set
    And once it has ended, no marker is on the host, /dev/shm holds what it held, and / lost less than 16 MiB

  Scenario: A job's uid is its own: two jobs of two owners cannot read, write or signal each other
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    When the owner "alice" starts a job that writes a secret into /tmp and /scratch, then waits
    And the owner "bob" starts a job that reads, overwrites and kills whatever of alice's job it can find
    Then bob's job found none of alice's files and killed nothing
    And alice's job read back its secrets unchanged and exited 0
    And the two jobs ran as two different uids of the range 1879048192-1879113727

  Scenario: Jobs running at the same time never share a uid, and root jobs map to uids of their own too
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    When the admin starts 6 jobs as their own uid and 2 as root, all at once, each printing its host uid
    Then the 8 host uids are distinct and in the range 1879048192-1879113727

  Scenario: A job re-adopted after the server is killed keeps its uid, and no job started since gets it
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    When the admin starts a job as its own uid that waits
    And jobmgr-server is killed with SIGKILL and started again
    And the admin starts 6 jobs as their own uid, all at once, each printing its host uid
    Then the first job still runs, re-adopted, as the uid it started with, which none of the 6 has

  Scenario: A job has no privilege: no_new_privs, a seccomp filter, no capability, and a setuid program does not lift it
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    And a setuid-root copy of "id" in a host directory under /var/lib
    When the admin starts a job as its own uid that reads its /proc/self/status and runs the setuid copy of id
    Then its status shows "NoNewPrivs: 1", "Seccomp: 2" and "CapBnd: 0000000000000000"
    And the setuid copy ran with the job's own uid as its effective uid

  Scenario Outline: The seccomp filter of a job as <user> refuses the calls Docker's default profile refuses
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    When the admin starts a job as <user> that makes a user namespace, and calls keyctl, add_key, bpf, perf_event_open, kexec_load, init_module, finit_module, delete_module, swapoff, reboot, settimeofday, clock_settime, acct, userfaultfd, open_by_handle_at, iopl, ioperm, syslog, quotactl and clone3
    Then every call failed with EPERM but clone3, which failed with ENOSYS
    And a job as <user> may mount: <mount>

    Examples:
      | user        | mount |
      | its own uid | no    |
      | root        | yes   |

  Scenario: A job as root is root of its own namespace, and not of the host
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    When the admin starts a job as root that tries root things in its own view and on the host
    Then in its own view it wrote its scratch, mounted a tmpfs, bound a directory and set its hostname
    And it could not read the CA's key, write /etc, set the clock, open core_pattern for writing, reach the launcher's socket, or mount a cgroup filesystem
    And on the host its root was one uid of the range 1879048192-1879113727, /etc has no marker, and the hostname is unchanged

  Scenario Outline: A job as <user> can open only the devices of its own /dev
    Given a jobmgr-server whose state directory and certificates are under /var/lib, allowing root jobs
    When the admin starts a job as <user> that makes a node for the host's disk and opens it, then opens /dev/null, /dev/zero and /dev/urandom
    Then making or opening the disk failed, and the three others opened
    And the job's devices cgroup allowed exactly null, zero, full, random, urandom, tty, ptmx and pts

    Examples:
      | user        |
      | its own uid |
      | root        |

  Scenario: A host directory the configuration allows is mounted read-only where a job asks; others are refused
    Given a jobmgr-server allowing jobs to mount a host directory holding "data.txt"
    When the admin starts a job as its own uid mounting that directory at /data, which reads data.txt and writes /data/new.txt
    Then the job read data.txt and could not write /data/new.txt
    And mounting /etc, or that directory writable, is refused as INVALID_ARGUMENT naming the source

  Scenario: A directory the configuration allows writable is written by a job running as a named user
    Given a jobmgr-server allowing jobs to mount a host directory holding "data.txt", writable
    When the admin starts a job as nobody mounting that directory writable at /out, which writes /out/result.txt
    Then the host directory holds result.txt, owned by nobody
    And a job as its own uid asking for that writable mount is refused as INVALID_ARGUMENT

  Scenario: A job runs in a root filesystem of its own
    Given a busybox tree in a directory the server allows as a job's root
    When the admin starts a job as its own uid in that tree that reads /etc/os-release, lists /usr and writes / and /scratch
    Then it saw the tree's os-release, an empty /usr, could not write / and wrote /scratch
    And a job asking for a root filesystem outside the allowed directories is refused as INVALID_ARGUMENT

  Scenario: Without libseccomp the server refuses to start, saying how to install it
    When jobmgr-server is started where libseccomp.so.2 cannot be loaded
    Then it exits with status 1 saying "libseccomp.so.2 is missing" and "apt-get install libseccomp2"

  Scenario: A uid range that holds a host user is refused at start
    When jobmgr-server is started with "--uid-range 65000-66000"
    Then it exits with status 1 saying "65000-66000" and "/etc/passwd: nobody"
