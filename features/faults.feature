Feature: Faults: nothing lost, nothing stuck, nothing signalled by mistake, and every failure said
  An operator's bad day, injected into a real jobmgr-server while its jobs print: pids reused
  at once, the launcher killed or frozen, a damaged log or database, a changed cgroup parent,
  a Stop racing a job's own end, a Start whose caller gave up. jobmgr holds every process by a
  pidfd and sends no signal by number; the server watches its launcher and replaces it within
  seconds, holding copies of every running job's pipes and init, so the new launcher takes
  the jobs over and no byte they wrote is lost; damage is kept, worked around and said in one
  log line; every job ends the way it really ended. RELIABILITY.md lists each fault, what
  jobmgr does about it, and its scenario here.

  Scenario: With every pid reused within a hundred forks, each job's exit is known and no stranger is signalled
    Given jobmgr-server runs in a PID namespace whose pid_max is 400, beside a canary that keeps taking its recycled pids
    When 1000 jobs running "true" are started, 16 at a time, each followed to its end
    Then all 1000 ended EXITED with code 0, and none is left RUNNING
    When 16 jobs running "sleep 60" are started and each is stopped with a grace of 1 second
    Then all 16 ended STOPPED
    When the server is stopped with SIGTERM
    Then it exited 0 within 30 seconds
    And no canary process got a signal, of more than 500 that ran on recycled pids

  @long
  Scenario: With every pid reused within a hundred forks, 5000 jobs' exits are all known and no stranger is signalled
    Given jobmgr-server runs in a PID namespace whose pid_max is 400, beside a canary that keeps taking its recycled pids
    When 5000 jobs running "true" are started, 16 at a time, each followed to its end
    Then all 5000 ended EXITED with code 0, and none is left RUNNING
    When 16 jobs running "sleep 60" are started and each is stopped with a grace of 1 second
    Then all 16 ended STOPPED
    When the server is stopped with SIGTERM
    Then it exited 0 within 30 seconds
    And no canary process got a signal, of more than 2000 that ran on recycled pids

  Scenario: A launcher killed with SIGKILL is replaced at once, and its jobs go on without losing a byte
    Given the jobmgr-server program is running
    And the admin has started a job printing 3000 numbered lines, one every millisecond
    And the admin has also started a job writing 16 MiB of random bytes, 64 KiB at a time
    And jobmgr-client follows its output, and a client watches the server's health
    When the launcher is killed with SIGKILL once the job has printed 500 lines
    Then within 2 seconds health said NOT_SERVING, then SERVING again, with a new launcher
    And the server's log has one line saying the launcher died, killed by signal 9
    And the follower printed exactly the 3000 lines and exited 0
    And the job is EXITED with code 0
    And the other job's output is exactly its 16 MiB
    And once the server is stopped nothing of any job is left: no process, cgroup or launcher

  Scenario: A frozen launcher is noticed within seconds, refused work meanwhile, and replaced with nothing lost
    Given the jobmgr-server program is running
    And the admin has started a job printing 3000 numbered lines, one every millisecond
    And the admin has also started a job sleeping 60 seconds
    And the admin has also started a job writing 16 MiB of random bytes, 64 KiB at a time
    And jobmgr-client follows its output, and a client watches the server's health
    When the launcher is stopped with SIGSTOP once the job has printed 500 lines
    And jobmgr-client start and jobmgr-client stop are run while it is frozen
    Then both failed, saying what became of the job launcher, not that the server cannot be reached
    And within 4 seconds health said NOT_SERVING, then SERVING again, with a new launcher
    And the server's log has one line saying the launcher froze and was killed
    And the follower printed exactly the 3000 lines and exited 0
    And the job is EXITED with code 0
    And the other job's output is exactly its 16 MiB
    And jobmgr-client stop stops the sleeping job now, and jobmgr-client start starts a job

  Scenario: Jobs whose launcher died with the server are LOST from the time they were lost, and their followers are told
    Given the jobmgr-server program is running
    And the admin has started a job printing a numbered line every 0.1 seconds, without end
    When the server and then its launcher are killed with SIGKILL, and the server is started again 5 seconds later
    Then the job is LOST, ended within 2 seconds of the kill, its reason naming the launcher
    And no process of the job is alive, and none of its cgroups is left
    And jobmgr-client output prints its lines, then says on stderr that the job was lost, and exits 1

  Scenario Outline: A finished job whose log head is damaged keeps its status and every byte of its output
    Given the jobmgr-server program is running
    And the admin has run a job printing 100 numbered lines to its end
    When the server and then its launcher are killed with SIGKILL, <damage> are written at the head of the job's log, and the server is started again
    Then the job is listed EXITED with code 0
    And its status reason says its log's record frame is damaged
    And its output is exactly its 100 lines, and ends without error
    And the server's log has one line naming the job and its damaged record frame
    When the server is killed with SIGKILL and started again
    Then the job is listed EXITED with code 0
    And its output is exactly its 100 lines, and ends without error

    Examples:
      | damage              |
      | 8 zero bytes        |
      | 32 bytes of garbage |

  Scenario: A running job whose log head is damaged stays listed and stoppable, and loses no output
    Given the jobmgr-server program is running
    And the admin has started a job printing a numbered line every 0.1 seconds, without end
    When 32 bytes of garbage are written at the head of its log, and the server is killed with SIGKILL and started again
    Then the job is listed RUNNING, with its command
    And the server's log has one line naming the job and its damaged record frame
    When the job is stopped with a grace of 1 second
    Then the job is STOPPED
    And its output holds every line it printed, in order, and ends without error
    When the server is killed with SIGKILL and started again
    Then the job is listed STOPPED, with its command

  Scenario: A damaged jobs.db is moved aside and rebuilt from the jobs' logs, and the running job is re-adopted
    Given the jobmgr-server program is running
    And the admin has run 60 jobs printing 20 numbered lines each to their end
    And the server has been stopped with SIGTERM and started again
    And the admin has started a job printing 30 numbered lines, one every 0.1 seconds
    When the server is killed with SIGKILL, jobs.db is cut to half its size, and the server is started again
    Then the server's log has one line saying jobs.db was damaged and moved aside
    And the damaged database is kept in the state directory
    And the 60 finished jobs are listed as before, each with exactly its output
    And the running job ends EXITED with code 0, with exactly its 30 lines

  Scenario: A server started with another cgroup parent while its launcher runs jobs refuses to start, saying why
    Given the jobmgr-server program is running
    And the admin has started a job sleeping 60 seconds
    When the server is killed with SIGKILL and started again with another cgroup parent
    Then it exited 1, naming both cgroup parents and how to stop the launcher's jobs
    When the server is started again with its first cgroup parent
    Then the job is listed RUNNING, with its peak memory measured

  Scenario: A server started with another cgroup parent after its launcher died kills the old jobs before it calls them LOST
    Given the jobmgr-server program is running
    And the admin has started a job sleeping 60 seconds
    When the server and then its launcher are killed with SIGKILL, and the server is started again with another cgroup parent
    Then the job is LOST, its reason saying its remaining processes were killed
    And no process of the job is alive, and nothing is left under the first cgroup parent
    And a job started now runs in a cgroup under the new cgroup parent

  Scenario: A launcher started for another cgroup parent and running no job is replaced
    Given the jobmgr-server program is running
    When the server is killed with SIGKILL and started again with another cgroup parent
    Then the server's log says the launcher was replaced
    And a job started now runs in a cgroup under the new cgroup parent
    And nothing is left under the first cgroup parent

  Scenario: A job that exits 7 before a pending Stop reaches it is EXITED with code 7, and the Stop says it had ended
    Given the jobmgr-server program is running
    And the admin has started a job that sleeps 0.5 seconds, then exits 7
    When the launcher is stopped with SIGSTOP for 1.5 seconds, and jobmgr-client stop is run on the job 1 second in
    Then jobmgr-client stop printed that the job had already ended: EXITED with code 7
    And the job is EXITED with code 7

  @long
  Scenario: Stops racing 200 jobs' own ends never turn an exit into a stop
    Given the jobmgr-server program is running
    When 200 jobs running "sh -c 'sleep 0.2; exit 7'" are each stopped between 0.1 and 0.3 seconds after they start
    Then each job is either EXITED with code 7, its Stop reply saying so, or STOPPED by signal 15
    And both endings happened

  Scenario: A Start whose caller's deadline passed while the launcher was frozen is never launched
    Given the jobmgr-server program is running
    When the launcher is stopped with SIGSTOP, a Start of "sleep 30" with a deadline of 1 second is sent, and the launcher is continued 1.5 seconds later
    Then the Start failed with DEADLINE_EXCEEDED
    And 3 seconds later no job has been started: none is listed and no process of it runs

  Scenario: A Start retried with the same request id gets the job the first one started
    Given the jobmgr-server program is running
    When a Start of "sleep 30" with request id "retry-7f3a" is sent twice
    Then both answers name the same job, and it is the only job listed
    When a Start of "sleep 30" with request id "retry-8b4c" is sent
    Then it names another job

  Scenario: A Start under way when the server is told to stop is stopped with the rest, and the server exits
    Given the jobmgr-server program is running
    When the launcher is stopped with SIGSTOP, a Start of "sleep 60" is sent, the server gets SIGTERM, and the launcher is continued 1 second later
    Then the server exited 0 within 20 seconds
    And no process of any job is left
