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

  # ---- where the server is: contexts, environment, flags ----------------------------------------

  Scenario: A context in the config file names the server and the files, from any directory
    Given the jobmgr-server program is running
    And a config file whose current context "lab" reaches it with the admin certificate
    When jobmgr-client list is run in an empty directory with no flags
    Then it exits 0
    And its stdout contains "STATE"

  Scenario: The environment overrides the context, and flags override the environment
    Given the jobmgr-server program is running
    And a config file whose current context "lab" reaches it with the admin certificate
    When jobmgr-client start true is run with JOBMGR_CERT and JOBMGR_KEY naming the user certificate
    Then it exits 1
    And its stderr is one line containing "role 'user' may not call /job.JobManager/Start"
    When jobmgr-client list is run with JOBMGR_ADDR naming a port where nothing listens, and --port naming the server's
    Then it exits 0

  Scenario: context use switches the current context, and context list marks it
    Given the jobmgr-server program is running
    And a config file whose current context "lab" reaches it with the admin certificate
    And the config file also has a context "other" at localhost:9
    When jobmgr-client context use other is run
    Then it exits 0
    When jobmgr-client context list is run
    Then its stdout has a line with "*", "other" and "localhost:9"
    When jobmgr-client --context lab context show is run
    Then its stdout contains "(context lab)"

  Scenario: A certificate given without its key is refused, naming both flags
    Given the jobmgr-server program is running
    When jobmgr-client list is run with --cert and no --key
    Then it exits 1
    And its stderr is one line: "error: --cert is set (flag) but --key is not: give both, a certificate and its own private key"

  Scenario: A CA that did not sign the server's certificate is explained
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client with another CA's certificate as --ca
    Then it exits 1
    And its stderr is one line containing "the server's certificate is not signed by the CA in"

  # ---- run's exit status and its ending line: the job's, or what happened to it ------------
  # However run ends, its last line on stderr says so, in one form: "jobmgr-client: job ID
  # HOW[: WHY]". JOB8 stands for the first 8 hex digits of the job's id.

  Scenario: run of a job that exits by itself keeps its output its own and says how it ended
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run -- sh -c 'echo hello; echo oops >&2; exit 3'
    Then it exits 3
    And its stdout is "hello\n"
    And its stderr is "oops\n" and then the line "jobmgr-client: job JOB8 exited with code 3"

  Scenario: run --quiet leaves the ending line out when the job exits by itself
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run --quiet -- sh -c 'echo hello; echo oops >&2; exit 3'
    Then it exits 3
    And its stdout is "hello\n" and its stderr is "oops\n"

  Scenario: The ending line starts a line of its own after a job's unfinished last line
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run -- sh -c 'printf oops >&2'
    Then it exits 0
    And its stderr is "oops\n" and then the line "jobmgr-client: job JOB8 exited with code 0"

  Scenario: run exits 128 + the signal that ended the job, and says which
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run -- sh -c 'kill -9 $$'
    Then it exits 137
    And its last line on stderr is "jobmgr-client: job JOB8 killed by signal 9 (SIGKILL)"

  Scenario: run --quiet still says that the OOM killer ended the job
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run --quiet --memory 32M -- python3 -c 'print(len(str(7) * (128 * 1024 * 1024)))'
    Then it exits 137
    And its stderr is only the line "jobmgr-client: job JOB8 OOM-killed by signal 9 (SIGKILL): the memory limit was exceeded and the OOM killer fired"

  Scenario: run exits 127 for a command that is not found, and says no job started
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run -- no-such-command
    Then it exits 127
    And its stderr is only a line starting with "jobmgr-client: job failed to start: command not found"

  Scenario: run exits 126 for a file that cannot be executed, and says no job started
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run -- /etc/passwd
    Then it exits 126
    And its stderr is only a line starting with "jobmgr-client: job failed to start: "
    And its stderr contains "is not executable"

  Scenario: run exits 125 when jobmgr refuses the job, and says no job started
    Given the jobmgr-server program is running
    When the user runs jobmgr-client run -- true
    Then it exits 125
    And its stderr is only a line starting with "jobmgr-client: job failed to start: role 'user' may not call /job.JobManager/Start"

  Scenario: A usage error of run exits 125, and of any other command 2
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run --memory lots -- true
    Then it exits 125
    When the admin runs jobmgr-client start
    Then it exits 2
    When the admin runs jobmgr-client list --state sleeping
    Then it exits 2
    When the admin runs jobmgr-client start --quiet -- true
    Then it exits 2

  Scenario: run whose stdout closes (| head -1) stops the job, exits 141 and says why
    Given the jobmgr-server program is running
    When the admin pipes jobmgr-client run -- sh -c 'while :; do echo y; sleep 0.01; done' into a reader of one line
    Then it exits 141 within 20 seconds
    And its last line on stderr is "jobmgr-client: job JOB8 stopped by signal 15 (SIGTERM): stdout was closed"
    And jobmgr-client status says the job is STOPPED

  Scenario: SIGTERM to run stops the job, prints its last words and exits 143
    Given the jobmgr-server program is running
    And the admin is following "sh -c 'trap "echo bye; exit 4" TERM; echo started; while :; do sleep 0.1; done'" with jobmgr-client run
    When the follower gets SIGTERM
    Then the follower exits 143 within 20 seconds
    And the follower's stdout is "started\nbye\n"
    And the follower's last line on stderr is "jobmgr-client: job JOB8 stopped, exited with code 4: jobmgr-client got SIGTERM"
    And jobmgr-client status says the job is STOPPED

  Scenario: --stop-on-interrupt prints what the job wrote in its grace period and exits as it did
    Given the jobmgr-server program is running
    And the admin is following "sh -c 'trap "echo bye; exit 4" TERM; echo started; while :; do sleep 0.1; done'" with jobmgr-client run --stop-on-interrupt
    When the follower gets Ctrl-C
    Then the follower exits 4 within 20 seconds
    And the follower's stdout is "started\nbye\n"
    And the follower's last line on stderr is "jobmgr-client: job JOB8 stopped, exited with code 4: Ctrl-C (--stop-on-interrupt)"

  Scenario: Ctrl-C detaches from run, and the reattach hint keeps the flags that reach the server
    Given the jobmgr-server program is running
    And the admin is following "sh -c 'echo started; exec sleep 60'" with jobmgr-client run
    When the follower gets Ctrl-C
    Then the follower exits 130 within 10 seconds
    And the follower's last line on stderr starts with "jobmgr-client: job JOB8 detached, still running: reattach with: "
    And the follower's stderr names the server's --port in "output JOB"
    And jobmgr-client status says the job is RUNNING

  Scenario: run of a job whose launcher dies says the job is lost, and exits 125
    Given the jobmgr-server program is running
    And the admin is following "sh -c 'echo started; exec sleep 600'" with jobmgr-client run
    When the server and its launcher are killed with SIGKILL, and the server started again on the same port
    Then the follower exits 125 within 60 seconds
    And the follower's last line on stderr starts with "jobmgr-client: job JOB8 lost: "
    And the follower's last line on stderr contains "launcher"

  Scenario: run that cannot get the server back says the job may still be running, and exits 125
    Given the jobmgr-server program is running
    And the admin is following "sh -c 'echo started; exec sleep 600'" with jobmgr-client --reconnect-for 2s run
    When the server is killed with SIGKILL
    Then the follower exits 125 within 30 seconds
    And the follower's last line on stderr starts with "jobmgr-client: job JOB8 unknown, may still be running: lost the connection to jobmgr-server"
    When the server is started again on the same port
    Then jobmgr-client status says the job is RUNNING

  # ---- resume: a dropped connection loses and repeats nothing ----------------------------------

  Scenario: run follows a job across a crash and restart of the server, byte for byte
    Given the jobmgr-server program is running
    And the admin is following "sh -c 'i=0; while [ $i -lt 400 ]; do echo line $i; i=$((i+1)); sleep 0.01; done; exit 4'" with jobmgr-client run
    When the follower has printed "line 20"
    And the server is killed with SIGKILL and started again on the same port
    Then the follower exits 4 within 60 seconds
    And the follower's stdout is lines "line 0" to "line 399"
    And the follower's stderr contains "lost the connection"
    And the follower's last line on stderr is "jobmgr-client: job JOB8 exited with code 4"

  # ---- output timestamps: when the server captured each line -----------------------------------

  Scenario: output --timestamps puts before each line the time the server captured it
    Given the jobmgr-server program is running
    When the admin notes the time and runs jobmgr-client start -- sh -c 'echo one; sleep 2; echo two >&2; sleep 2; echo three'
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client output --timestamps JOB
    Then it exits 0
    And its stdout and stderr are the lines "one", "two" and "three", each after an RFC 3339 time
    And those times are at least a second apart, in order, between the start and now

  Scenario: output --since 3s shows only what the job printed in the last 3 seconds
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- sh -c 'echo old; sleep 5; echo new'
    Then it exits 0 and prints the new job's id
    When the job has written "old\nnew\n"
    And the admin runs jobmgr-client output --since 3s JOB
    Then it exits 0
    And its stdout is "new\n"

  Scenario: Output a server logged without capture times still reads, without times
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- sh -c 'echo one; echo two >&2'
    Then it exits 0 and prints the new job's id
    When I wait until the job has ended
    And the server is killed with SIGKILL
    And the job's log is rewritten without its time marks, as a server without capture times wrote it
    And the server is started again on the same port
    And the admin runs jobmgr-client output JOB
    Then it exits 0
    And its stdout is "one\n" and its stderr is "two\n"
    When the admin runs jobmgr-client output --timestamps JOB
    Then it exits 0
    And its stdout is "- one\n"
    And its stderr is "- two\n" and then the line "jobmgr-client: lines shown after '-' have no capture time: a jobmgr-server without capture times logged them"
    When the admin runs jobmgr-client output --since 1h JOB
    Then it exits 0
    And its stdout is ""

  # ---- ids and listing -------------------------------------------------------------------------

  Scenario: A unique prefix names a job; one shared by several jobs is refused, listing them
    Given the jobmgr-server program is running
    And the admin has started 17 jobs
    When the admin runs jobmgr-client status with the first 8 characters of a job's id
    Then it exits 0
    And its stdout contains the job's whole id
    When the admin runs jobmgr-client status with a 1-character prefix that two jobs share
    Then it exits 1
    And its stderr is one line containing "starts the ids of several jobs"
    When the admin runs jobmgr-client status 0000-not-hex
    Then it exits 1
    And its stderr is one line containing "is not a job id or the start of one"

  Scenario: stop and status take several ids; list -q prints ids, in any state's case
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start sleep 60
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client start sleep 61
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client list -q --state RUNNING
    Then its stdout is the two jobs' ids, one per line
    When the admin stops both jobs with one jobmgr-client stop
    Then it exits 0
    And its stdout has a line "stopped job ...: STOPPED by signal 15" for each of them
    When the admin runs jobmgr-client status --json with both ids
    Then it exits 0
    And the JSON is an array of 2 jobs, both STOPPED

  Scenario: output takes -f, as docker logs does
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- echo hi
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client output -f JOB
    Then it exits 0
    And its stdout is "hi\n"

  Scenario: jobmgr-client completion writes a bash script that completes commands and flags
    When jobmgr-client completion bash is run
    Then it exits 0
    And bash, given that script, completes "jobmgr-client sta" to "start status"
    And bash, given that script, completes "jobmgr-client list --st" to "--state"
