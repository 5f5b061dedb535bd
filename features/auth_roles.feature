Feature: A client's role decides which calls it may make
  The role is the Subject O of the client certificate. "admin" may start, stop, inspect,
  read and list jobs; "user" may only inspect, read and list them. Every call is checked,
  the Output stream included. A certificate with no O, an unknown O or several O values
  gets nothing. The caller's whole certificate Subject, role included, becomes the owner of
  the jobs it starts.

  Background:
    Given a jobmgr server
    And the admin has run "echo hello" to the end

  Scenario: Each certificate may make exactly the calls of its role
    When each client below makes each call on that job
    Then the answers are
      | certificate | Start             | Stop              | Status            | Output            | List              |
      | admin       | OK                | OK                | OK                | OK                | OK                |
      | user        | PERMISSION_DENIED | PERMISSION_DENIED | OK                | OK                | OK                |
      | no-O        | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED |
      | unknown-O   | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED |
      | two-O       | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED |

  Scenario: A user may read a job's output
    When the user client reads the job's output
    Then it receives stdout "hello\n"

  Scenario: A user may not start a job, and is told why
    When the user client starts "echo hi"
    Then the call fails with PERMISSION_DENIED
    And the error message mentions "'user'" and "/job.JobManager/Start"

  Scenario: A user may not stop a running job
    Given the admin has started "sleep 60"
    When the user client stops that job
    Then the call fails with PERMISSION_DENIED
    And the error message mentions "'user'" and "/job.JobManager/Stop"
    And the admin sees that job RUNNING

  Scenario: A certificate without a role cannot read any output
    When the no-O client reads the job's output
    Then the call fails with PERMISSION_DENIED
    And the error message mentions "no Subject O" and "/job.JobManager/Output"

  Scenario: An unknown role is refused by name
    When the unknown-O client asks for the job's status
    Then the call fails with PERMISSION_DENIED
    And the error message mentions "'intern'" and "/job.JobManager/Status"

  Scenario: A certificate naming two roles is refused
    When the two-O client asks for the job's status
    Then the call fails with PERMISSION_DENIED
    And the error message mentions "'admin', 'user'" and "exactly one"

  Scenario: The caller's whole Subject, role included, is recorded as the job's owner
    When the admin client starts "true"
    Then the call succeeds
    And the user sees that job owned by the admin certificate's Subject, "CN=client_admin,OU=...,O=admin"
