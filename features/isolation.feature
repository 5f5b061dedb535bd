Feature: Isolation
  Each job runs in its own PID, mount, network, UTS and IPC namespaces: it sees only its own
  processes, only a loopback network, and nothing it mounts or renames reaches the host.

  Background:
    Given a worker

  Scenario: The job's first process sees itself as a low PID
    When I start "cat /proc/self/stat"
    And the job ends
    Then the PID in the output is at most 3

  Scenario: /proc lists only the job's processes
    When I start "sh -c 'sleep 5 & ls /proc'"
    And the job's output is complete
    Then the numeric entries of the listing are at most 4 and all below 10

  Scenario: ps shows only the job's processes
    When I start "ps -e -o pid=,comm="
    And the job ends
    Then the output lists at most 2 processes

  Scenario: The only network interface is a working loopback
    When I start "sh -c 'cat /proc/net/dev; ip -o link show lo'"
    And the job ends
    Then the only interface listed is "lo"
    And the loopback interface is up

  Scenario: A mount made inside the job is invisible outside
    When I start a job as root that mounts a tmpfs on a host directory and writes a file into it
    Then while it runs the host sees neither the mount nor the file

  Scenario: A hostname change inside the job is invisible outside
    When I start as root "sh -c 'hostname job-inside-test && hostname'"
    And the job ends
    Then reading the output gives stdout "job-inside-test\n"
    And the host's hostname is unchanged

  Scenario: /sys shows only the job's own network interfaces
    When I start "ls /sys/class/net"
    And the job ends
    Then reading the output gives stdout "lo\n"

  Scenario: A job running as root cannot move itself out of its cgroup
    When I start a job that tries every way to move itself into the root cgroup
    Then all of the job's processes are still in its own cgroup
