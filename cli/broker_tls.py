"""TLS material for the local broker's second listener: a private CA and a server certificate.

Generated once by `cargotrace up` into ``<state_dir>/broker/tls/`` (keys 0600 from creation) with
the ``cryptography`` package, in-process: no key ever passes through a command line or a file with
looser permissions. Devices, bridges, simulators and workers verify the broker against ``ca.crt``
(``CARGOTRACE_MQTT_CA_FILE``). A deployment with its own certificates sets
``CARGOTRACE_BROKER_TLS_CERTFILE``/``_KEYFILE`` (and the CA file) and nothing is generated.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from runtime.settings import Settings, write_private

CA_DAYS = 3650
SERVER_DAYS = 825  # the longest server-certificate lifetime clients commonly accept


@dataclass(frozen=True)
class BrokerTls:
    cafile: Path
    certfile: Path
    keyfile: Path


def broker_tls(settings: Settings) -> BrokerTls:
    """The configured files, or the generated ones (created when missing)."""
    if settings.broker_tls_certfile and settings.broker_tls_keyfile:
        return BrokerTls(settings.mqtt_ca_path, settings.broker_tls_certfile, settings.broker_tls_keyfile)
    tls_dir = settings.broker_dir / "tls"
    paths = BrokerTls(tls_dir / "ca.crt", tls_dir / "server.crt", tls_dir / "server.key")
    if not (paths.cafile.exists() and paths.certfile.exists() and paths.keyfile.exists()):
        tls_dir.mkdir(parents=True, exist_ok=True)
        tls_dir.chmod(0o700)
        _generate(paths, tls_dir / "ca.key", settings.mqtt_host)
    return paths


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cargotrace local stack"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _generate(paths: BrokerTls, ca_key_path: Path, host: str) -> None:
    now = datetime.now(UTC) - timedelta(minutes=5)  # tolerate a little clock skew on clients
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("cargotrace local CA")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + timedelta(CA_DAYS))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    unique = list(dict.fromkeys(names))
    cert = (x509.CertificateBuilder().subject_name(_name(host)).issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + timedelta(SERVER_DAYS))
            .add_extension(x509.SubjectAlternativeName(unique), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    write_private(ca_key_path, _pem_key(ca_key))
    write_private(paths.keyfile, _pem_key(key))
    write_private(paths.certfile, cert.public_bytes(serialization.Encoding.PEM).decode())
    # Written last: its presence means the set is complete. Public, but 0600 does no harm.
    write_private(paths.cafile, ca.public_bytes(serialization.Encoding.PEM).decode())
