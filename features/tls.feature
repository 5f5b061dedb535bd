Feature: Only mutual TLS 1.3 gets through
  The server speaks TLS 1.3 and nothing older, and only to clients whose certificate its CA
  signed, is currently valid and is meant for clients. TLS 1.2 is refused at the handshake;
  as a second wall, every call also checks that its session is TLS 1.3.

  Scenario: A TLS 1.3 client with a valid certificate is accepted
    Given a jobmgr server
    When a TLS 1.3 client connects with the admin certificate
    Then the handshake completes as TLSv1.3 and the server speaks HTTP/2

  Scenario: A TLS 1.2 client is refused at the handshake
    Given a jobmgr server
    When a TLS 1.2 client connects with the admin certificate
    Then the handshake fails

  Scenario: The jobmgr-server program itself refuses TLS 1.2 and accepts TLS 1.3
    Given the jobmgr-server program is running
    When a TLS 1.2 client connects with the admin certificate
    Then the handshake fails
    When a TLS 1.3 client connects with the admin certificate
    Then the handshake completes as TLSv1.3 and the server speaks HTTP/2

  Scenario Outline: A certificate the server must not accept gets no answer
    Given a jobmgr server
    When a client with the <certificate> certificate asks for the list of jobs
    Then the call fails with UNAVAILABLE

    Examples:
      | certificate |
      | other-CA    |
      | expired     |
      | server-cert |

  Scenario: A client without a certificate gets no answer
    Given a jobmgr server
    When a client without a certificate asks for the list of jobs
    Then the call fails with UNAVAILABLE

  Scenario: A client that does not trust the server's CA does not talk to it
    Given a jobmgr server
    When a client trusting only another CA asks for the list of jobs
    Then the call fails with UNAVAILABLE

  Scenario: A call whose session is not TLS 1.3 is refused even past the handshake
    Given the access guard every call passes through
    When an admin's List call arrives on a session reporting TLSv1.2
    Then the guard refuses it with UNAUTHENTICATED saying "TLS 1.3 only"
    And the method never ran
