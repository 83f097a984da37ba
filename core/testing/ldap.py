"""A real OpenLDAP ``slapd`` on a loopback port, for tests of LDAP authentication.

:class:`SlapdServer` writes a minimal ``slapd.conf`` (mdb backend, suffix ``dc=example,dc=test``,
a root DN) into a temporary directory, loads the users with ``slapadd`` before the start (or
``ldapadd`` through the running server after it), runs ``slapd -d 0`` in the foreground on a
free port of 127.0.0.1, waits (bounded) until the port accepts connections, and stops it
(SIGTERM, then SIGKILL) and removes the directory on exit. Every instance is independent, so
pytest-xdist workers each run their own.

Needs Debian's ``slapd`` and ``ldap-utils`` (``scripts/install-peers``; peer name ``slapd``).
It runs as whoever runs the tests, root included: every file is in the temp dir, owned by that
user, and no ``-u``/``-g`` is passed. Nothing here imports pytest or an LDAP client library.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Self

from mediacache.testing.peers import PeerError, ProcessGroup, free_port

__all__ = ["SLAPD", "SlapdServer", "ssha"]

SLAPD = "/usr/sbin/slapd"
SLAPADD = "/usr/sbin/slapadd"
SCHEMA_DIR = Path("/etc/ldap/schema")
MODULE_DIR = Path("/usr/lib/ldap")
_SCHEMAS = ("core", "cosine", "nis", "inetorgperson")


def ssha(password: str, salt: bytes | None = None) -> str:
    """``{SSHA}`` userPassword value (salted SHA-1, what ``slappasswd`` makes by default)."""
    salt = secrets.token_bytes(8) if salt is None else salt
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode("ascii")


def _ldif_attr(name: str, value: str) -> str:
    """One LDIF line; base64 (``name::``) when the value is not a SAFE-STRING (RFC 2849)."""
    safe = (
        value.isascii()
        and value.isprintable()
        and not value.startswith((" ", ":", "<"))
        and not value.endswith(" ")
    )
    if safe:
        return f"{name}: {value}"
    return f"{name}:: {base64.b64encode(value.encode()).decode('ascii')}"


def _dn_value(value: str) -> str:
    """Escape an attribute value for use in a DN (RFC 4514 2.4)."""
    out = []
    for i, ch in enumerate(value):
        if ch in ',+"\\<>;=' or (ch == "#" and i == 0) or (ch == " " and i in (0, len(value) - 1)):
            out.append("\\" + ch)
        elif ch == "\x00":
            out.append("\\00")
        else:
            out.append(ch)
    return "".join(out)


class SlapdServer:
    """A throw-away OpenLDAP server; use as a context manager.

    ``users`` maps uid to password; they go under ``ou=people``. ``add_users(..., ou="staff")``
    adds more (before or after the start), e.g. a second entry with an existing uid to make a
    filter ambiguous. With ``anonymous_search=False`` only bound clients may search (bind as
    :attr:`root_dn` / :attr:`root_password`, or as any user); anonymous clients may only bind.
    Passwords are stored as ``{SSHA}`` hashes, never readable by anyone but their owner.
    """

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        suffix: str = "dc=example,dc=test",
        anonymous_search: bool = True,
        start_timeout: float = 10.0,
        group: ProcessGroup | None = None,
    ) -> None:
        self.suffix = suffix
        self.anonymous_search = anonymous_search
        self.start_timeout = start_timeout
        self.root_dn = f"cn=admin,{suffix}"
        self.root_password = secrets.token_urlsafe(12)
        self.host = "127.0.0.1"
        self.port = 0
        self._group = group or ProcessGroup()
        self._own_group = group is None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._ous: set[str] = set()
        self._pending: list[str] = []  # LDIF records to slapadd at start
        if users:
            self.add_users(users)

    # ------------------------------------------------------------------ public

    @property
    def url(self) -> str:
        """``ldap://127.0.0.1:PORT`` once started."""
        return f"ldap://{self.host}:{self.port}"

    @property
    def base_dn(self) -> str:
        """The suffix: search base for the whole directory."""
        return self.suffix

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def user_dn(self, uid: str, ou: str = "people") -> str:
        """DN of a user added with :meth:`add_users`."""
        return f"uid={_dn_value(uid)},ou={_dn_value(ou)},{self.suffix}"

    def add_users(self, users: Mapping[str, str], *, ou: str = "people") -> list[str]:
        """Add ``uid -> password`` entries under ``ou=OU`` (created if new); returns their DNs.

        Before :meth:`start` they are loaded by ``slapadd``; afterwards ``ldapadd`` sends them
        to the running server as the root DN.
        """
        records = []
        if ou not in self._ous:
            self._ous.add(ou)
            records.append(
                "\n".join(
                    [
                        f"dn: ou={_dn_value(ou)},{self.suffix}",
                        "objectClass: organizationalUnit",
                        _ldif_attr("ou", ou),
                    ]
                )
            )
        dns = []
        for uid, password in users.items():
            dn = self.user_dn(uid, ou)
            dns.append(dn)
            records.append(
                "\n".join(
                    [
                        _ldif_attr("dn", dn),
                        "objectClass: inetOrgPerson",
                        _ldif_attr("uid", uid),
                        _ldif_attr("cn", uid),
                        _ldif_attr("sn", uid),
                        _ldif_attr("userPassword", ssha(password)),
                    ]
                )
            )
        if self._proc is None:
            self._pending += records
        else:
            self._ldapadd(records)
        return dns

    def start(self) -> Self:
        """Write the config, load the data, start slapd and wait until it accepts connections."""
        if self._proc is not None:
            return self
        if not (os.access(SLAPD, os.X_OK) and os.access(SLAPADD, os.X_OK)):
            raise PeerError(f"{SLAPD} or {SLAPADD} missing (Debian packages slapd, ldap-utils)")
        self._dir = Path(tempfile.mkdtemp(prefix="mediacache-slapd-"))
        (self._dir / "db").mkdir()
        conf = self._dir / "slapd.conf"
        conf.write_text(self._config())
        base = "\n".join(
            [
                f"dn: {self.suffix}",
                "objectClass: dcObject",
                "objectClass: organization",
                _ldif_attr("dc", self.suffix.split(",")[0].partition("=")[2]),
                "o: mediacache tests",
            ]
        )
        ldif = self._dir / "data.ldif"
        ldif.write_text("\n\n".join([base, *self._pending]) + "\n")
        self._pending = []
        self._tool([SLAPADD, "-q", "-f", conf, "-l", ldif])
        # The port is free now but may be taken before slapd binds it (xdist): retry.
        last = ""
        for _ in range(5):
            self.port = free_port()
            last = self._launch(conf)
            if not last:
                return self
        self._cleanup_dir()
        raise PeerError(f"slapd did not start: {last}")

    def stop(self) -> None:
        """Stop slapd (SIGTERM, SIGKILL after 5 s) and remove its directory."""
        if self._proc is not None:
            self._group.stop(self._proc, timeout=5.0)
            self._proc = None
        if self._own_group:
            self._group.stop_all()
        self._cleanup_dir()

    def __enter__(self) -> Self:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<SlapdServer {self.url} {self.suffix} {state}>"

    # ------------------------------------------------------------------ internals

    def _config(self) -> str:
        assert self._dir is not None
        read = "by users read by anonymous read" if self.anonymous_search else "by users read"
        lines = [
            *(f"include {SCHEMA_DIR / name}.schema" for name in _SCHEMAS),
            f"pidfile {self._dir / 'slapd.pid'}",
            f"argsfile {self._dir / 'slapd.args'}",
            f"modulepath {MODULE_DIR}",
            "moduleload back_mdb",
            "database mdb",
            "maxsize 16777216",
            f'suffix "{self.suffix}"',
            f'rootdn "{self.root_dn}"',
            f"rootpw {ssha(self.root_password)}",
            f"directory {self._dir / 'db'}",
            "access to attrs=userPassword by self read by anonymous auth by * none",
            f"access to * {read} by anonymous auth",
        ]
        return "\n".join(lines) + "\n"

    def _launch(self, conf: Path) -> str:
        """Start slapd on :attr:`port`; "" when it accepts connections, else why it failed."""
        assert self._dir is not None
        log = self._dir / "slapd.log"
        with open(log, "wb") as err:
            proc = self._group.start(
                [SLAPD, "-f", conf, "-h", f"{self.url}/", "-d", "0"],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5):
                    self._proc = proc
                    return ""
            except OSError:
                time.sleep(0.02)
        self._group.stop(proc, timeout=2.0)
        text = log.read_text(errors="replace").strip()[-2000:]
        return f"exit {proc.returncode} on port {self.port}: {text or 'no output'}"

    def _ldapadd(self, records: Sequence[str]) -> None:
        assert self._dir is not None
        ldapadd = shutil.which("ldapadd")
        if ldapadd is None:
            raise PeerError("ldapadd missing (Debian package ldap-utils)")
        ldif = self._dir / f"add-{secrets.token_hex(4)}.ldif"
        ldif.write_text("\n\n".join(records) + "\n")
        secret = self._dir / "rootpw"
        secret.write_text(self.root_password)  # -y: the whole file is the password, no newline
        secret.chmod(0o600)
        self._tool([ldapadd, "-x", "-H", self.url, "-D", self.root_dn, "-y", secret, "-f", ldif])

    @staticmethod
    def _tool(args: Sequence[str | os.PathLike[str]], timeout: float = 30.0) -> None:
        cmd = [os.fspath(a) for a in args]
        try:
            done = subprocess.run(cmd, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise PeerError(f"timed out after {timeout:g} s: {' '.join(cmd)}") from None
        if done.returncode != 0:
            err = (done.stderr or done.stdout).decode(errors="replace").strip()[-2000:]
            raise PeerError(f"exit {done.returncode}: {' '.join(cmd)}\n{err}")

    def _cleanup_dir(self) -> None:
        if self._dir is not None:
            with contextlib.suppress(OSError):
                shutil.rmtree(self._dir)
            self._dir = None
