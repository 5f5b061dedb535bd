Feature: The server holds against hostile clients and hostile jobs, before and after login
  Checked against the real jobmgr-server program over real mutual TLS 1.3. Another user of
  the host, or a job, cannot make the server run its code, nor read the server's records.
  Nobody, with a certificate or without one, can take every connection, stream or file
  descriptor the server has: past each limit the newcomer is refused, with a message naming
  the limit where there is a caller to read one, and the admin is still served. Whatever a caller sends, the server's
  log stays one line per record, with every value escaped. A caller is its certificate's whole
  Subject, role included: that is the owner of the jobs it starts, and what --user-sees own
  compares. List's page tokens are signed by the server. A certificate the CRL lists gets no
  call served, on a connection old or new, and its open streams end; SIGHUP makes the server
  take a new certificate, CA, CRL and policy without stopping a job or an open stream, and a
  reload with anything wrong in it changes nothing.

  # ---- helpers start isolated ----------------------------------------------------------------

  Scenario: A module planted in the server's working directory is never imported
    Given jobmgr-server was started from a directory every user may write to
    And the user nobody has written jobmgr/__init__.py into that directory
    When jobmgr-server is stopped and started again from the same directory
    Then a job started after the restart prints "still serving" and exits 0
    And the planted module was never imported

  # ---- state is private ----------------------------------------------------------------------

  Scenario: A state directory left open to other users is made private at start
    Given a state directory left by an older jobmgr: the directory 0755, every file in it 0644
    When jobmgr-server starts on that state directory
    Then the user nobody can read neither jobs.db nor launcher.log
    And the state directory and every directory in it are mode 0700, every file 0600

  Scenario: A state directory owned by another user is refused, naming it
    Given a state directory owned by nobody
    When jobmgr-server is started on that state directory
    Then it exits with status 1 naming the state directory and "belongs to uid 65534"

  Scenario: A state directory deeper than a socket address can name still serves jobs
    Given jobmgr-server is running on a state directory whose path is over 300 bytes long
    Then a job started on it prints "served" and exits 0

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

  Scenario: Bare connections from one address, 1100 of them, lock nobody out of a server limited to 1024 fds
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

  Scenario: Output streams of one user certificate, 1100 of them, lock nobody out of a server limited to 1024 fds
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

  @long
  Scenario: A client that stops answering pings loses its connection, and its streams' places
    Given the jobmgr-server program is running with "--streams-per-caller 1"
    And the admin has started a job that prints a line every 0.1 seconds
    When the user client follows that job's output by hand and then stops reading or answering
    Then another Output stream of the user client is refused with RESOURCE_EXHAUSTED
    And within 90 seconds the server has closed the silent connection
    And the user client can follow the job's output again

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

  # ---- page tokens ---------------------------------------------------------------------------

  Scenario Outline: A List page token the server did not sign is INVALID_ARGUMENT
    Given the jobmgr-server program is running
    And the admin has started 3 jobs of "true"
    When the admin asks for a List page with <token>
    Then the List fails with INVALID_ARGUMENT saying "page_token"
    And a List 2 jobs at a time still gives the 3 jobs, oldest first, with the tokens it hands out

    Examples:
      | token                                                       |
      | a page token of 200 000 "[" characters, base64-encoded      |
      | a page token forged, in the old unsigned form, to skip a job |

  # ---- identity ------------------------------------------------------------------------------

  Scenario: Under --user-sees own, a user certificate with the admin's CN sees none of the admin's jobs
    Given the jobmgr-server program is running with "--user-sees own"
    And a certificate "O=admin, CN=alice" has started a job that prints a line every 0.1 seconds
    When a certificate "O=user, CN=alice" asks for that job's status and output, and lists jobs
    Then the status and the output are NOT_FOUND and the list is empty
    And the job's owner reads "CN=alice,O=admin"
    And "jobmgr-client list --owner alice", run with the certificate that started it, lists that job

  # ---- revocation ----------------------------------------------------------------------------

  Scenario: A certificate revoked while connected gets UNAUTHENTICATED on its next call
    Given the jobmgr-server program is running with a CRL that revokes nothing
    And the user has listed jobs over a connection it keeps open
    When the operator revokes the user's certificate with jobmgr-certs revoke and sends the server SIGHUP
    Then the user's next List on that connection fails with UNAUTHENTICATED saying "revoked"
    And the admin's List still succeeds
    And the server logged the user's List as UNAUTHENTICATED

  Scenario: An Output stream open when its certificate is revoked ends with UNAUTHENTICATED
    Given the jobmgr-server program is running with a CRL that revokes nothing
    And the admin has started a job that counts, one line every 0.1 seconds
    And the user and the admin are both following that job's output
    When the operator revokes the user's certificate with jobmgr-certs revoke and sends the server SIGHUP
    Then within 5 seconds the user's stream ends with UNAUTHENTICATED saying "revoked"
    And the job is still running, and the admin's stream goes on counting without a gap

  Scenario: An Output stream whose client stops reading is cut off once its certificate is revoked
    Given the jobmgr-server program is running with a CRL that revokes nothing
    And the admin has started a job that writes 64 MiB and then sleeps
    And the user has opened that job's Output stream by hand, taken one message and stopped reading
    When the operator revokes the user's certificate with jobmgr-certs revoke and sends the server SIGHUP
    Then within 15 seconds the server has ended the user's Output call and logged it
    And the job is still running

  Scenario: A certificate the CRL lists cannot make a single call on a new connection
    Given the user's certificate is revoked in a CRL
    And the jobmgr-server program is running with that CRL
    When the user connects and calls List, Status, Output and Health
    Then each call fails with UNAUTHENTICATED saying "revoked"
    And the admin's List still succeeds

  @known_gap
  Scenario: A certificate the CRL lists is refused at the TLS handshake
    Given the user's certificate is revoked in a CRL
    And the jobmgr-server program is running with that CRL
    When a TLS 1.3 client with the user's certificate opens HTTP/2 by hand
    Then the server ends the connection without sending a single HTTP/2 frame

  Scenario: The server refuses to start with a CRL its CA did not sign, naming the file
    Given a CRL signed by another CA
    When jobmgr-server is started with --crl pointing at it
    Then it exits 1 saying "--crl" with the CRL's path and "not signed by the CA"

  # ---- reload (SIGHUP) -----------------------------------------------------------------------

  Scenario: SIGHUP rotates the server certificate without stopping a job or an open stream
    Given the jobmgr-server program is running
    And the admin has started a job that counts, one line every 0.1 seconds
    And the admin is following that job's output
    When the server's certificate and key files are replaced by a new pair and the server gets SIGHUP
    Then a new connection is handed the new server certificate
    And the job is still running, and the admin's stream goes on counting without a gap

  Scenario: SIGHUP applies a changed role table to the next call on an open connection
    Given the jobmgr-server program is running with a configuration file giving role user "Status, Output, List"
    And the user has listed jobs over a connection it keeps open
    When the configuration file is changed to give role user "Status, Output" and the server gets SIGHUP
    Then the user's next List on that connection fails with PERMISSION_DENIED saying "may call: Output, Status"

  Scenario: SIGHUP ends the open Output stream of a role that may no longer call Output
    Given the jobmgr-server program is running with a configuration file giving role user "Status, Output, List"
    And the admin has started a job that counts, one line every 0.1 seconds
    And the user and the admin are both following that job's output
    When the configuration file is changed to give role user "Status, List" and the server gets SIGHUP
    Then within 5 seconds the user's stream ends with PERMISSION_DENIED saying "may call: List, Status"
    And the job is still running, and the admin's stream goes on counting without a gap

  Scenario: SIGHUP applies a changed run-as policy to the next Start
    Given the jobmgr-server program is running with a configuration file allowing jobs to run as "nobody"
    And a Start asking to run as "daemon" fails with INVALID_ARGUMENT
    When the configuration file is changed to allow "nobody, daemon" and the server gets SIGHUP
    Then a Start asking to run as "daemon" runs "id -un" and prints "daemon"

  Scenario: SIGHUP with a new CA: a certificate of the old CA gets no call on its open connection
    Given the jobmgr-server program is running
    And the user has listed jobs over a connection it keeps open
    When the CA file is replaced by a new CA, with a server certificate it signed, and the server gets SIGHUP
    Then the user's next List on that connection fails with UNAUTHENTICATED saying "CA"
    And a certificate "O=admin, CN=carol" of the new CA can list jobs
    And a new connection with the old user certificate fails at the handshake

  Scenario Outline: A reload with <what> changes nothing and logs why
    Given the jobmgr-server program is running with a configuration file and a CRL that revokes nothing
    And the user has listed jobs over a connection it keeps open
    When <what> is put in place and the server gets SIGHUP
    Then the server logged "reload refused" saying "<why>"
    And a new connection is still handed the server certificate it started with
    And the user's next List on that connection still succeeds

    Examples:
      | what                                     | why                               |
      | a server certificate of another key      | does not belong to the server certificate |
      | a CRL signed by another CA, revoking the user | not signed by the CA         |
      | a configuration with an unknown role call | unknown call 'Launch'            |

  # ---- the flood, measured -------------------------------------------------------------------

  @long
  Scenario: The admin is served within 1 s at p99 while 2000 connections and 2000 streams are held
    Given jobmgr-server is running with a file descriptor limit of 1024, soft and hard
    And the admin has started a job that prints a line every 0.1 seconds
    And the server's open file descriptors and RSS are measured after a warm-up that met every limit
    When 2000 idle TCP connections from 127.0.0.2 and 2000 Output streams of the user client are held
    Then 50 admin Start + Status pairs, one every 0.2 s, each answer, within 1 s at p99
    And once the flood is gone the server's open file descriptors and RSS are within 10% of before
