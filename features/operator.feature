Feature: Operating jobmgr: following jobs, per-job settings and server policy
  An operator drives a real jobmgr-server with jobmgr-client. `run` (or `start --follow`)
  behaves like the job itself: the job's stdout and stderr on ours, its exit status as ours
  (128 + the signal when a signal ended it). Each job may set its limits, environment,
  working directory, maximum runtime and user; the server's configuration file sets the
  defaults, the maxima and who may see what, and flags override the file. In the commands
  below, JOB stands for the id of the last job started.

  Scenario: The list shows each job's state, exit code, owner and command, and filters by state
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run -- sh -c 'exit 3'
    And the admin runs jobmgr-client start sleep 60
    Then it exits 0 and prints the new job's id
    When the user runs jobmgr-client list
    Then it exits 0
    And its stdout lists 2 jobs
    When the user runs jobmgr-client list --state running
    Then it exits 0
    And its stdout lists 1 job
    And its stdout has a line with "JOB", "RUNNING" and "sleep 60"
    When the user runs jobmgr-client list --state exited --json
    Then it exits 0
    And the JSON lists 1 job: state "EXITED", exit_code 3, owner the admin certificate's Subject, command "sh -c 'exit 3'"

  Scenario: A long list comes in pages, and jobmgr-client list fetches every page
    Given the jobmgr-server program is running
    When the admin starts 7 jobs of "true" over gRPC
    Then the user's List, 3 jobs at a time, gives pages of 3, 3 and 1 jobs, oldest first
    And a List with the page token "nonsense" fails with INVALID_ARGUMENT naming "page_token"
    When the user runs jobmgr-client list --page-size 2
    Then it exits 0
    And its stdout lists 7 jobs

  Scenario Outline: run streams the job's output and exits with the job's exit code
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run -- sh -c 'echo out; echo err >&2; exit <code>'
    Then it exits <code>
    And its stdout is "out\n"
    And its stderr is "err\n" and then the line "jobmgr-client: job JOB8 exited with code <code>"

    Examples:
      | code |
      | 0    |
      | 3    |

  Scenario: start --follow is run under another name
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start --follow -- sh -c 'echo hello; exit 3'
    Then it exits 3
    And its stdout is "hello\n"
    And its stderr is only the line "jobmgr-client: job JOB8 exited with code 3"

  Scenario: A followed job killed from another client gives 128 + 9
    Given the jobmgr-server program is running
    And the admin is following "sh -c 'echo started; exec sleep 60'" with jobmgr-client run
    When the admin runs jobmgr-client stop --grace 0 JOB
    Then it exits 0
    And the follower exits 137 within 10 seconds
    And the follower's stdout is "started\n"
    And the follower's last line on stderr is "jobmgr-client: job JOB8 stopped by signal 9 (SIGKILL): stopped on request"

  Scenario: Ctrl-C detaches from a followed job, which goes on running
    Given the jobmgr-server program is running
    And the admin is following "sh -c 'echo started; exec sleep 60'" with jobmgr-client run
    When the follower gets Ctrl-C
    Then the follower exits 130 within 10 seconds
    And the follower's last line on stderr starts with "jobmgr-client: job JOB8 detached, still running"
    And the follower's stderr contains " output JOB"
    And jobmgr-client status says the job is RUNNING

  Scenario: With --stop-on-interrupt, Ctrl-C stops the followed job
    Given the jobmgr-server program is running
    And the admin is following "sh -c 'echo started; exec sleep 60'" with jobmgr-client run --stop-on-interrupt
    When the follower gets Ctrl-C
    Then the follower exits 143 within 10 seconds
    And jobmgr-client status says the job is STOPPED

  Scenario: output --tail prints only the last lines
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- seq 1 10
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client output --tail 3 JOB
    Then it exits 0
    And its stdout is "8\n9\n10\n"

  Scenario: output --no-follow prints what is there now, while the job runs on
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client start -- sh -c 'echo first; exec sleep 60'
    Then it exits 0 and prints the new job's id
    When the job has written "first\n"
    And the admin runs jobmgr-client output --no-follow JOB
    Then it exits 0 within 5 seconds
    And its stdout is "first\n"
    And jobmgr-client status says the job is RUNNING

  Scenario: An argument that is not UTF-8 reaches the job byte for byte
    Given the jobmgr-server program is running
    When the admin starts printf %s, plus an argument of the bytes ff fe 41, with jobmgr-client start
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client output JOB
    Then its stdout is the bytes ff fe 41
    And the status of the job has argv_bytes "printf", "%s" and the bytes ff fe 41
    When the admin runs jobmgr-client list
    Then its stdout has a line with "JOB", "EXITED" and "printf %s '\xff\xfeA'"

  Scenario: A job starts from a minimal clean environment, plus the variables given
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run --env GREETING=hello --env LANG=C -- env
    Then it exits 0
    And its stdout lists exactly the variables GREETING=hello, HOME=/scratch, LANG=C and PATH

  Scenario: --inherit-env passes the client's environment on to the job
    Given the jobmgr-server program is running
    When the admin, with MOOD=cheerful in its environment, runs jobmgr-client run --inherit-env -- sh -c 'echo $MOOD'
    Then it exits 0
    And its stdout is "cheerful\n"

  Scenario: --cwd sets the job's working directory
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run --cwd /tmp -- pwd
    Then it exits 0
    And its stdout is "/tmp\n"

  Scenario: --timeout stops a job that runs too long, and says so
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run --timeout 1s -- sleep 60
    Then it exits 143 within 10 seconds
    And its last line on stderr starts with "jobmgr-client: job JOB8 stopped by signal 15 (SIGTERM): timed out after 1."

  Scenario: Jobs run as a uid of their own by default, as nobody when they ask, and may not run as root
    Given the jobmgr-server program is running
    When the admin runs jobmgr-client run -- id -u
    Then it exits 0
    And its stdout is one uid of the range 1879048192-1879113727
    When the admin runs jobmgr-client run --run-as nobody -- id -u
    Then it exits 0
    And its stdout is "65534\n"
    When the admin runs jobmgr-client run --run-as root -- id -u
    Then it exits 125
    And its stderr is only the line "jobmgr-client: job failed to start: jobs may not run as 'root' here (allowed: nobody)"

  Scenario: A server configured to allow root runs a job as root of its own user namespace when asked
    Given the jobmgr-server program is running with this configuration:
      """
      [jobs]
      allowed_run_as = ["nobody", "root"]
      """
    When the admin runs jobmgr-client run --run-as root -- sh -c 'id -u; cat /proc/self/uid_map'
    Then it exits 0
    And its stdout is "0", then root's mapping to one uid of the range 1879048192-1879113727
    When the admin runs jobmgr-client run -- id -u
    Then it exits 0
    And its stdout is one uid of the range 1879048192-1879113727

  Scenario Outline: A job may not ask for more than the server's maxima
    Given the jobmgr-server program is running with this configuration:
      """
      [limits.max]
      memory = "1G"
      pids = 2000
      """
    When the admin asks jobmgr-server to start "true" with <limit> <value>
    Then the call fails with INVALID_ARGUMENT
    And the error message mentions "limit <name>" and "above the server's maximum"

    Examples:
      | limit    | value | name         |
      | --memory | 2G    | memory_bytes |
      | --memory | 0     | memory_bytes |
      | --pids   | 5000  | pids         |

  Scenario: Limits within the maxima are applied, and shown in the status
    Given the jobmgr-server program is running with this configuration:
      """
      [limits.max]
      memory = "1G"
      """
    When the admin runs jobmgr-client start --memory 256M --cpu 0.5 --pids 100 -- true
    Then it exits 0 and prints the new job's id
    When the admin runs jobmgr-client status JOB
    Then its stdout contains "limits:      cpu 0.5, memory 256.0 MiB, io read 10.0 MiB/s, io write 10.0 MiB/s, pids 100"
    When the admin runs jobmgr-client start --memory 2G -- true
    Then it exits 1
    And its stderr is one line containing "limit memory_bytes = 2147483648 is above the server's maximum of 1073741824"

  Scenario: A server running its max_running jobs refuses more with RESOURCE_EXHAUSTED
    Given the jobmgr-server program is running with this configuration:
      """
      [jobs]
      max_running = 1
      """
    When the admin runs jobmgr-client start sleep 60
    Then it exits 0 and prints the new job's id
    When the admin asks jobmgr-server to start "true"
    Then the call fails with RESOURCE_EXHAUSTED

  Scenario: Flags override the configuration file, which overrides the built-in defaults
    Given a configuration file:
      """
      [server]
      port = 4000

      [jobs]
      grace = "7s"
      output_cap = "10M"

      [limits.max]
      memory = "1G"
      """
    When jobmgr-server --config FILE --grace 3s --max-limit cpu=2 --print-config is run
    Then it exits 0
    And the printed configuration says
      | setting            | value       |
      | server.port        | 4000        |
      | server.host        | "localhost" |
      | jobs.grace         | "3s"        |
      | jobs.output_cap    | "10M"       |
      | sandbox.uid_range  | "1879048192-1879113727" |
      | limits.max.memory  | "1G"        |
      | limits.max.cpu     | 2.0         |
      | limits.default.cpu | 1.0         |
      | access.user_sees   | "all"       |

  Scenario: The example configuration in docs/ spells out the built-in defaults
    When jobmgr-server --print-config is run with and without --config docs/jobmgr.example.toml
    Then both print the same configuration

  Scenario: A misspelt setting in the configuration file is refused, by name
    Given a configuration file:
      """
      [limits.max]
      memroy = "1G"
      """
    When jobmgr-server --config FILE --print-config is run
    Then it exits 1
    And its stderr is one line containing "unknown limit 'memroy' in [limits.max]"

  Scenario: The health check answers SERVING to both roles, over mutual TLS only
    Given the jobmgr-server program is running
    Then the admin's health check of "job.JobManager" answers SERVING
    And the user's health check of "" answers SERVING
    And the no-O client's health check fails with PERMISSION_DENIED
    And a health check without a client certificate fails with UNAVAILABLE

  Scenario: Server reflection lists and describes job.JobManager
    Given the jobmgr-server program is running
    Then reflection, asked by the user, lists the services "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection" and "job.JobManager"
    And reflection describes job.JobManager with the methods Start, Stop, Status, Output and List

  Scenario: With user_sees = "own", a user sees only the jobs it started
    Given the jobmgr-server program is running with this configuration:
      """
      [access]
      user_sees = "own"

      [access.roles]
      user = ["Start", "Status", "Output", "List"]
      """
    When the admin runs jobmgr-client start -- echo admin-job
    Then it exits 0 and prints the new job's id
    When the user runs jobmgr-client status JOB
    Then it exits 1
    And its stderr is one line: "error: no job with id 'JOB'"
    When the user runs jobmgr-client output JOB
    Then it exits 1
    And its stderr is one line: "error: no job with id 'JOB'"
    When the user runs jobmgr-client run -- echo user-job
    Then it exits 0
    When the user runs jobmgr-client list
    Then its stdout lists 1 job
    And its stdout has a line with "client_user", "EXITED" and "echo user-job"
    When the admin runs jobmgr-client list
    Then its stdout lists 2 jobs

  Scenario: Each call is logged on one line: method, caller, role, job, code and duration
    Given the jobmgr-server program is running with flags "--log-format json"
    When the admin runs jobmgr-client start true
    Then it exits 0 and prints the new job's id
    When the user runs jobmgr-client stop JOB
    Then it exits 1
    And the server logged method "/job.JobManager/Start", caller "client_admin", role "admin", job JOB and code "OK"
    And the server logged method "/job.JobManager/Stop", caller "client_user", role "user", job JOB and code "PERMISSION_DENIED"
    And no log line holds certificate or key material
