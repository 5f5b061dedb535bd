Feature: Job lifecycle
  An operator starts a command as a job, asks how it is doing, and stops it.
  A job's status tells exactly how it ended.

  Background:
    Given a worker

  Scenario: A job's exact exit code is reported
    When I start "sh -c 'exit 3'"
    And the job ends
    Then the job's state is EXITED
    And its exit code is 3
    And its start and end times are recorded

  Scenario: A running job reports RUNNING
    When I start "sleep 1000"
    Then the job's state is RUNNING
    And the job is listed

  Scenario: An unknown job id is not found
    When I ask for the status of job "5a0e8a5e-1c1f-4b8e-9d0e-3f3f3f3f3f3f"
    Then the worker says no such job exists

  Scenario: A command that does not exist fails at start
    When I try to start "/no/such/binary --flag"
    Then the start fails naming "command not found" and "/no/such/binary"
    And no job is listed

  Scenario: A file that is not executable fails at start
    When I try to start a file without execute permission
    Then the start fails naming "permission denied" and "/etc/passwd"

  Scenario: An empty command is refused
    When I try to start an empty command
    Then the start is refused as invalid

  Scenario: Stop waits out the grace period for a job that ignores SIGTERM, then kills it
    When I start "sh -c 'trap "" TERM; echo ready; sleep 1000 & sleep 1000'"
    And the job has printed "ready\n"
    And I stop the job with a grace period of 1 second
    Then the stop took between 1 and 3 seconds
    And the job's state is STOPPED
    And it was ended by signal 9

  Scenario: Stop ends a job that honours SIGTERM without waiting for the grace period
    When I start "sleep 1000"
    And I stop the job with a grace period of 10 seconds
    Then the stop took less than 2 seconds
    And the job's state is STOPPED
    And it was ended by signal 15

  Scenario: Stop kills a daemonised grandchild too
    When I start a job that leaves a setsid daemon running
    And I stop the job with a grace period of 1 second
    Then no process of the daemon is left on the host

  Scenario: Stopping a finished job is not an error
    When I start "true"
    And the job ends
    And I stop the job with a grace period of 1 second
    Then the job's state is EXITED
    And its exit code is 0

  Scenario: Orphans are reaped inside the job
    When I start "sh -c '(sleep 0.1 &); (sleep 0.1 &); sleep 0.6; ps -eo stat=,args='"
    And the job ends
    Then the output shows no zombie process
    And the launcher has no zombie children

  Scenario: A job killed by a signal nobody asked for is FAILED
    When I start "sh -c 'kill -KILL $$'"
    And the job ends
    Then the job's state is FAILED
    And it was ended by signal 9
