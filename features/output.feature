Feature: Job output
  Output is captured from the first byte, kept on disk, and streamed to any number of readers,
  each at its own pace, following the job live until it ends.

  Background:
    Given a worker

  Scenario: Output is replayed from the start after the job has ended
    When I start "sh -c 'echo one; echo two'"
    And the job ends
    Then reading the output gives stdout "one\ntwo\n"

  Scenario: Three concurrent followers of a live 50 MB job receive identical bytes
    When I start "sh -c 'sleep 0.5; head -c 50000000 /dev/urandom'"
    And 3 readers follow the output at the same time
    Then every reader received 50000000 bytes of stdout
    And every reader's sha256 is the same

  Scenario: All 256 byte values survive
    When I start a job that prints every byte value 4 times
    And the job ends
    Then reading the output gives exactly those bytes

  Scenario: Stdout and stderr are told apart and kept in order
    When I start "sh -c 'echo a; sleep 0.1; echo b >&2; sleep 0.1; echo c'"
    And the job ends
    Then the output is stdout "a\n", then stderr "b\n", then stdout "c\n"

  Scenario: A follower's stream ends promptly once the job exits
    When I start "sh -c 'echo started; sleep 1; echo done'"
    And a reader follows the output
    Then the reader's stream ends within 3 seconds
    And the reader received stdout "started\ndone\n"

  Scenario: A follower's stream ends promptly once the job is stopped
    When I start "sh -c 'echo started; sleep 1000'"
    And a reader follows the output
    And I stop the job with a grace period of 1 second
    Then the reader's stream ends within 2 seconds
    And the reader received stdout "started\n"

  Scenario: Reading without following returns what is there now
    When I start "sh -c 'echo now; sleep 1000'"
    And the job has printed "now\n"
    Then reading the output without following gives stdout "now\n"
