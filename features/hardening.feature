Feature: The server holds against hostile clients and hostile jobs, before and after login
  Checked against the real jobmgr-server program over real mutual TLS. A job running as
  nobody cannot make the server run its code, nor read the server's records. Nobody, with a
  certificate or without one, can take every connection, stream or file descriptor the server
  has: past each limit the newcomer is refused, with a message naming the limit where there is
  a caller to read one, and the admin is still served. Whatever a caller sends, the server's
  log stays one line per record, with every value escaped.

  # ---- helpers start isolated --------------------------------------------------------------

  Scenario: A module planted in the server's working directory is never imported
    Given jobmgr-server was started from a directory every user may write to
    And a job running as nobody has written jobmgr/__init__.py into that directory
    When jobmgr-server is stopped and started again from the same directory
    Then a job started after the restart prints "still serving" and exits 0
    And the planted module was never imported

  # ---- state is private ---------------------------------------------------------------------

  Scenario: A state directory left open to other users is made private at start
    Given a state directory left by an older jobmgr: the directory 0755, every file in it 0644
    When jobmgr-server starts on that state directory
    Then a job running as nobody can read neither jobs.db nor launcher.log
    And the state directory and every directory in it are mode 0700, every file 0600

  Scenario: A state directory owned by another user is refused, naming it
    Given a state directory owned by nobody
    When jobmgr-server is started on that state directory
    Then it exits with status 1 naming the state directory and "belongs to uid 65534"

  # ---- connections ---------------------------------------------------------------------------

  Scenario: Connections from one address past connections_per_peer are closed before TLS
    Given the jobmgr-server program is running with "--connections-per-peer 3"
    When 10 TCP connections from 127.0.0.2 are opened and send nothing
    Then 3 of them stay open and the server closes the other 7 within 1 second
    And the admin, connecting from another address, can start a job and read its status
    And the server logged "connections closed" naming connections_per_peer and 127.0.0.2

  Scenario: Past max_connections a new connection is closed as soon as it is accepted
    Given the jobmgr-server program is running with "--max-connections 5"
    When 5 TCP connections from 127.0.0.2 are opened and send nothing
    Then a 6th connection is closed by the server within 1 second
    And the server logged "connections full" naming max_connections
    And once those 5 are closed, the admin gets its Status answered

  Scenario: A connection that does not finish its TLS handshake in time is closed
    Given the jobmgr-server program is running with "--handshake-timeout 1s"
    When one TCP connection sends nothing and another sends half a TLS ClientHello
    Then the server closes both between 0.5 and 3 seconds after they were opened

  Scenario: A connection with no call in progress is closed after the idle timeout
    Given the jobmgr-server program is running with "--idle-timeout 1s"
    And the admin has started a job that prints a line every 0.1 seconds
    When one connection follows that job's output and another makes one call and then waits
    Then within 4 seconds the waiting connection is sent GOAWAY "idle" and closed
    And the following connection still receives output after 4 seconds

  Scenario: The issue's bare-connection flood, replayed under a file descriptor limit of 1024
    Given jobmgr-server is running with a file descriptor limit of 1024, soft and hard
    When 1100 TCP connections from 127.0.0.2 are opened and send nothing
    Then the admin, connecting from another address, can start a job and read its status
    And the server holds fewer than 1024 file descriptors

  # ---- streams and calls ---------------------------------------------------------------------

  Scenario: Streams of one caller past streams_per_caller are refused, naming the limit
    Given the jobmgr-server program is running with "--streams-per-caller 5"
    And the admin has started a job that prints a line every 0.1 seconds
    When the user client opens 6 Output streams on that job, on 3 connections
    Then 5 of them stream and 1 fails with RESOURCE_EXHAUSTED saying "streams_per_caller = 5"
    And the admin can still start a job, read its status and follow its output
    And the server logged "refused" naming streams_per_caller and client_user

  Scenario: A stream past streams_per_connection is reset by the server
    Given the jobmgr-server program is running with "--streams-per-connection 2"
    And the admin has started a job that prints a line every 0.1 seconds
    When a client opens 3 Output streams on one connection at once, by hand
    Then the first 2 streams receive output and the 3rd is reset with ENHANCE_YOUR_CALM

  Scenario: A call past rpcs_in_flight is refused, naming the limit
    Given the jobmgr-server program is running with "--rpcs-in-flight 4"
    And the admin has started a job that prints a line every 0.1 seconds
    When the admin and the user client each hold 2 Output streams on that job
    Then a Status call fails with RESOURCE_EXHAUSTED saying "rpcs_in_flight = 4"
    And once one stream is cancelled, a Status call answers

  Scenario: The issue's stream flood, replayed under a file descriptor limit of 1024
    Given jobmgr-server is running with a file descriptor limit of 1024, soft and hard
    And the admin has started a job that prints a line every 0.1 seconds
    When the user client opens 1100 Output streams on that job, on 11 connections
    Then at most 56 of them stream (streams_per_caller for 1024 fds), nearly all the rest get RESOURCE_EXHAUSTED
    And the admin can still start a job, read its status and follow its output
    And the server holds fewer than 1024 file descriptors

  Scenario: A flood of refusals is a few log lines and a count
    Given the jobmgr-server program is running with "--streams-per-caller 1"
    And the admin has started a job that prints a line every 0.1 seconds
    When the user client holds 1 Output stream on that job and tries 200 more
    Then all 200 fail with RESOURCE_EXHAUSTED
    And the server logged at most 5 "refused" lines for them, one saying how many it left out

  # ---- file descriptors ----------------------------------------------------------------------

  Scenario: The server raises its file descriptor limit and sizes its caps from it
    Given jobmgr-server is running with a file descriptor limit of 256 soft and 1024 hard
    Then its soft file descriptor limit is 1024
    And it logged its connection limits for fd_limit=1024, their sum below 1024

  # ---- the log -------------------------------------------------------------------------------

  Scenario Outline: A job id with control characters is one escaped <format> log line
    Given the jobmgr-server program is running with "--log-format <format>"
    When the admin asks for the status of job "j-\nforged-line\r\x1b[31m\x9b"
    Then the server logged the whole value on exactly one line, with no raw control character
    And that line names the job id escaped and the caller's peer address

    Examples:
      | format |
      | text   |
      | json   |

  Scenario: A certificate CN with a newline is one escaped log line
    Given the jobmgr-server program is running
    When a client whose certificate has O=user and CN "mallory\nforged-line" lists the jobs
    Then the server logged the whole value on exactly one line, with no raw control character
    And that line names the caller "mallory\nforged-line" escaped

  Scenario: A TLS server name with a newline is one escaped log line from gRPC core
    Given the jobmgr-server program is running
    When a TLS 1.3 client with the admin certificate asks for the server name "evil\nforged-line"
    Then the server logged the whole value on exactly one line, with no raw control character

  # ---- the flood, measured -------------------------------------------------------------------

  @long
  Scenario: A client that stops answering pings loses its connection, and its streams' places
    Given the jobmgr-server program is running with "--streams-per-caller 1"
    And the admin has started a job that prints a line every 0.1 seconds
    When the user client follows that job's output by hand and then stops reading or answering
    Then another Output stream of the user client is refused with RESOURCE_EXHAUSTED
    And within 90 seconds the server has closed the silent connection
    And the user client can follow the job's output again

  @long
  Scenario: The admin is served within 1 s at p99 while 2000 connections and 2000 streams are held
    Given jobmgr-server is running with a file descriptor limit of 1024, soft and hard
    And the admin has started a job that prints a line every 0.1 seconds
    And the server's open file descriptors and RSS are measured after a warm-up that met every limit
    When 2000 idle TCP connections from 127.0.0.2 and 2000 Output streams of the user client are held
    Then 50 admin Start + Status pairs, one every 0.2 s, each answer, within 1 s at p99
    And once the flood is gone the server's open file descriptors and RSS are within 10% of before
