Feature: A misbehaving job is contained, and nobody else notices
  Each job runs in a cgroup of its own and in PID, mount, network, UTS and IPC namespaces of
  its own, as a uid of its own (this server also lets a job ask for nobody, or for root, which
  is root of a user namespace of its own). Whatever it does stays inside: it is killed when
  it outgrows its memory, held at its pids and CPU limits, cleared entirely by Stop, kept to
  the output cap, and it sees none of the host's processes, network interfaces or mounts.
  Meanwhile a neighbour job's output keeps flowing to its reader and the server answers its
  Status calls promptly.

  Background:
    Given the jobmgr-server program is running with "--output-cap 8MiB --allow-run-as nobody --allow-run-as root"
    And a neighbour job printing a line every 0.1 seconds, with a reader and a Status poller

  Scenario: A memory hog is OOM-killed inside its cgroup, and the server says so
    When the admin starts a job that allocates memory without end, with a memory limit of 64 MiB
    Then within 30 seconds the job is FAILED by signal 9 with its OOM flag set
    And the neighbour's output never paused for 2 seconds and every Status answered within 1 second

  Scenario: A fork bomb is held by its pids limit, and Stop clears it within the grace period + 1 s
    When the admin starts a fork bomb that ignores SIGTERM, with a pids limit of 64
    And the bomb has been going for 2 seconds
    Then the job never had more than 64 processes at once
    When the admin stops the job with a grace period of 1 second
    Then the Stop returned within 2 seconds, the job STOPPED by signal 9
    And no process of the job is left anywhere on the host
    And the neighbour's output never paused for 2 seconds and every Status answered within 1 second

  Scenario: A CPU hog is held to its quota while the neighbour stays responsive
    When the admin starts a job of 4 busy loops with a CPU limit of 0.5
    And the hog has been running for 3 seconds
    Then the hog used at most 0.6 CPU-seconds per second of it
    And the neighbour's output never paused for 2 seconds and every Status answered within 1 second

  Scenario: A job that closes its output, daemonises and ignores SIGTERM is cleared by Stop
    When the admin starts a job that double-forks a daemon into a new session, closes its stdout and stderr, and ignores SIGTERM
    And the job and its daemon are both running
    When the admin stops the job with a grace period of 1 second
    Then the Stop returned within 2 seconds, the job STOPPED by signal 9
    And no process of the job is left anywhere on the host

  Scenario: The daemon of a job that exits dies with the job
    When the admin starts a job that double-forks a daemon ignoring SIGTERM, then exits 0
    Then the job is EXITED with code 0
    And within 1 second no process of the job is left anywhere on the host

  Scenario: A job printing 5 GiB as fast as it can: the server's memory stays flat, the cap applies
    When the admin starts a job writing 5 GiB to stdout as fast as it can, and a client follows it
    Then the job EXITED with code 0
    And the server's memory grew by less than 64 MiB while it ran
    And the follower received exactly the first 8 MiB, then a notice that the output was truncated
    And the job's status says its output was truncated
    And the job's output takes at most 8 MiB and 64 KiB on disk
    And the neighbour's output never paused for 2 seconds and every Status answered within 1 second

  Scenario: A job sees no host process, no host network interface and no mount the host makes
    When the admin starts a job that looks around, and the host mounts a tmpfs while it runs
    Then the job saw only its own few processes and could not signal the server
    And the only network interface it saw, in /proc/net/dev and in /sys/class/net, is "lo"
    And it never saw the host's new mount

  Scenario Outline: A job running as <user> cannot leave its cgroup or lift its own limits
    When the admin starts, as <user>, a job that tries to move itself to the root cgroup and to lift its memory limit
    Then both attempts failed, and the job stayed in its own cgroup

    Examples:
      | user   |
      | nobody |
      | root   |
