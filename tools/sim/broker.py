"""A real mosquitto for tests and the demo, configured as the shipped clinic broker.

The configuration is the one the wheel ships (qis.gateway, deploy/mosquitto/): TLS with a
certificate authority made here for the run, a password file (hashed by mosquitto_passwd),
the topic ACL, a persistent store. Only the paths and the port change: the broker listens
on a free port of 127.0.0.1, its files live in one directory (0700; keys and passwords
0600). kill() and start() stop and restart it on the same store (a broker crash).
"""
from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..errors import ToolError

GATEWAY_USER = "qis-gateway"
_SHIPPED = "/etc/qis/mosquitto"
_SHIPPED_STORE = "/var/lib/qis/mosquitto/"


def shipped(name: str) -> str:
    """A file of the shipped clinic configuration (mosquitto.conf, acl)."""
    return (resources.files("qis.gateway") / "deploy" / "mosquitto" / name).read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_ca(directory: Path, host: str = "127.0.0.1") -> Path:
    """A certificate authority and a server certificate for host; returns the CA's path."""
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "qis-edge test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / "server.key", key.private_bytes(serialization.Encoding.PEM,
                                                               serialization.PrivateFormat.TraditionalOpenSSL,
                                                               serialization.NoEncryption()))
    return directory / "ca.crt"


class Broker:
    """mosquitto with the shipped clinic configuration, on a free port of 127.0.0.1."""

    def __init__(self, directory: Path, devices: list[str], port: int | None = None) -> None:
        binary = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
        if binary is None or not shutil.which("mosquitto_passwd"):
            raise ToolError("mosquitto not found: apt-get install mosquitto (the MQTT link's broker)")
        self.binary = binary
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        self.port = port or free_port()
        self.ca = make_ca(self.dir)
        self.passwords = {name: secrets.token_urlsafe(18) for name in [GATEWAY_USER, *devices]}
        passwd = self.dir / "passwd"
        _write_private(passwd, "".join(f"{u}:{p}\n" for u, p in self.passwords.items()).encode())
        subprocess.run(["mosquitto_passwd", "-U", str(passwd)], check=True, capture_output=True, timeout=60)
        (self.dir / "acl").write_text(shipped("acl"))
        (self.dir / "store").mkdir(exist_ok=True, mode=0o700)
        conf = shipped("mosquitto.conf").replace(_SHIPPED_STORE, f"{self.dir}/store/").replace(_SHIPPED, str(self.dir))
        conf = conf.replace("listener 8883", f"listener {self.port} 127.0.0.1")
        conf += f"\nlog_dest file {self.dir}/mosquitto.log\nlog_type error\nlog_type warning\nlog_type notice\n"
        if os.geteuid() == 0:  # mosquitto started as root drops to user mosquitto: keep the files' owner
            conf += "user root\n"
        (self.dir / "mosquitto.conf").write_text(conf)
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtts://127.0.0.1:{self.port}"

    def password_file(self, user: str) -> Path:
        """A file (0600) holding user's password, for --mqtt-password-file."""
        path = self.dir / f"{user}.password"
        _write_private(path, self.passwords[user].encode())
        return path

    def start(self) -> Broker:
        self.proc = subprocess.Popen([self.binary, "-c", str(self.dir / "mosquitto.conf")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ToolError(f"mosquitto exited: {self.proc.stderr.read().decode(errors='replace')[-500:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise ToolError(f"mosquitto did not listen on port {self.port} within 15 s")

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (what is not yet saved to the store is lost)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
