Feature: Who a caller is, page tokens it cannot forge, and certificates that stop being trusted
  Checked against the real jobmgr-server program over mutual TLS 1.3. A caller is its
  certificate's whole Subject, role included: that is the owner of the jobs it starts, and what
  --user-sees own compares. List's page tokens are signed by the server, so a client can
  neither forge a position nor hand the server a token it must take apart at length. A
  certificate the CRL lists gets no call served, on a connection old or new, and its open
  streams end. SIGHUP makes the server take a new certificate, CA, CRL and policy without
  stopping a job or an open stream; a reload with anything wrong in it changes nothing.

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

  Scenario: Under --user-sees own, a user certificate with the admin's CN sees none of the admin's jobs
    Given the jobmgr-server program is running with "--user-sees own"
    And a certificate "O=admin, CN=alice" has started a job that prints a line every 0.1 seconds
    When a certificate "O=user, CN=alice" asks for that job's status and output, and lists jobs
    Then the status and the output are NOT_FOUND and the list is empty
    And the job's owner reads "CN=alice,O=admin"
    And "jobmgr-client list --owner alice", run with the certificate that started it, lists that job

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
