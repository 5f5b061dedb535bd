"""jobmgr-server on SIGHUP: read the configuration and the certificate files again and serve
with them, without stopping a job or dropping a connection.

A reload changes the server certificate and key, the CA, the CRL, the role policy
(``[access.roles]``, ``user_sees``) and the run-as policy (``run_as``, ``allowed_run_as``).
The rest (address, state directory, limits, ...) is read at start only: a reload that finds
it changed says so in the log and leaves it as it is. A reload that finds anything wrong (a
file missing, unsafe or not matching, a CRL the CA did not sign, a bad setting) changes
nothing at all and logs why: the server goes on with what it had.
"""

from __future__ import annotations

import dataclasses
import logging
import pwd
from collections.abc import Callable

from jobmgr.api import ClientTrust, JobServer, JobVisibility, ServerTLS, role_policy

from ._config import ConfigError, ServerConfig
from ._tlsfiles import UnsafeTLSFiles, read_server_tls

log = logging.getLogger("jobmgr.server")

RELOADED = frozenset({"ca", "cert", "key", "crl", "roles", "user_sees", "run_as", "allowed_run_as"})


def visibility_of(config: ServerConfig) -> JobVisibility:
    """Which roles see only their own jobs, as ``user_sees`` says."""
    return JobVisibility.restricting({"user"} if config.user_sees == "own" else ())


def log_trust(tls: ServerTLS, config: ServerConfig) -> None:
    """One line on the CRL in force (if any), and a warning for each stale one."""
    if tls.crl_pem is None:
        return
    trust = ClientTrust(tls.ca_pem, tls.crl_pem)
    log.info("certificate revocation list %s: %d revoked", config.crl, trust.revoked_count)
    for stale in trust.stale_crls():
        log.warning("%s: %s", config.crl, stale)


class Reloader:
    """Call it (on the server's event loop) for each SIGHUP."""

    def __init__(
        self, server: JobServer, config: ServerConfig, read: Callable[[], ServerConfig]
    ) -> None:
        self._server = server
        self._config = config
        self._read = read

    def __call__(self) -> None:
        log.info("SIGHUP: reloading the configuration and the certificate files")
        try:
            config = self._read()
            try:
                if config.run_as is not None:
                    pwd.getpwnam(config.run_as)
            except KeyError:
                raise ConfigError(f"run_as {config.run_as!r}: there is no such user here") from None
            tls = read_server_tls(config.ca, config.cert, config.key, config.crl)
            policy = role_policy(config.roles)
        except (ConfigError, UnsafeTLSFiles, ValueError) as exc:
            log.error("reload refused, the configuration in force stays as it was: %s", exc)
            return
        ended = self._server.reload(
            tls,
            policy=policy,
            visibility=visibility_of(config),
            run_as=config.run_as,
            allowed_run_as=None if config.any_user_allowed else config.allowed_run_as,
        )
        log_trust(tls, config)
        kept = [
            f.name
            for f in dataclasses.fields(ServerConfig)
            if f.name not in RELOADED and getattr(config, f.name) != getattr(self._config, f.name)
        ]
        if kept:
            log.warning(
                "reload: %s changed but take effect only when the server is restarted",
                ", ".join(kept),
            )
            config = dataclasses.replace(
                config, **{name: getattr(self._config, name) for name in kept}
            )
        self._config = config
        log.info(
            "reloaded: certificate %s, CA %s, CRL %s, roles %s, user_sees %s; %d open "
            "streams ended (certificate no longer trusted, or call no longer allowed)",
            config.cert, config.ca, config.crl or "none", ", ".join(sorted(config.roles)),
            config.user_sees, ended,
        )  # fmt: skip
