"""Throwaway TLS material for the local stack: a CA and one server certificate for
127.0.0.1/localhost, made with the `openssl` command at first start and kept under the
stack's home (private keys mode 0600). For tests and local runs only: production brings its
own PKI (docs/security.md)."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_DAYS = 3650
_SUBJECT_CA = "/CN=streamfer local CA"
_SUBJECT_SERVER = "/CN=localhost"
_SAN = "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"


class TlsError(Exception):
    """The TLS material could not be made; the message names the cause and the fix."""


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA that signed the server certificate, and the server's key pair."""

    ca: Path  # ca.pem: what clients trust (ssl.ca.location, ssl_ca_certs)
    cert: Path  # server.pem: the server's certificate
    key: Path  # server.key: its private key (mode 0600)
    ca_key: Path  # ca.key: kept only to sign again (mode 0600)

    @property
    def chain_and_key(self) -> Path:
        """server-keystore.pem: key + certificate in one file (Kafka's PEM keystore)."""
        return self.cert.with_name("server-keystore.pem")


def _openssl() -> str:
    found = shutil.which("openssl")
    if found is None:
        raise TlsError(
            "the `openssl` command is missing: install it (apt-get install openssl) to make "
            "the local stack's TLS certificates"
        )
    return found


def _run(args: list[str], cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        raise TlsError(f"openssl {' '.join(args[1:3])} failed: {done.stderr.strip()[-500:]}")


def ensure_certificates(folder: Path) -> Certificates:
    """The CA and server certificate under `folder`, made once; idempotent."""
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    certs = Certificates(
        ca=folder / "ca.pem",
        cert=folder / "server.pem",
        key=folder / "server.key",
        ca_key=folder / "ca.key",
    )
    if all(p.is_file() for p in (certs.ca, certs.cert, certs.key, certs.chain_and_key)):
        return certs
    openssl = _openssl()
    old_umask = os.umask(0o077)  # keys are created private, not chmod-ed after the fact
    try:
        _run(
            [
                openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", str(_DAYS),
                "-subj", _SUBJECT_CA, "-keyout", certs.ca_key.name, "-out", certs.ca.name,
            ],
            folder,
        )  # fmt: skip
        _run(
            [
                openssl, "req", "-newkey", "rsa:2048", "-nodes", "-subj", _SUBJECT_SERVER,
                "-keyout", certs.key.name, "-out", "server.csr",
            ],
            folder,
        )  # fmt: skip
        (folder / "san.ext").write_text(_SAN + "\n")
        _run(
            [
                openssl, "x509", "-req", "-in", "server.csr", "-CA", certs.ca.name,
                "-CAkey", certs.ca_key.name, "-CAcreateserial", "-days", str(_DAYS),
                "-extfile", "san.ext", "-out", certs.cert.name,
            ],
            folder,
        )  # fmt: skip
    finally:
        os.umask(old_umask)
    # Kafka's PEM keystore wants an unencrypted PKCS#8 key followed by the certificate chain.
    _run(
        [openssl, "pkcs8", "-topk8", "-nocrypt", "-in", certs.key.name, "-out", "server.pk8"],
        folder,
    )
    chain = (folder / "server.pk8").read_text() + certs.cert.read_text() + certs.ca.read_text()
    certs.chain_and_key.write_text(chain)
    for private in (certs.key, certs.ca_key, certs.chain_and_key, folder / "server.pk8"):
        os.chmod(private, 0o600)
    os.chmod(certs.ca, 0o644)
    os.chmod(certs.cert, 0o644)
    for scratch in ("server.csr", "san.ext"):
        (folder / scratch).unlink(missing_ok=True)
    return certs
