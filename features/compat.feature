Feature: Clients written for the reference job manager work unchanged
  A client built from nothing but the reference's job.proto (its four calls and their fields
  1 to 3, in tests/refproto/job.proto) can start, inspect, stop and read jobs. Where the
  reference answered UNKNOWN to every failure, each now carries its own status code.

  Background:
    Given a jobmgr server
    And a client built from the reference's job.proto alone, holding the admin certificate

  Scenario: A reference client starts a job, reads its output and learns how it ended
    When the reference client starts "sh -c 'echo hi; echo there >&2; exit 3'"
    And the reference client reads the job's output
    Then the reference output is "hi\nthere\n"
    When the reference client asks for the job's status
    Then it reads status "EXITED", terminated true and exit_code 3

  Scenario: A reference client stops a running job
    When the reference client starts "sleep 60"
    And the reference client asks for the job's status
    Then it reads status "RUNNING", terminated false and exit_code -1
    When the reference client stops the job
    Then the stop succeeds with an empty StopResponse
    When the reference client asks for the job's status
    Then it reads status "STOPPED", terminated true and exit_code -1

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
