"""Throwaway TLS material for the test broker: a CA, the broker's stores, a client certificate.

Made with ``keytool`` (the JDK the broker runs on) in a test's temporary directory; only the client's
private key comes from ``openssl``, because keytool cannot write a key in PEM for Python. Passwords
reach the tools through the environment, never their command lines.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: keytool is a JVM: skip the JIT's top tier and the parallel collector, it only runs for a moment.
FAST_JVM = ("-J-XX:TieredStopAtLevel=1", "-J-XX:+UseSerialGC")
PASSWORD_VARIABLE = "CERTS_STORE_PASSWORD"


@dataclass(frozen=True)
class CertificateAuthority:
    keystore: Path  # PKCS12: the CA's key, to sign with
    pem: Path  # its certificate, what a Python client trusts
    password: str


@dataclass(frozen=True)
class BrokerStores:
    keystore: Path  # PKCS12: the broker's key and its certificate chain
    truststore: Path  # PKCS12: the CA, which signs accepted client certificates
    password: str  # of both stores and of the key


@dataclass(frozen=True)
class ClientCertificate:
    certfile: Path
    keyfile: Path  # encrypted PEM
    password: str


def tools_available() -> bool:
    return shutil.which("keytool") is not None and shutil.which("openssl") is not None


def _keytool(password: str, *arguments: str | Path) -> None:
    keytool = shutil.which("keytool")
    assert keytool is not None, "keytool not found (it comes with the JDK)"
    subprocess.run(
        [keytool, *FAST_JVM, *map(str, arguments)],
        env={**os.environ, PASSWORD_VARIABLE: password},
        check=True,
        capture_output=True,
    )


def _store(path: Path) -> tuple[str, ...]:
    return ("-keystore", str(path), "-storetype", "PKCS12", "-storepass:env", PASSWORD_VARIABLE)


def certificate_authority(directory: Path, name: str, password: str) -> CertificateAuthority:
    directory.mkdir(parents=True, exist_ok=True)
    keystore, pem = directory / f"{name}.p12", directory / f"{name}.pem"
    _keytool(
        password,
        "-genkeypair",
        "-alias",
        "ca",
        "-keyalg",
        "EC",
        "-groupname",
        "secp256r1",
        "-dname",
        f"CN={name}",
        "-ext",
        "bc:c",
        "-validity",
        "2",
        *_store(keystore),
    )
    _keytool(password, "-exportcert", "-rfc", "-alias", "ca", "-file", pem, *_store(keystore))
    return CertificateAuthority(keystore, pem, password)


def _sign(ca: CertificateAuthority, request: Path, certificate: Path, *extensions: str) -> None:
    options = [option for extension in extensions for option in ("-ext", extension)]
    _keytool(
        ca.password,
        "-gencert",
        "-rfc",
        "-alias",
        "ca",
        "-validity",
        "2",
        "-infile",
        request,
        "-outfile",
        certificate,
        *options,
        *_store(ca.keystore),
    )


def broker_stores(directory: Path, ca: CertificateAuthority, password: str) -> BrokerStores:
    """A broker key whose certificate, signed by ``ca``, names 127.0.0.1 and localhost."""
    keystore, truststore = directory / "broker.p12", directory / "truststore.p12"
    request, certificate = directory / "broker.csr", directory / "broker.pem"
    _keytool(
        password,
        "-genkeypair",
        "-alias",
        "broker",
        "-keyalg",
        "EC",
        "-groupname",
        "secp256r1",
        "-dname",
        "CN=localhost",
        "-validity",
        "2",
        *_store(keystore),
    )
    _keytool(password, "-certreq", "-alias", "broker", "-file", request, *_store(keystore))
    _sign(ca, request, certificate, "SAN=IP:127.0.0.1,DNS:localhost", "EKU=serverAuth")
    # The CA first, so that the signed reply can be chained to it.
    _keytool(password, "-importcert", "-noprompt", "-alias", "ca", "-file", ca.pem, *_store(keystore))
    _keytool(password, "-importcert", "-alias", "broker", "-file", certificate, *_store(keystore))
    _keytool(password, "-importcert", "-noprompt", "-alias", "ca", "-file", ca.pem, *_store(truststore))
    return BrokerStores(keystore, truststore, password)


def client_certificate(directory: Path, ca: CertificateAuthority, password: str) -> ClientCertificate:
    """An encrypted client key (openssl) and its certificate signed by ``ca`` (keytool)."""
    openssl = shutil.which("openssl")
    assert openssl is not None, "openssl not found"
    keyfile, request, certfile = directory / "client.key", directory / "client.csr", directory / "client.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-subj",
            "/CN=fund-worker",
            "-keyout",
            str(keyfile),
            "-passout",
            f"env:{PASSWORD_VARIABLE}",
            "-out",
            str(request),
        ],
        env={**os.environ, PASSWORD_VARIABLE: password},
        check=True,
        capture_output=True,
    )
    _sign(ca, request, certfile, "EKU=clientAuth")
    return ClientCertificate(certfile, keyfile, password)
