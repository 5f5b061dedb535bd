Feature: A job's output streams over gRPC
  Output is served from the job's first byte, follows a running job live, and ends once the
  job has ended. Every message says whether its bytes came from stdout or stderr, and
  carries at most 1 MiB. Any number of clients can read the same job at once.

  Background:
    Given a jobmgr server

  Scenario: The output of a finished job is served from the first byte
    Given the admin has run "sh -c 'echo one; echo two; echo three'" to the end
    When the user client reads the job's output
    Then it receives stdout "one\ntwo\nthree\n"

  Scenario: A client follows a running job live and the stream ends when the job ends
    Given the admin has started "sh -c 'echo first; sleep 1; echo second'"
    When the user client follows the job's output
    Then "first\n" arrives while the job is still running
    And the stream ends only after the job has ended
    And the whole stdout is "first\nsecond\n"

  Scenario: Stdout and stderr are told apart
    Given the admin has run "sh -c 'echo out; echo err >&2; echo more'" to the end
    When the user client reads the job's output
    Then every message is tagged stdout or stderr
    And the stdout is "out\nmore\n" and the stderr is "err\n"

  Scenario: Five clients reading a running job at once all get the same bytes
    Given the admin has started a job writing 3 MiB of random bytes in three bursts
    When 5 user clients read the job's output at the same time
    Then all 5 receive the same 3145728 bytes
    And no message carries more than 1 MiB

  Scenario: Without follow, a client gets what is there now and the stream ends
    Given the admin has started "sh -c 'echo early; sleep 60'"
    And the job has written "early\n"
    When the user client reads the job's output without following it
    Then it receives stdout "early\n"
    And the admin sees that job RUNNING

  Scenario: Clients that hang up in the middle of a stream leave the server serving
    Given the admin has started "sh -c 'while :; do echo tick; sleep 0.05; done'"
    When 20 user clients in turn read the first message of the job's output and hang up
    Then the user can still read the job's status, and it is RUNNING
