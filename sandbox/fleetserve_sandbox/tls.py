"""The sandbox's certificate authority and the hub's TLS certificate: made once with openssl, cached under the state dir.

The CA (``CA_DIR/ca.crt``, EC P-256, 10 years) is created the first time anything needs it and then
kept, so the images that trust it stay valid across fleets; deleting CA_DIR makes a new one (and the
stand-in images are rebuilt, their inputs include the CA). The hub's server certificate
(``CA_DIR/hub.crt``) names the host's sandbox address, 127.0.0.1 and localhost, and is re-issued when
the CA or the names change. Every stand-in image and every node trusts the CA: in the system store
(update-ca-certificates, which stdlib ``ssl``/urllib and curl read) and, in the images, in certifi's
bundle (requests and httpx use certifi, not the system store).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path

from fleetserve_sandbox import constants as C
from fleetserve_sandbox.system import SandboxError, run

CA_NAME = "fleetserve-sandbox-ca"  # file name in /usr/local/share/ca-certificates (images, nodes)
CA_SUBJECT = "/O=fleetserve sandbox/CN=fleetserve sandbox CA"
HUB_NAMES = (C.HOST_IP, "127.0.0.1", "localhost")
CA_DAYS = 3650
SERVER_DAYS = 825


def ca_cert(ca_dir: Path = C.CA_DIR) -> Path:
    return ca_dir / "ca.crt"


def ensure_ca(ca_dir: Path = C.CA_DIR) -> Path:
    """The CA certificate, created once (atomically: a half-made CA is never seen)."""
    cert = ca_cert(ca_dir)
    if cert.exists() and (ca_dir / "ca.key").exists():
        return cert
    if ca_dir.exists():  # half a CA (a file deleted by hand): its server certificates are worthless too
        shutil.rmtree(ca_dir)
    ca_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = ca_dir.with_name(f".{ca_dir.name}-staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(mode=0o700)
    try:
        run(["openssl", "req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-keyout", staging / "ca.key", "-out", staging / "ca.crt", "-days", str(CA_DAYS),
             "-subj", CA_SUBJECT, "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        (staging / "ca.key").chmod(0o600)
        (staging / "ca.crt").chmod(0o644)
        try:
            staging.rename(ca_dir)
        except OSError:  # another process made it first
            if not cert.exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    ca_dir.chmod(0o755)
    return cert


def ca_fingerprint(ca_dir: Path = C.CA_DIR) -> str:
    return hashlib.sha256(ca_cert(ca_dir).read_bytes()).hexdigest()


def ensure_server_cert(name: str = "hub", names: tuple[str, ...] = HUB_NAMES,
                       ca_dir: Path = C.CA_DIR) -> tuple[Path, Path]:
    """(certificate, key) for a TLS server known by `names` (IP addresses or DNS names), signed by the CA."""
    ensure_ca(ca_dir)
    cert, key, stamp = ca_dir / f"{name}.crt", ca_dir / f"{name}.key", ca_dir / f"{name}.json"
    wanted = {"ca": ca_fingerprint(ca_dir), "names": list(names)}
    with contextlib.suppress(OSError, ValueError):
        if cert.exists() and key.exists() and json.loads(stamp.read_text()) == wanted:
            return cert, key
    alt = ",".join(f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}" for n in names)
    tmp = ca_dir / f".{name}-{os.getpid()}"
    ext = tmp.with_suffix(".ext")
    ext.write_text(f"subjectAltName={alt}\nbasicConstraints=critical,CA:FALSE\n"
                   "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    try:
        run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", tmp.with_suffix(".key"), "-out", tmp.with_suffix(".csr"),
             "-subj", f"/O=fleetserve sandbox/CN={names[0]}"])
        run(["openssl", "x509", "-req", "-in", tmp.with_suffix(".csr"), "-CA", ca_cert(ca_dir),
             "-CAkey", ca_dir / "ca.key", "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
             "-days", str(SERVER_DAYS), "-sha256", "-extfile", ext, "-out", tmp.with_suffix(".crt")])
        tmp.with_suffix(".key").chmod(0o600)
        os.replace(tmp.with_suffix(".key"), key)
        os.replace(tmp.with_suffix(".crt"), cert)
        stamp.write_text(json.dumps(wanted) + "\n")
    finally:
        for suffix in (".key", ".csr", ".crt", ".ext"):
            tmp.with_suffix(suffix).unlink(missing_ok=True)
    return cert, key


def subject_hash(cert: Path) -> str:
    """openssl's subject hash: the name of the certificate's link in /etc/ssl/certs (`<hash>.0`)."""
    out = run(["openssl", "x509", "-hash", "-noout", "-in", cert]).stdout.strip()
    if not out:
        raise SandboxError(f"openssl printed no subject hash for {cert}")
    return out


def trust_in_tree(root: Path, cert: Path, *, bundle_from: Path | None = None) -> list[str]:
    """Make a Debian root filesystem trust `cert` the way update-ca-certificates does, without running
    anything in it: /usr/local/share/ca-certificates/<name>.crt, the link /etc/ssl/certs/<name>.pem and
    its `<hash>.0`, and the certificate appended to /etc/ssl/certs/ca-certificates.crt (read from
    `bundle_from`, default `root`, so an overlay upper layer can be filled from its lower layer).
    New files are written, never changed in place: `root` may share inodes with another tree.
    Returns the paths written (relative to root)."""
    pem = cert.read_text()
    src_bundle = (bundle_from or root) / "etc/ssl/certs/ca-certificates.crt"
    if not src_bundle.exists():
        raise SandboxError(f"{src_bundle} is missing: is ca-certificates installed in that tree?")
    written = []

    def write(rel: str, text: str) -> None:
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(dest.name + ".fleetserve-new")
        tmp.write_text(text)
        tmp.chmod(0o644)
        os.replace(tmp, dest)
        written.append(rel)

    def link(rel: str, target: str) -> None:
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        dest.symlink_to(target)
        written.append(rel)

    local = f"usr/local/share/ca-certificates/{CA_NAME}.crt"
    write(local, pem)
    link(f"etc/ssl/certs/{CA_NAME}.pem", f"/{local}")
    link(f"etc/ssl/certs/{subject_hash(cert)}.0", f"{CA_NAME}.pem")
    bundle = src_bundle.read_text()
    if pem.strip() not in bundle:
        bundle = bundle.rstrip("\n") + "\n" + pem if bundle.strip() else pem
    write("etc/ssl/certs/ca-certificates.crt", bundle)
    return written
