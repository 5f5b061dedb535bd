Feature: jobmgr.client, the Python client library
  A program starts, follows, stops and inspects jobs through jobmgr.client against a real
  jobmgr-server over mutual TLS 1.3, and gets frozen dataclasses and typed errors back, never
  gRPC's own types. JOB stands for the id of the last job started.

  Scenario: Client.from_env finds the server through JOBMGR_* variables and run returns the exit code
    Given the jobmgr-server program is running
    And JOBMGR_ADDR, JOBMGR_CA, JOBMGR_CERT and JOBMGR_KEY name it and the admin certificate
    When a program runs "sh -c 'echo out; echo err >&2; exit 3'" with Client.from_env().run
    Then run returned 3
    And the job's stdout came to the program's stdout as "out\n" and its stderr as "err\n"

  Scenario: status returns a typed JobStatus
    Given the jobmgr-server program is running
    And a program has a Client for it with the admin certificate
    When the program starts "sh -c 'exit 5'" and waits for it
    Then the status is a JobStatus with state EXITED, exit_code 5, exit_status 5 and aware datetimes
    And a job killed by SIGKILL has exit_code None, signal 9 and exit_status 137

  Scenario Outline: Each kind of failure is its own exception, chosen by status code
    Given the jobmgr-server program is running
    And a program has a Client for it with the <kind> certificate
    When the program calls <call>
    Then it raises <error> with the server's message

    Examples:
      | kind  | call                                          | error            |
      | admin | status("5a0e8a5e-1c1f-4b8e-9d0e-3f3f3f3f3f3f") | JobNotFound      |
      | user  | start(["true"])                               | PermissionDenied |
      | admin | start(["no-such-command"])                    | CommandNotFound  |
      | admin | start(["/etc/passwd"])                        | NotExecutable    |
      | admin | start(JobSpec(["true"], run_as="root"))       | InvalidRequest   |
      | admin | output(JOB, offset=1000).__next__()           | InvalidRequest   |

  Scenario: A server that cannot be reached is ConnectionFailed, saying why
    Given a program has a Client for a port where nothing listens
    When the program calls list().__next__()
    Then it raises ConnectionFailed with "nothing listens there"

  Scenario: list iterates over every page
    Given the jobmgr-server program is running
    And a program has a Client for it with the admin certificate
    And the admin has started 5 jobs
    When the program lists the jobs 2 to a page
    Then it gets the 5 jobs, oldest first

  Scenario: A unique id prefix names a job; a shared one raises AmbiguousJobId
    Given the jobmgr-server program is running
    And a program has a Client for it with the admin certificate
    And the admin has started 17 jobs
    Then the first 8 characters of each job's id resolve to that job
    And a 1-character prefix that two jobs share raises AmbiguousJobId naming both

  Scenario: output resumes across a crash and restart of the server, each byte exactly once
    Given the jobmgr-server program is running
    And a program has a Client for it with the admin certificate
    When the program starts "sh -c 'i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); sleep 0.01; done; exit 4'" and reads its output in a thread
    And the program has read "line 20"
    And the server is killed with SIGKILL and started again on the same port
    Then the program's reader ends within 60 seconds with lines "line 0" to "line 399"
    And each chunk's offset is the number of bytes before it
    And the reader's final status is EXITED with code 4

  Scenario: output gives up on a server that stays away, after the time it was given
    Given the jobmgr-server program is running
    And a program has a Client for it with the admin certificate that tries a lost stream again for 3 seconds
    When the program starts "sh -c 'echo started; exec sleep 60'" and reads its output in a thread
    And the program has read "started"
    And the server is killed with SIGKILL
    Then the program's reader raises ConnectionFailed within 30 seconds, with "could not get it back within 3s"
    When the server is started again on the same port
    Then the program's Client finds the job RUNNING within 10 seconds

  Scenario: output from an offset gives the rest of the output, and a tail says where it starts
    Given the jobmgr-server program is running
    And a program has a Client for it with the admin certificate
    When the program starts "sh -c 'echo one; sleep 0.3; echo two >&2; sleep 0.3; echo three'" and waits for it
    Then output from offset 6 gives "o\n" of stderr at 6, then "three\n" of stdout at 8
    And output with tail 1 gives "three\n" and leaves the reader at offset 14

  Scenario: Each chunk of output carries captured_at, when the server took it from the job
    Given the jobmgr-server program is running
    And a program has a Client for it with the admin certificate
    When the program notes the time, starts "sh -c 'echo one; sleep 2; echo two >&2'" and waits for it
    Then output gives "one\n" and "two\n", each with an aware captured_at, at least a second apart, between the noted time and now
    And output since the second chunk's captured_at gives "two\n" alone

  Scenario: AsyncClient does the same in asyncio
    Given the jobmgr-server program is running
    When an asyncio program with an AsyncClient for it runs "sh -c 'echo hi; exit 6'" and lists the jobs
    Then run returned 6 and the list holds that job, EXITED

  Scenario: Importing jobmgr.client before grpc makes the process TLS 1.3 only, and says so
    When a fresh Python imports jobmgr.client and then grpc
    Then GRPC_SSL_CIPHER_SUITES is set and tls13_floor_active() is true
    When a fresh Python imports grpc and then jobmgr.client
    Then GRPC_SSL_CIPHER_SUITES is not set and tls13_floor_active() is false
