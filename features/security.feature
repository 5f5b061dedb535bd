Feature: Nobody gets in without a valid client certificate and one known role
  Checked against the real jobmgr-server program over real TLS. The server speaks TLS 1.3
  only, and only to a client whose certificate its CA signed, that is valid now and that is
  meant for clients. Past the handshake the certificate's Subject O must name exactly one
  known role, and the role decides every call, streams included. A refused client leaves
  nothing behind but a line in the server's log: no job, no record, no process.
  What does get in reaches the job exactly: no shell ever sees the arguments.

  Scenario Outline: A client offering only TLS <version> is refused by the server at the handshake
    Given the jobmgr-server program is running
    When a client offering only TLS <version> connects with the admin certificate
    Then the handshake fails, and it was the server that refused it
    And the server logged the failed handshake saying "<reason>"
    And no job was started

    Examples:
      | version | reason               |
      | 1.0     | UNSUPPORTED_PROTOCOL |
      | 1.1     | UNSUPPORTED_PROTOCOL |
      | 1.2     | NO_SHARED_CIPHER     |

  Scenario: openssl s_client gets a session with -tls1_3 and with nothing older
    Given the jobmgr-server program is running
    When openssl s_client connects with each of -tls1, -tls1_1, -tls1_2 and -tls1_3
    Then only the -tls1_3 connection gets a session

  Scenario Outline: A client with <certificate> is cut off before any call
    Given the jobmgr-server program is running
    When a TLS 1.3 client with <certificate> sends a Start call by hand
    Then the server ends the connection without sending a single HTTP/2 frame
    And a gRPC client with <certificate> gets UNAVAILABLE from Start
    And the server logged the failed handshake saying "<reason>"
    And no job was started

    Examples:
      | certificate                              | reason                            |
      | no certificate                           | PEER_DID_NOT_RETURN_A_CERTIFICATE |
      | a certificate from another CA            | CERTIFICATE_VERIFY_FAILED         |
      | an expired certificate                   | CERTIFICATE_VERIFY_FAILED         |
      | a certificate not valid yet              | CERTIFICATE_VERIFY_FAILED         |
      | the server certificate (serverAuth only) | CERTIFICATE_VERIFY_FAILED         |

  Scenario Outline: A certificate without exactly one known role can start nothing
    Given the jobmgr-server program is running
    When the <certificate> client tries to start a job
    Then the call fails with PERMISSION_DENIED saying "<says>"
    And no job was started
    And the server logged the refused Start of "<caller>" as PERMISSION_DENIED

    Examples:
      | certificate | says         | caller           |
      | no-O        | no Subject O | client_anonymous |
      | unknown-O   | 'intern'     | client_intern    |
      | two-O       | exactly one  | client_both      |

  Scenario: The role matrix holds on every call, streams included, with a job running
    Given the jobmgr-server program is running
    And the admin has started a job that prints a line every 0.1 seconds
    When each client below makes each call on that running job, the admin last
    Then the answers are
      | certificate | Start             | Stop              | Status            | Output            | List              | Health            | Reflection        |
      | user        | PERMISSION_DENIED | PERMISSION_DENIED | OK                | OK                | OK                | OK                | OK                |
      | no-O        | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED |
      | unknown-O   | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED |
      | two-O       | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED | PERMISSION_DENIED |
      | admin       | OK                | OK                | OK                | OK                | OK                | OK                | OK                |
    And no refused Output stream carried a byte of output
    And the job kept running until the admin stopped it, and only the admin started a job

  Scenario: Under the own-jobs policy a user cannot tell the admin's job exists
    Given the jobmgr-server program is running with "--user-sees own"
    And the admin has started a job that prints a line every 0.1 seconds
    When the user asks for that job's status and output, and for the list of jobs
    Then the status and the output are NOT_FOUND, word for word as for an id no job has
    And no byte of the job's output reached the user
    And the user's list is empty, even when it asks for the admin's jobs by owner

  Scenario: No Start or Stop request a user can craft gets through
    Given the jobmgr-server program is running
    And the admin has started a job that prints a line every 0.1 seconds
    When the user client sends 40 generated Start requests and 40 generated Stop requests
    Then every one of them fails with PERMISSION_DENIED
    And the admin's job is still running and it is the only job

  Scenario Outline: The server refuses to start when <file> is <problem>
    Given the scenario's certificate files, with <file> <problem>
    When the jobmgr-server program is started with them
    Then it exits with status 1 within 10 seconds, saying in one line "<says>"
    And it left no launcher, no cgroup and no open port behind

    Examples:
      | file            | problem                           | says                  |
      | the key         | readable by everyone (mode 0644)  | 0644                  |
      | the key         | writable by its group (mode 0620) | 0620                  |
      | the key         | owned by nobody                   | owned by              |
      | the CA          | writable by everyone (mode 0666)  | 0666                  |
      | the certificate | writable by everyone (mode 0646)  | 0646                  |
      | the key         | a directory                       | directory             |
      | the CA          | an empty file                     | not a PEM certificate |
      | the key         | a dangling symlink                | no such file          |

  Scenario: Arguments reach the job exactly as sent, with no shell in between
    Given the jobmgr-server program is running
    When the admin starts python3 printing its arguments, with the arguments
      | argument                     |
      | two words                    |
      | 'single' and "double" quotes |
      | $(echo injected) and `id`    |
      | first line\nsecond line      |
      | *                            |
      | ; echo injected; #           |
      | ${HOME} ~ $0 \\ %s           |
      |                              |
    Then the job received exactly those arguments

  Scenario: Arguments that are not UTF-8 reach the job byte for byte
    Given the jobmgr-server program is running
    When the admin starts python3 printing its arguments through the raw argv field, with the bytes
      | hex               |
      | ff fe             |
      | 80 41 c3 28       |
      | 24 28 69 64 29 ff |
      | e2 82 28 0a 41    |
    Then the job received exactly those bytes
    And the job's status gives its argv back exactly in argv_bytes
    And the list of jobs can still be read

  Scenario: jobmgr-client passes arguments that are not UTF-8 through unchanged
    Given the jobmgr-server program is running
    When jobmgr-client starts python3 printing its arguments, with an argument of bytes "ff 41 0a fe"
    Then the job received exactly that argument
