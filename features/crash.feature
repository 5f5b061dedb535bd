Feature: kill -9 of the server loses nothing and orphans nothing
  The server keeps its job records in SQLite (WAL) in its state dir and each job's output in a
  file beside them; the jobs' supervisor, the launcher, is a process of its own that outlives
  the server. When the server is killed with SIGKILL (while clients follow output, while a
  start is under way, with jobs running) and started again on the same state dir: every job
  whose start was confirmed is still listed, every finished job's status and output are
  exactly what they were (sha256), the jobs that were running go on and end with their whole
  output, no cgroup or process is left without a job, and the database passes PRAGMA
  integrity_check. A client following output when the server dies gets an error, never a
  clean end of a truncated stream.

  Scenario: A client following a job when the server dies gets an error, and the job loses no line
    Given the jobmgr-server program is running
    And the admin has started a job printing 60 numbered lines, one every 0.05 seconds
    When a client follows its output, and the server is killed with SIGKILL while it does
    Then the client's call failed with UNAVAILABLE
    When the server is started again on the same state dir
    Then the job ends with exactly its 60 lines

  Scenario: Killed 3 times mid-stream and mid-start with jobs running, the server loses nothing
    Given the jobmgr-server program is running
    When 3 times over, with jobs running, being started and being followed, the server is killed with SIGKILL and started again
    Then after every restart each job whose start was confirmed was listed
    And after every restart each finished job's status and output were exactly as before
    And after every kill the database passed PRAGMA integrity_check and held every confirmed job
    And after every restart each job cgroup and each job process belonged to a running job
    And no follower ever saw a truncated stream end cleanly
    And every job ended with exactly the output it printed
    And once the server is stopped nothing of any job is left: no process, cgroup or launcher

  @long
  Scenario: Killed 20 times mid-stream and mid-start with jobs running, the server loses nothing
    Given the jobmgr-server program is running
    When 20 times over, with jobs running, being started and being followed, the server is killed with SIGKILL and started again
    Then after every restart each job whose start was confirmed was listed
    And after every restart each finished job's status and output were exactly as before
    And after every kill the database passed PRAGMA integrity_check and held every confirmed job
    And after every restart each job cgroup and each job process belonged to a running job
    And no follower ever saw a truncated stream end cleanly
    And every job ended with exactly the output it printed
    And once the server is stopped nothing of any job is left: no process, cgroup or launcher
