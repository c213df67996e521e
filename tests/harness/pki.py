"""Certificates and keys for one local control plane, made with the `openssl` command.

A private CA signs the apiserver's serving certificate, so clients verify TLS for real (no
`insecure-skip-tls-verify`, hence no urllib3 InsecureRequestWarning). A separate RSA key pair signs
service-account tokens (apiserver and controller-manager share it).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

# DNS names and IPs the serving certificate must cover: loopback for us, the in-cluster names for pods.
SERVING_DNS = (
    "localhost",
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = @alt
[alt]
"""


@dataclass(frozen=True)
class Pki:
    ca_cert: Path
    ca_key: Path
    serving_cert: Path
    serving_key: Path
    sa_key: Path
    sa_pub: Path


def openssl_config(ips: tuple[str, ...], dns: tuple[str, ...] = SERVING_DNS) -> str:
    """The openssl config text with the serving certificate's subjectAltName entries."""
    alt = [f"IP.{i} = {ip}" for i, ip in enumerate(ips, 1)] + [f"DNS.{i} = {d}" for i, d in enumerate(dns, 1)]
    return _OPENSSL_CONFIG + "\n".join(alt) + "\n"


def generate(directory: Path, ips: tuple[str, ...]) -> Pki:
    """Writes CA, serving and service-account key material into `directory` (created if missing)."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(
        ca_cert=directory / "ca.crt",
        ca_key=directory / "ca.key",
        serving_cert=directory / "apiserver.crt",
        serving_key=directory / "apiserver.key",
        sa_key=directory / "sa.key",
        sa_pub=directory / "sa.pub",
    )
    cnf = directory / "openssl.cnf"
    cnf.write_text(openssl_config(ips))
    csr = directory / "apiserver.csr"
    days = "3650"
    _openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", pki.ca_key,
             "-out", pki.ca_cert, "-days", days, "-subj", "/CN=torchjob-local-ca",
             "-config", cnf, "-extensions", "v3_ca")  # fmt: skip
    _openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", pki.serving_key, "-out", csr,
             "-subj", "/CN=kube-apiserver", "-config", cnf)  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", pki.ca_cert, "-CAkey", pki.ca_key, "-set_serial", "2",
             "-days", days, "-out", pki.serving_cert,
             "-extfile", cnf, "-extensions", "v3_server")  # fmt: skip
    _openssl("genrsa", "-out", pki.sa_key, "2048")
    _openssl("rsa", "-in", pki.sa_key, "-pubout", "-out", pki.sa_pub)
    return pki


def sign_serving_cert(pki: Pki, directory: Path, cn: str, ips: tuple[str, ...]) -> tuple[Path, Path]:
    """A serving certificate for another local server (Kueue's webhooks), signed by the control plane's
    CA so the apiserver verifies it with the same CA bundle; returns (tls.crt, tls.key) in `directory`,
    the names controller-runtime's webhook server reads."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key, csr, cnf = (directory / n for n in ("tls.crt", "tls.key", "tls.csr", "openssl.cnf"))
    cnf.write_text(openssl_config(ips, dns=("localhost",)))
    _openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", key, "-out", csr,
             "-subj", f"/CN={cn}", "-config", cnf)  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", pki.ca_cert, "-CAkey", pki.ca_key, "-set_serial", "3",
             "-days", "3650", "-out", cert, "-extfile", cnf, "-extensions", "v3_server")  # fmt: skip
    return cert, key


def _openssl(*args: str | Path) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")
