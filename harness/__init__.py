"""What the acceptance steps, the unit tests and the bench share to drive jobmgr from outside.

- ``server``: a program that says where it listens, and ``jobmgr-server`` as one (start, start
  again on the same state, crash, stop), with a client (``ServerProgram``) for the steps.
- ``inprocess``: a ``JobServer`` in this process, on an event loop of its own.
- ``client``: a client of either, presenting one of a scenario's certificates.
- ``rpc``: how one call went (``call`` -> ``CallResult``).
- ``poll``: waiting for a condition (``eventually``), the one place every wait goes through.
- ``speed``: this machine's measured slowness, which scales every timing bound in a test.
- ``procs``: what /proc says about a process.
- ``cgroups``: a job's cgroups, found through the cgroup driver (either version).
- ``leftovers``: what a server may leave behind, checking for it and clearing it.
- ``programs``: running our console scripts from the checkout.
- ``pki``: a scenario's certificates as bytes and files.
- ``figures``: percentiles, and printing a measured figure beside a test's result.
- ``worker``: following a ``Worker``'s jobs in this process.

It is not part of the jobmgr distribution (setuptools packages ``jobmgr*`` only).
"""
