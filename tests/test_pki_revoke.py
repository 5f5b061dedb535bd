"""jobmgr-certs revoke and the CRL it writes: appended to, never replaced by a stranger's,
only for certificates its CA issued, 0644; and the server's reading of it (ClientTrust)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography import x509

from jobmgr import pki
from jobmgr.api import ClientTrust, CRLError
from jobmgr.cli import certs


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    pki.write_bundle(tmp_path)
    return tmp_path


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def _revoked(directory: Path) -> set[int]:
    crl = x509.load_pem_x509_crl((directory / "crl.pem").read_bytes())
    return {entry.serial_number for entry in crl}


def test_revoking_appends_and_keeps_what_was_there(bundle: Path) -> None:
    assert certs.main(["revoke", "--dir", str(bundle)]) == 0
    assert _revoked(bundle) == set()
    assert stat.S_IMODE((bundle / "crl.pem").stat().st_mode) == 0o644
    user, admin = bundle / "client_user.pem", bundle / "client_admin.pem"
    assert certs.main(["revoke", "--dir", str(bundle), str(user)]) == 0
    assert certs.main(["revoke", "--dir", str(bundle), str(admin), "--serial", "0x10"]) == 0
    assert certs.main(["revoke", "--dir", str(bundle), str(user)]) == 0  # already: kept once
    assert _revoked(bundle) == {_serial(user), _serial(admin), 16}
    crl = x509.load_pem_x509_crl((bundle / "crl.pem").read_bytes())
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 4


def test_a_certificate_of_another_ca_or_the_ca_itself_is_refused(
    bundle: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other"
    pki.write_bundle(other)
    for stranger in (other / "client_user.pem", bundle / "ca.pem"):
        assert certs.main(["revoke", "--dir", str(bundle), str(stranger)]) == 1
    assert not (bundle / "crl.pem").exists()


def test_a_crl_of_another_ca_is_not_added_to_nor_replaced(bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    pki.write_bundle(other)
    assert certs.main(["revoke", "--dir", str(other)]) == 0
    foreign = (other / "crl.pem").read_bytes()
    (bundle / "crl.pem").write_bytes(foreign)
    assert certs.main(["revoke", "--dir", str(bundle), str(bundle / "client_user.pem")]) == 1
    assert (bundle / "crl.pem").read_bytes() == foreign


def test_the_server_reads_the_crl_only_from_its_ca(bundle: Path, tmp_path: Path) -> None:
    user = bundle / "client_user.pem"
    assert certs.main(["revoke", "--dir", str(bundle), str(user)]) == 0
    trust = ClientTrust((bundle / "ca.pem").read_bytes(), (bundle / "crl.pem").read_bytes())
    assert trust.revoked_count == 1 and trust.stale_crls() == []
    other = tmp_path / "other"
    pki.write_bundle(other)
    assert certs.main(["revoke", "--dir", str(other)]) == 0
    for bad in ((other / "crl.pem").read_bytes(), b"not a CRL", b"-----BEGIN X509 CRL-----\nAA"):
        with pytest.raises(CRLError):
            ClientTrust((bundle / "ca.pem").read_bytes(), bad)
