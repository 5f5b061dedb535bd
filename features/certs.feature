Feature: Certificates for a deployment of jobmgr on several hosts
  An operator makes one CA with jobmgr-certs init, then issues from it a server certificate
  for each host and a client certificate for each person or program. jobmgr-certs never
  overwrites a file unless told to with --force, and writes every key readable by its owner
  only. A refusal is one line on stderr and exit status 1, with nothing written; a usage
  mistake is exit status 2. Commands run in an empty directory; "certs" is a directory in it.

  Scenario: init makes a CA and a starter set, keys readable only by their owner
    When the operator runs jobmgr-certs init --dir certs with umask 000
    Then it exits 0
    And certs holds ca, server, client_admin and client_user, each a certificate and a key
    And every key in certs has mode 0600 and every certificate mode 0644
    And certs is writable by its owner only

  Scenario: init --ca-only makes the CA alone
    When the operator runs jobmgr-certs init --ca-only --dir certs
    Then it exits 0
    And certs holds only ca.pem and ca.key

  Scenario: A server certificate for host h2, from the existing CA, serves clients that dial h2
    Given the operator has run jobmgr-certs init --dir certs
    When the operator runs jobmgr-certs server --dir certs --name h2 --san IP:127.0.0.2 with umask 000
    Then it exits 0
    And certs/server-h2.pem is issued by certs/ca.pem, valid for exactly "h2" and "127.0.0.2"
    And certs/server-h2.key has mode 0600
    Given jobmgr-server listens on 127.0.0.2 with certs/ca.pem, certs/server-h2.pem and certs/server-h2.key
    When the operator runs jobmgr-client --host 127.0.0.2 list with certs/client_admin.pem
    Then it exits 0
    And a gRPC client that dials 127.0.0.2 as "h2" is answered
    And a gRPC client that dials 127.0.0.2 as "h3" is refused at the handshake

  Scenario: A client certificate for alice with role user is accepted as a user
    Given the operator has run jobmgr-certs init --dir certs
    When the operator runs jobmgr-certs client --dir certs --name alice --role user
    Then it exits 0
    And certs/client-alice.pem is issued by certs/ca.pem, with Subject "O=user,CN=alice"
    And certs/client-alice.key has mode 0600
    Given jobmgr-server listens on localhost with certs/ca.pem, certs/server.pem and certs/server.key
    When alice runs jobmgr-client list with certs/client-alice.pem
    Then it exits 0
    When alice runs jobmgr-client start true with certs/client-alice.pem
    Then it exits 1
    And its stderr is one line: "error: role 'user' may not call /job.JobManager/Start (it may call: List, Output, Status)"

  Scenario: An existing certificate is not overwritten without --force
    Given the operator has run jobmgr-certs init --dir certs
    And the operator has run jobmgr-certs client --dir certs --name alice --role user
    When the operator runs jobmgr-certs client --dir certs --name alice --role admin
    Then it exits 1
    And its stderr is one line containing "certs/client-alice.pem, certs/client-alice.key already exist; wrote nothing. --force replaces them"
    And no file in certs has changed

  Scenario: --force replaces a certificate, and says the old one stays valid until revoked
    Given the operator has run jobmgr-certs init --dir certs
    And the operator has run jobmgr-certs client --dir certs --name alice --role user
    When the operator runs jobmgr-certs client --dir certs --name alice --role admin --force
    Then it exits 0
    And certs/client-alice.pem is issued by certs/ca.pem, with Subject "O=admin,CN=alice"
    And its stdout contains "it stays valid until it expires unless revoked (jobmgr-certs revoke --dir certs --serial 0x"

  Scenario: Asking init for another host on an existing directory is refused, saying what to do
    Given the operator has run jobmgr-certs --out certs
    When the operator runs jobmgr-certs --out certs --host other.example.org
    Then it exits 1
    And its stderr is one line containing "certs/server.pem is not valid for other.example.org (it is for localhost, 127.0.0.1, ::1)"
    And its stderr is one line containing "jobmgr-certs server --dir certs --name other.example.org"
    And no file in certs has changed

  Scenario: server and client need a CA, and name the command that makes one
    When the operator runs jobmgr-certs server --dir certs --name h2
    Then it exits 1
    And its stderr is one line containing "there is no CA in certs (certs/ca.pem is missing): make one with `jobmgr-certs init --ca-only --dir certs`"
    And certs does not exist

  Scenario Outline: A malformed request is a usage error, and writes nothing
    Given the operator has run jobmgr-certs init --dir certs
    When the operator runs jobmgr-certs <arguments>
    Then it exits 2
    And its stderr ends with one line containing "<complaint>"
    And no file in certs has changed

    Examples:
      | arguments                                          | complaint                                      |
      | server --dir certs --name 'jobs 1'                 | 'jobs 1' is neither a DNS name                 |
      | server --dir certs --name h2 --san IP:300.1.1.1     | 'IP:300.1.1.1': '300.1.1.1' is not an IP address |
      | client --dir certs --name alice                    | the following arguments are required: --role   |
      | client --dir certs --name alice --role ''          | '': 1 to 64 printable characters               |
      | --out certs --days 0                               | argument --days: must be at least 1            |
      | --force client --dir certs --name bob --role user  | --force: options written before a command are init's |
      | init --ca-only --dir certs --host h2               | init --ca-only does not write                  |

  Scenario: Every command explains itself, with examples and the exit statuses
    When the operator runs jobmgr-certs --help
    Then it exits 0
    And its stdout mentions "init", "server" and "client"
    And its stdout mentions "revoke", "exit status:" and "2  a usage error"
    When the operator runs jobmgr-certs server --help
    Then it exits 0
    And its stdout mentions "--san", "--name" and "examples:"
