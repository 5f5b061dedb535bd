Feature: Broken clients and heavy load do not wear the server down
  A client that stops reading holds back only its own stream: gRPC flow control keeps the
  server's memory bounded, and other clients go on. Clients that vanish mid-stream leave no
  file descriptor, thread or memory behind. Many clients at once get their answers, and every
  job any of them started is accounted for. Past the configured number of running jobs a
  Start is refused with RESOURCE_EXHAUSTED instead of the server falling over.

  Scenario: Clients that open Output and never read again cost the server bounded memory
    Given the jobmgr-server program is running
    And the admin has started a job writing 256 MiB to stdout
    When 4 clients open its Output stream with a 2 GiB window, take one message, and never read again
    And another client reads the job's whole output meanwhile
    Then the other client received all 256 MiB
    And the server's memory grew by less than 64 MiB
    And the Status of that job answered within 1 second throughout

  Scenario: 1000 clients vanishing mid-stream leave nothing behind
    Given the jobmgr-server program is running
    And the admin has started a job that printed 2 MiB and goes on printing
    And the server's holdings are measured after it has served every kind of call
    When 1000 clients each open its Output stream, take one message and vanish, half by a TCP reset and half by cancelling the call
    Then the server still serves and holds nothing more than before
    And its memory grew by less than 32 MiB

  Scenario: 50 concurrent clients mixing Start, Status, Output and Stop for 10 seconds
    Given the jobmgr-server program is running
    When 50 clients mix Start, Status, Output and Stop for 10 seconds
    Then no call failed
    And every job a client started is listed once, and ended with the exit or stop and the output it should
    And the p99 Status latency is reported, and is under 2 seconds
    And once the server is stopped nothing of any job is left: no process, cgroup or launcher

  @long
  Scenario: 200 concurrent clients mixing Start, Status, Output and Stop for 60 seconds
    Given the jobmgr-server program is running
    When 200 clients mix Start, Status, Output and Stop for 60 seconds
    Then no call failed
    And every job a client started is listed once, and ended with the exit or stop and the output it should
    And the p99 Status latency is reported, and is under 2 seconds
    And once the server is stopped nothing of any job is left: no process, cgroup or launcher

  Scenario: Past the server-wide cap on running jobs a Start gets RESOURCE_EXHAUSTED
    Given the jobmgr-server program is running with "--max-running 5"
    When 20 clients each start a long job at the same moment
    Then exactly 5 starts succeeded and 15 got RESOURCE_EXHAUSTED saying "5"
    When the admin stops one of the running jobs
    Then one more start succeeds, and the next is refused again
