Feature: The jobmgr-server, jobmgr-client and jobmgr-certs programs
  An operator runs jobmgr-server as root and drives it with jobmgr-client from another
  terminal. A job's stdout and stderr come out on the client's stdout and stderr, byte for
  byte. Every failure is one line on stderr and a non-zero exit status, never a traceback.
  In the commands below, JOB stands for the id the last start printed.

  Scenario: An admin starts a job, reads its output and asks how it ended
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- sh -c 'echo hello; echo oops >&2; exit 3'
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client output JOB
    Then it exits 0
    And its stdout is "hello\n" and its stderr is "oops\n"
    When the admin runs jobmgr-client status JOB --json
    Then it exits 0
    And the JSON says state "EXITED", exit_code 3 and owner the admin certificate's Subject
    When the admin runs jobmgr-client status JOB
    Then it exits 0
    And its stdout contains "EXITED with code 3"

  Scenario: Output is passed through byte for byte, binary included
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- printf '\000\377\r\n\001'
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client output JOB
    Then it exits 0
    And its stdout is the bytes 00 ff 0d 0a 01

  Scenario: An admin stops a running job, and the list shows it stopped
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start sleep 60
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client stop JOB
    Then it exits 0
    And its stdout contains "STOPPED"
    When the user runs jobmgr-client list
    Then it exits 0
    And its stdout has a line with "JOB", "STOPPED" and "sleep 60"

  Scenario: A job that exits 4 on the SIGTERM of a stop is shown STOPPED with code 4
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- sh -c 'trap "exit 4" TERM; echo ready; sleep 60 & wait'
    Then it exits 0 and prints the new job's id
    When the job has written "ready\n"
    And the admin runs jobmgr-client stop JOB
    Then it exits 0
    And its stdout contains "STOPPED with code 4"
    When the admin runs jobmgr-client status JOB --json
    Then it exits 0
    And the JSON says state "STOPPED", exit_code 4 and owner the admin certificate's Subject

  Scenario: An unknown job id is one clear error line
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client status 5a0e8a5e-1c1f-4b8e-9d0e-3f3f3f3f3f3f
    Then it exits 1
    And its stderr is one line: "error: no job with id '5a0e8a5e-1c1f-4b8e-9d0e-3f3f3f3f3f3f'"

  Scenario: A malformed job id is refused
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client output not-a-job-id
    Then it exits 1
    And its stderr is one line containing "'not-a-job-id' is not a job id"

  Scenario: A command that does not exist is refused at start
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start no-such-command --flag
    Then it exits 1
    And its stderr is one line containing "command not found"

  Scenario: A user may not start jobs
    Given the jobmgr-server program is running
    When the user runs jobmgr-client start true
    Then it exits 1
    And its stderr is one line: "error: role 'user' may not call /job.JobManager/Start (it may call: List, Output, Status)"

  Scenario: A client certificate the server does not trust is explained
    Given the jobmgr-server program is running
    When the other-CA runs jobmgr-client list
    Then it exits 1
    And its stderr is one line containing "the server refused the TLS handshake"

  Scenario: A server that cannot be reached is explained
    When the admin points jobmgr-client at a port where nothing listens
    Then it exits 1
    And its stderr is one line containing "cannot connect to jobmgr-server at localhost:"

  Scenario: jobmgr-server stops its jobs and exits 0 on SIGTERM
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start sleep 60
    Then it exits 0 and prints the new job's id
    When the server is sent SIGTERM
    Then the server exits 0 within 10 seconds
    And no cgroup of its jobs is left

  Scenario: jobmgr-server refuses to run as a user other than root
    When jobmgr-server is started as user nobody
    Then it exits 1
    And its stderr is one line containing "must run as root"

  Scenario: jobmgr-certs writes a working set of certificates, and keeps them
    When jobmgr-certs --out certs is run
    Then it exits 0
    And certs holds ca, server, client_admin and client_user certificates with keys readable only by root
    And client_admin.pem has Subject "O=admin,CN=client_admin" and client_user.pem "O=user,CN=client_user"
    And server.pem is valid for localhost, 127.0.0.1 and ::1
    When jobmgr-certs --out certs is run
    Then it exits 0
    And no key in certs has changed
    When jobmgr-certs --out certs --force is run
    Then it exits 0
    And every key in certs has changed
    Given the jobmgr-server program is running with the certificates in certs
    When the admin lists jobs using the certificates in certs and --host 127.0.0.1
    Then it exits 0

  Scenario: Every program explains its flags and their defaults
    When I ask jobmgr-client for --help
    Then it exits 0
    And its stdout mentions "--port", "31234" and "./certs/client_admin.pem"
    When I ask jobmgr-server for --help
    Then it exits 0
    And its stdout mentions "--state-dir", "/var/lib/jobmgr" and "./certs/server.key"
    When I ask jobmgr-certs for --help
    Then it exits 0
    And its stdout mentions "--out", "./certs" and "--force"
