"""Who is calling and what they may do: the role policy, read from client certificates.

A caller's role is the Subject O (organization) of the client certificate the TLS handshake
verified, parsed with ``cryptography`` from ``auth_context()['x509_pem_cert']``. Exactly one O
is required: none, an unknown one, or several are refused, never guessed at.

A caller's identity is the certificate's whole Subject, written as RFC 4514 text
(``CN=alice,O=user``), so the role is part of it: two certificates that share a CN but not an
O (or an OU, or anything else in the Subject) are two callers. The identity owns the jobs its
certificate starts. Its CN alone is only a name for people and logs.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

SERVICE = "job.JobManager"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICE = "grpc.reflection.v1alpha.ServerReflection"


def _methods(*names: str, service: str = SERVICE) -> frozenset[str]:
    return frozenset(f"/{service}/{name}" for name in names)


# The words a role policy is written in: each JobManager call by its short name, and the two
# standard services (health checking, reflection) as a whole.
CALL_NAMES: Mapping[str, frozenset[str]] = {
    **{name: _methods(name) for name in ("Start", "Stop", "Status", "Output", "List")},
    "Health": _methods("Check", "Watch", service=HEALTH_SERVICE),
    "Reflection": _methods("ServerReflectionInfo", service=REFLECTION_SERVICE),
}

# Role -> what it may call, in CALL_NAMES words. Both roles may probe health and use
# reflection: they reveal no job, and both roles are authenticated clients of this server.
DEFAULT_ROLES: Mapping[str, tuple[str, ...]] = {
    "admin": ("Start", "Stop", "Status", "Output", "List", "Health", "Reflection"),
    "user": ("Status", "Output", "List", "Health", "Reflection"),
}


def role_policy(roles: Mapping[str, Sequence[str]]) -> dict[str, frozenset[str]]:
    """A policy of full method names from one in CALL_NAMES words (or full method names,
    ``/package.Service/Method``); ValueError names a word that is neither."""
    policy: dict[str, frozenset[str]] = {}
    for role, names in roles.items():
        methods: set[str] = set()
        for name in names:
            if name in CALL_NAMES:
                methods |= CALL_NAMES[name]
            elif name.startswith("/") and name.count("/") == 2:
                methods.add(name)
            else:
                known = ", ".join(CALL_NAMES)
                raise ValueError(
                    f"role {role!r}: unknown call {name!r} (use one of {known}, "
                    "or a full method name such as /job.JobManager/Start)"
                )
        policy[role] = frozenset(methods)
    return policy


# Role -> the full gRPC method names it may call. Anything not listed is refused.
ROLE_POLICY: Mapping[str, frozenset[str]] = role_policy(DEFAULT_ROLES)


class AccessDenied(Exception):
    """The caller may not make this call (maps to PERMISSION_DENIED)."""


class NotAuthenticated(Exception):
    """The call carries no usable client identity (maps to UNAUTHENTICATED)."""


@dataclass(frozen=True)
class Caller:
    """The authenticated client of one RPC."""

    name: str  # the certificate's Subject CN ("" if it has none): for people and logs
    roles: tuple[str, ...]  # every Subject O value, in certificate order
    # The whole Subject as RFC 4514 text, control characters escaped (see subject_text): the
    # key of everything held per caller, the owner of its jobs first.
    identity: str
    fingerprint: bytes  # SHA-256 of the certificate's DER
    certificate: x509.Certificate = field(compare=False, repr=False)

    @property
    def role(self) -> str | None:
        """The role, if the certificate names exactly one."""
        return self.roles[0] if len(self.roles) == 1 else None


def identify(auth_context: Mapping[str, Sequence[bytes]]) -> Caller:
    """The caller of an RPC, from its ``context.auth_context()``."""
    pems = auth_context.get("x509_pem_cert")
    if not pems:
        raise NotAuthenticated("no client certificate was presented")
    return _caller_from_pem(pems[0])


# The same few certificates arrive on every call: parsing one costs more than the rest of a
# Status call, and a certificate's subject never changes.
@functools.lru_cache(maxsize=1024)
def _caller_from_pem(pem: bytes) -> Caller:
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise NotAuthenticated(f"the client certificate cannot be parsed: {exc}") from None
    subject = cert.subject
    names = [_text(a.value) for a in subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    roles = [_text(a.value) for a in subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
    return Caller(
        name=names[0] if names else "",
        roles=tuple(roles),
        identity=subject_text(subject),
        fingerprint=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest(),
        certificate=cert,
    )


def subject_text(subject: x509.Name) -> str:
    """``subject`` as RFC 4514 text, with every character that does not print (newlines,
    escape sequences, bidi controls) written as RFC 4514 hex escapes of its UTF-8 bytes: still
    one text per Subject, read back by any RFC 4514 parser, and safe on a terminal."""
    return "".join(
        char if char.isprintable() else "".join(f"\\{byte:02X}" for byte in char.encode())
        for char in subject.rfc4514_string()
    )


def owner_matches(owner: str, wanted: str) -> bool:
    """Whether a job's ``owner`` is the one a List filter names: its whole Subject (RFC 4514,
    spacing and escapes as the client likes) or its CN alone. Owners recorded as a bare CN
    match that CN."""
    if not wanted:
        return True
    if owner == wanted:
        return True
    normal = _normal_subject(wanted)
    if normal is not None and normal == owner:
        return True
    return _common_name(owner) == wanted


@functools.lru_cache(maxsize=4096)
def _normal_subject(text: str) -> str | None:
    try:
        return subject_text(x509.Name.from_rfc4514_string(text)) if "=" in text else None
    except ValueError:
        return None


@functools.lru_cache(maxsize=4096)
def _common_name(owner: str) -> str | None:
    try:
        name = x509.Name.from_rfc4514_string(owner)
    except ValueError:
        return None
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return _text(names[0].value) if len(names) == 1 else None


def authorize(
    caller: Caller, method: str, policy: Mapping[str, frozenset[str]] = ROLE_POLICY
) -> None:
    """Raise AccessDenied unless ``policy`` lets the caller's role call ``method``."""
    known = ", ".join(sorted(policy))
    who = f"client {caller.name!r}" if caller.name else "the client"
    if not caller.roles:
        raise AccessDenied(
            f"{who} may not call {method}: its certificate has no Subject O, which must name "
            f"its role (one of: {known})"
        )
    if caller.role is None:
        listed = ", ".join(repr(r) for r in caller.roles)
        raise AccessDenied(
            f"{who} may not call {method}: its certificate names {len(caller.roles)} roles "
            f"({listed}) in Subject O; exactly one is required"
        )
    allowed = policy.get(caller.role)
    if allowed is None:
        raise AccessDenied(
            f"role {caller.role!r} of {who} is unknown, so it may not call {method} "
            f"(known roles: {known})"
        )
    if method not in allowed:
        # Named within the service called: that is the list the caller can act on.
        service = method.rsplit("/", 1)[0] + "/"
        same = (m.rsplit("/", 1)[-1] for m in allowed if m.startswith(service))
        may = ", ".join(sorted(same)) or "nothing"
        raise AccessDenied(f"role {caller.role!r} may not call {method} (it may call: {may})")


def _text(value: str | bytes) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else value
