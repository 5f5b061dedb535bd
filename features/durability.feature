Feature: Nothing is lost when jobmgr-server crashes, restarts or runs out of disk
  Job records live in SQLite in the state dir, each job's output in a file beside them. Each
  job is supervised by the launcher, a process of its own that outlives a crashed server: the
  next server re-adopts the jobs still running, and their output goes on. Only when the
  launcher dies too are its jobs LOST: their processes killed, their cgroups removed, their
  status saying why. Finished jobs are kept until the retention policy prunes them, oldest
  first. Output past the per-job cap, or past a full disk, is dropped while the job goes on,
  and Status and the output stream say so. In the commands below, JOB stands for the id of
  the last job started.

  Scenario: A finished job's output and status survive kill -9 of the server
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- sh -c 'head -c 3145728 /dev/urandom; echo done >&2; exit 5'
    Then it exits 0 and prints the new job's id
    When the admin has read the job's whole output and status with jobmgr-client
    And jobmgr-server is killed with SIGKILL and started again
    Then jobmgr-client output JOB gives the same stdout and stderr, byte for byte
    And jobmgr-client status JOB --json gives the same status, EXITED with exit_code 5

  Scenario: A job running while the server is killed is re-adopted, and its output goes on
    Given the jobmgr-server program is running with this configuration:
      """
      [jobs]
      allowed_run_as = ["nobody", "root"]
      """
    And the admin has started, as root, a job that prints "before", then "during" and "after" each when told to
    When the job has written "before\n"
    And jobmgr-server is killed with SIGKILL
    And the job is told to print "during", and does
    And jobmgr-server is started again
    Then jobmgr-client status says the job is RUNNING
    When the job is told to print "after" and exit 7
    And the admin runs jobmgr-client output JOB
    Then it exits 0
    And its stdout is "before\nduring\nafter\n"
    And jobmgr-client status says the job EXITED with code 7

  Scenario: When the launcher is killed with the server, its job is LOST, killed and cleared
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- sh -c 'echo hello; exec sleep 600'
    Then it exits 0 and prints the new job's id
    When the job has written "hello\n"
    And the job's processes are noted
    And jobmgr-server and then its launcher are killed with SIGKILL
    And jobmgr-server is started again
    Then jobmgr-client status says the job is LOST
    And its status reason mentions "launcher"
    And the job's processes are gone
    And the job's cgroups are gone
    When the admin runs jobmgr-client output JOB
    Then it exits 1
    And its stdout is "hello\n"
    And its stderr is one line containing "the job was lost: its supervisor (the job launcher) died"

  Scenario: Retention by count keeps the newest finished jobs and prunes the oldest
    Given the jobmgr-server program is running with flags "--retain count=2"
    When the admin runs "echo one", "echo two" and "echo three" to the end, in turn
    Then jobmgr-client list shows only "echo two" and "echo three"
    And the job "echo one" is not found, and its files are gone from the state dir

  Scenario: Retention by age prunes the finished jobs older than max_age
    Given the jobmgr-server program is running with flags "--retain max_age=1s"
    When the admin runs "echo old" to the end, in turn
    And 2 seconds pass
    And the admin runs "echo new" to the end, in turn
    Then jobmgr-client list shows only "echo new"
    And the job "echo old" is not found, and its files are gone from the state dir

  Scenario: Output past the cap is dropped, the job goes on, and Status and the stream say so
    Given the jobmgr-server program is running with this configuration:
      """
      [jobs]
      output_cap = "64K"
      """
    When the admin runs jobmgr-client start -- sh -c 'head -c 1048576 /dev/zero; echo more >&2; exec sleep 60'
    Then it exits 0 and prints the new job's id
    When the job's status says its output was truncated
    Then jobmgr-client status says the job is RUNNING
    And the output stream holds 65536 bytes of stdout and ends with a truncation notice
    When the admin runs jobmgr-client output --no-follow JOB
    Then it exits 0
    And its stdout is 65536 bytes long
    And its stderr contains "the job's output was truncated"
    When the admin runs jobmgr-client status JOB
    Then its stdout contains "output:      truncated"

  Scenario: A full disk truncates the output, and the server and its database carry on
    Given the jobmgr-server program is running with its state dir on a 4 MiB tmpfs
    When the admin runs jobmgr-client start -- sh -c 'head -c 8388608 /dev/urandom; exit 4'
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client output JOB
    Then it exits 0
    And its stdout is shorter than 4 MiB
    And its stderr contains "the job's output was truncated"
    And jobmgr-client status JOB --json says EXITED with exit_code 4 and output_truncated true
    And the server still serves: list, status and the health check answer
    And PRAGMA integrity_check on the state dir's jobs.db says ok

  Scenario: A job that ends while the disk is full to the last byte is still recorded
    Given the jobmgr-server program, allowed to run jobs as root, is running with its state dir on a 4 MiB tmpfs
    And the admin has started, as root, a job that prints "before", then "during" and "after" each when told to
    When the job has written "before\n"
    And the state dir's disk is filled to the last byte
    And the job is told to print "during", and does
    And the job is told to print "after" and exit 7
    Then jobmgr-client status says the job EXITED with code 7
    When the admin runs jobmgr-client run -- echo too late
    Then it exits 125
    And its stderr is only a line starting with "jobmgr-client: job failed to start: "
    And its stderr contains "No space left on device"
    When the state dir's disk is given its space back
    And the admin runs jobmgr-client run -- echo still working
    Then it exits 0
    And its stdout is "still working\n"
