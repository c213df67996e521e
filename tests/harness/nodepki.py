"""Certificates for the real test node, signed by the control plane's CA (harness.pki).

The kubelet authenticates to the apiserver as `system:node:<name>` (group `system:nodes`, which the Node
authorizer and NodeRestriction admission check), serves its own API with a certificate for the node's IP,
and the apiserver calls it (logs, exec, port-forward) with a client certificate in `system:masters`, which
the kubelet's webhook authorizer allows. kube-proxy uses `system:kube-proxy`, bound by a default RBAC
binding to `system:node-proxier`. No anonymous access anywhere.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from harness.pki import Pki

DAYS = "3650"


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


def _openssl(*args: str | Path) -> None:
    proc = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def sign(
    pki: Pki,
    name: str,
    *,
    cn: str,
    orgs: tuple[str, ...] = (),
    server_ips: tuple[str, ...] = (),
    server_dns: tuple[str, ...] = (),
    serial: int,
) -> KeyPair:
    """A new RSA key and a certificate signed by the control plane's CA, next to the CA files.

    Client certificates (no `server_*`) carry `clientAuth`; server certificates `serverAuth` and the
    given subjectAltNames.
    """
    directory = pki.ca_cert.parent
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    ext = directory / f"{name}.ext"
    if server_ips or server_dns:
        alt = [f"IP:{ip}" for ip in server_ips] + [f"DNS:{d}" for d in server_dns]
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName={','.join(alt)}\n"
        )
    else:
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n"
        )
    subject = "".join(f"/O={o}" for o in orgs) + f"/CN={cn}"
    csr = directory / f"{name}.csr"
    _openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", pair.key, "-out", csr,
             "-subj", subject)  # fmt: skip
    _openssl("x509", "-req", "-in", csr, "-CA", pki.ca_cert, "-CAkey", pki.ca_key,
             "-set_serial", str(serial), "-days", DAYS, "-out", pair.cert, "-extfile", ext)  # fmt: skip
    return pair


def apiserver_kubelet_client(pki: Pki) -> KeyPair:
    """What the apiserver presents to kubelets (logs, exec, port-forward, pod proxy via the node)."""
    return sign(pki, "apiserver-kubelet-client", cn="kube-apiserver-kubelet-client",
                orgs=("system:masters",), serial=10)  # fmt: skip


def kubelet_client(pki: Pki, node: str) -> KeyPair:
    return sign(pki, f"kubelet-{node}-client", cn=f"system:node:{node}", orgs=("system:nodes",), serial=11)


def kubelet_serving(pki: Pki, node: str, ip: str) -> KeyPair:
    return sign(pki, f"kubelet-{node}-serving", cn=node, server_ips=(ip,), server_dns=(node,), serial=12)


def kube_proxy_client(pki: Pki) -> KeyPair:
    return sign(pki, "kube-proxy-client", cn="system:kube-proxy", serial=13)


def coredns_client(pki: Pki) -> KeyPair:
    """CoreDNS reads Services, EndpointSlices, Namespaces and Pods: a ClusterRole the node creates."""
    return sign(pki, "coredns-client", cn="system:torchjob:coredns", serial=14)
