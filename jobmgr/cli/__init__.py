"""Command-line entry points: jobmgr-server, jobmgr-client and jobmgr-certs."""
