Feature: Clients written for the reference job manager work unchanged
  A client built from nothing but the reference's job.proto (its four calls and their fields
  1 to 3, in tests/refproto/job.proto) can start, inspect, stop and read jobs. It reads fields
  1 to 3 of a job's status as the reference meant them: status is RUNNING while the job runs
  and EXITED once it has ended, however it ended; terminated is true only when a Stop ended
  the job (one a client sent, or the job's own timeout); exit_code is the job's exit code, -1
  when it did not exit by itself. How the job ended in jobmgr's own words (STOPPED, FAILED,
  LOST, the signal, the OOM flag, the reason) is in fields the reference's clients do not
  know. Where the reference answered UNKNOWN to every failure, each carries its own status
  code.

  Rule: A reference client reads how a job runs and how it ended

    Background:
      Given a jobmgr server
      And a client built from the reference's job.proto alone, holding the admin certificate

    Scenario: A job that exits 3 by itself reads EXITED, not terminated, exit_code 3
      When the reference client starts "sh -c 'echo hi; echo there >&2; exit 3'"
      And the reference client reads the job's output
      Then the reference output is "hi\nthere\n"
      When the reference client asks for the job's status
      Then it reads status "EXITED", terminated false and exit_code 3
      And jobmgr's own client reads state "EXITED"

    Scenario: A running job reads RUNNING, not terminated
      When the reference client starts "sleep 60"
      And the reference client asks for the job's status
      Then it reads status "RUNNING", terminated false and exit_code -1
      And jobmgr's own client reads state "RUNNING"

    Scenario: A job ended by the reference client's Stop reads EXITED, terminated, exit_code -1
      When the reference client starts "sleep 60"
      And the reference client stops the job
      Then the stop succeeds with an empty StopResponse
      When the reference client asks for the job's status
      Then it reads status "EXITED", terminated true and exit_code -1
      And jobmgr's own client reads state "STOPPED"

    Scenario: A job that exits 4 on the SIGTERM of a Stop reads terminated, with exit_code 4
      When the reference client starts "sh -c 'trap "exit 4" TERM; echo ready; sleep 60 & wait'"
      And the job has printed "ready"
      And the reference client stops the job
      And the reference client asks for the job's status
      Then it reads status "EXITED", terminated true and exit_code 4
      And jobmgr's own client reads state "STOPPED"

    Scenario: A job killed by a signal nobody asked for reads EXITED, not terminated, exit_code -1
      When the reference client starts "sh -c 'kill -9 $$'"
      And the reference client reads the job's output
      And the reference client asks for the job's status
      Then it reads status "EXITED", terminated false and exit_code -1
      And jobmgr's own client reads state "FAILED", ended by signal 9

    Scenario: An OOM-killed job reads EXITED, not terminated, exit_code -1
      When jobmgr's own client starts "python3 -c 'print(len(str(7) * (128 * 1024 * 1024)))'" with a memory limit of 32 MiB
      And the reference client reads the job's output
      And the reference client asks for the job's status
      Then it reads status "EXITED", terminated false and exit_code -1
      And jobmgr's own client reads state "FAILED", with the OOM flag set

    Scenario: A job stopped by its timeout reads EXITED, terminated, exit_code -1
      When jobmgr's own client starts "sleep 60" with a timeout of 1 second
      And the reference client reads the job's output
      And the reference client asks for the job's status
      Then it reads status "EXITED", terminated true and exit_code -1
      And jobmgr's own client reads state "STOPPED", with a reason mentioning "timed out"

  Rule: A job whose supervisor died reads EXITED, not terminated

    Scenario: A job LOST with its launcher reads EXITED, not terminated, exit_code -1
      Given the jobmgr-server program is running
      And a client built from the reference's job.proto alone, holding the admin certificate, for that program
      When the reference client starts "sleep 600"
      And jobmgr-server and then its launcher are killed with SIGKILL, and jobmgr-server is started again
      And the reference client asks for the job's status
      Then it reads status "EXITED", terminated false and exit_code -1
      And jobmgr's own client reads state "LOST", with a reason mentioning "launcher"

  Rule: Each failure carries its own status code

    Background:
      Given a jobmgr server
      And a client built from the reference's job.proto alone, holding the admin certificate

    Scenario Outline: Each failure carries its own status code
      When the reference client <does>
      Then the reference client gets <code> with a message containing "<words>"

      Examples:
        | does                                                          | code                | words                 |
        | asks for the status of job 5a0e8a5e-1c1f-4b8e-9d0e-3f3f3f3f3f3f | NOT_FOUND           | no job with id        |
        | reads the output of job 5a0e8a5e-1c1f-4b8e-9d0e-3f3f3f3f3f3f    | NOT_FOUND           | no job with id        |
        | stops job 5a0e8a5e-1c1f-4b8e-9d0e-3f3f3f3f3f3f                  | NOT_FOUND           | no job with id        |
        | asks for the status of job 42                                 | INVALID_ARGUMENT    | '42' is not a job id  |
        | starts an empty command                                       | INVALID_ARGUMENT    | the command is empty  |
        | starts "no-such-command --flag"                               | FAILED_PRECONDITION | command not found     |
