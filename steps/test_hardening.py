"""features/hardening.feature: the server holds against hostile clients and hostile jobs,
before and after login. Its steps are registered for every feature (conftest.py), one module
per subject:

- _server_files_steps: the launcher starts isolated, the state directory is private;
- _limit_steps: each connection, stream and call limit tried past its value;
- _flood_steps: the fd limit and the caps derived from it, the issue's floods replayed under
  a limit of 1024, and the measured flood;
- _log_line_steps: values a caller chooses, logged one escaped line each;
- _identity_steps: a caller's whole Subject, signed page tokens;
- _revocation_steps, _reload_steps: the CRL, and SIGHUP.
"""

from pytest_bdd import scenarios

scenarios("hardening.feature")
