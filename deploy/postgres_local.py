"""A throwaway / local PostgreSQL server started from the installed binaries (no Docker).

Used by the tests (a real server for the warehouse and publish checks) and by the non-Docker
topology (`deploy.localcluster`) for the `airflow`, `mlflow` and `warehouse` databases.

    with LocalPostgres(temp_data_dir(), free_port()).start() as pg:
        url = pg.create_database("warehouse")   # postgresql+psycopg2://recsys:recsys@127.0.0.1:PORT/warehouse

initdb and postgres refuse to run as root: when this process is root, every server command runs as
the OS user `postgres` (`runuser -u postgres -- ...`) and the data directory is chowned to it (its
parent directories must be traversable by that user: not under a 0700 directory such as pytest's
`tmp_path`; `temp_data_dir()` makes a suitable one under the temp dir). As any other user the
binaries run directly, as that user.

Authentication: the superuser `postgres` is reachable only over the unix socket inside the data
directory (trust, which only the data directory's owner -- and root -- can reach); TCP listens on
`host` only, with scram-sha-256 passwords for 127.0.0.1/::1. The application role (`user`, LOGIN +
CREATEDB) owns the databases made by `create_database`.

Binaries: `$RECSYS_PG_BINDIR`, else `pg_config --bindir`, else the newest
`/usr/lib/postgresql/<major>/bin`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["LocalPostgres", "PostgresError", "find_bindir", "free_port", "temp_data_dir"]

SUPERUSER = "postgres"  # the bootstrap superuser initdb creates (reachable over the unix socket only)
OS_USER = "postgres"  # the OS user the server runs as when we are root
_REQUIRED = ("initdb", "pg_ctl", "postgres")
_CONF_NAME = "recsys_local.conf"  # rewritten on every start: port, listen address, socket dir
_SOCKET_PATH_MAX = 103  # sun_path is 108 bytes on Linux (104 on BSD/macOS) including ".s.PGSQL.<port>"


class PostgresError(RuntimeError):
    """The local PostgreSQL server could not be set up, started, stopped or administered."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on `host` right now (the OS picks it; small race until it is bound)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def temp_data_dir(prefix: str = "recsys-pg-") -> Path:
    """A fresh `<tmp>/<prefix>XXXX/data` path (not created) whose parent is mode 0755.

    `tempfile.mkdtemp` makes 0700 directories, which the `postgres` OS user cannot traverse when we
    are root; the parent is opened up to 0755 so the server (and its log next to the data dir) can.
    """
    parent = Path(tempfile.mkdtemp(prefix=prefix))
    parent.chmod(0o755)
    return parent / "data"


def _has_binaries(bindir: Path) -> bool:
    return all((bindir / b).is_file() and os.access(bindir / b, os.X_OK) for b in _REQUIRED)


def find_bindir() -> Path:
    """The directory holding initdb, pg_ctl and postgres.

    Raises:
        PostgresError: none found; the message lists where it looked and which binary was missing.
    """
    tried: list[str] = []
    env = os.environ.get("RECSYS_PG_BINDIR")
    candidates: list[Path] = []
    if env:
        candidates.append(Path(env))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True).stdout.strip()
            if out:
                candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            tried.append(f"{pg_config} --bindir (failed)")

    def _major(p: str) -> tuple[int, str]:
        v = Path(p).parent.name
        return (int(v) if v.isdigit() else -1, v)

    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_major, reverse=True)]
    for on_path in ("initdb", "pg_ctl"):
        found = shutil.which(on_path)
        if found:
            candidates.append(Path(found).parent)
    for c in candidates:
        if _has_binaries(c):
            return c
        missing = [b for b in _REQUIRED if not (c / b).is_file()]
        tried.append(f"{c} (missing {', '.join(missing) or 'execute permission'})")
    raise PostgresError(
        "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found; looked in: "
        + ("; ".join(tried) or "$RECSYS_PG_BINDIR unset, no pg_config on PATH, no /usr/lib/postgresql/*/bin")
        + ". Install the server (Debian: apt-get install postgresql-15) or set RECSYS_PG_BINDIR."
    )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"(no server log at {path}: {e})"
    return "\n".join(text.splitlines()[-lines:]) or "(server log is empty)"


@dataclass
class LocalPostgres:
    """A local PostgreSQL server owning `data_dir`, listening on `host:port`.

    `start()` initialises the data directory when it is empty (or absent), starts the server and
    creates the login role `user`; it is idempotent, as is `stop()`. `durable=False` turns fsync off: for throwaway servers
    (tests, benchmarks), whose data a crash may lose. Usable as a context manager
    (`__exit__` stops the server; the data directory is kept).
    """

    data_dir: Path
    port: int
    host: str = "127.0.0.1"
    user: str = "recsys"  # role created with LOGIN + CREATEDB
    password: str = "recsys"
    durable: bool = True  # False: fsync/synchronous_commit/full_page_writes off (tests, benchmarks: fast, crash-unsafe)

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir).absolute()
        self.port = int(self.port)
        self._bindir: Path | None = None

    # -- paths and process plumbing ------------------------------------------------------------

    @property
    def bindir(self) -> Path:
        """Where the server binaries are (looked up once)."""
        if self._bindir is None:
            self._bindir = find_bindir()
        return self._bindir

    @property
    def log_file(self) -> Path:
        """The server log: next to the data directory (`<data_dir>.log`), outside it."""
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    @property
    def socket_dir(self) -> Path:
        """The unix socket directory: the data directory itself (no clash with a system server)."""
        return self.data_dir

    @staticmethod
    def _as_root() -> bool:
        return os.geteuid() == 0

    def _os_user(self) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(OS_USER)
        except KeyError:
            raise PostgresError(
                f"running as root, but there is no OS user {OS_USER!r} to run the server as "
                "(postgres refuses root); create it (useradd --system postgres) or run as a non-root user"
            ) from None

    def _cmd(self, binary: str, *args: str) -> list[str]:
        path = self.bindir / binary
        if not path.is_file():
            raise PostgresError(f"{binary} not found in {self.bindir}")
        cmd = [str(path), *args]
        if self._as_root():
            runuser = shutil.which("runuser") or ("/usr/sbin/runuser" if Path("/usr/sbin/runuser").exists() else None)
            if runuser is None:
                raise PostgresError("running as root but `runuser` is not available to switch to the postgres OS user")
            cmd = [runuser, "-u", OS_USER, "--", *cmd]
        return cmd

    def _run(self, binary: str, *args: str, timeout: float = 60, check: bool = True, **kw: Any) -> subprocess.CompletedProcess[str]:
        cmd = self._cmd(binary, *args)
        try:
            # cwd "/": root's cwd may be unreadable for the postgres user
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd="/", **kw)
        except subprocess.TimeoutExpired as e:
            raise PostgresError(f"{binary} timed out after {timeout:.0f}s: {' '.join(cmd)}\nserver log tail:\n{_tail(self.log_file)}") from e
        if check and proc.returncode != 0:
            raise PostgresError(
                f"{binary} failed (exit {proc.returncode}): {' '.join(cmd)}\n{(proc.stdout + proc.stderr).strip()}"
                + (f"\nserver log tail ({self.log_file}):\n{_tail(self.log_file)}" if binary == "pg_ctl" else "")
            )
        return proc

    def _chown(self, path: Path) -> None:
        if self._as_root():
            u = self._os_user()
            os.chown(path, u.pw_uid, u.pw_gid)

    def _prepare_dirs(self) -> None:
        """Create the data directory (0700, owned by the server's OS user) and its log file."""
        self.data_dir.parent.mkdir(parents=True, exist_ok=True)
        if not self.data_dir.exists():
            self.data_dir.mkdir(mode=0o700)
        self._chown(self.data_dir)
        self.data_dir.chmod(0o700)
        if not self.log_file.exists():
            self.log_file.touch(mode=0o644)
        self._chown(self.log_file)
        if self._as_root():
            # the postgres OS user must reach the directory through every parent
            probe = subprocess.run(
                ["runuser", "-u", OS_USER, "--", "test", "-w", str(self.data_dir), "-a", "-x", str(self.data_dir)],
                capture_output=True, cwd="/",
            )
            if probe.returncode != 0:
                blocked = [str(p) for p in reversed(self.data_dir.parents) if p.exists() and not (p.stat().st_mode & 0o001)]
                raise PostgresError(
                    f"the {OS_USER!r} OS user cannot reach {self.data_dir}: a parent directory is not traversable "
                    f"(no o+x: {', '.join(blocked) or '?'}); use a data dir under a 0755 directory, e.g. temp_data_dir()"
                )

    def _initialised(self) -> bool:
        return (self.data_dir / "PG_VERSION").is_file()

    def _initdb(self, timeout: float) -> None:
        if any(self.data_dir.iterdir()):
            raise PostgresError(f"{self.data_dir} is neither empty nor a PostgreSQL data directory (no PG_VERSION): refusing to initdb over it")
        self._run(
            "initdb",
            "-D", str(self.data_dir),
            "-U", SUPERUSER,
            "--auth-local=trust",  # the socket lives in the 0700 data dir: only its owner (and root) can reach it
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            timeout=timeout,
        )
        conf = self.data_dir / "postgresql.conf"
        with conf.open("a") as f:
            f.write(f"\n# recsys: per-start settings (port, listen address, socket dir)\ninclude_if_exists = '{_CONF_NAME}'\n")

    def _write_conf(self) -> None:
        sock = str(self.socket_dir)
        if len(sock) + len(f"/.s.PGSQL.{self.port}") > _SOCKET_PATH_MAX:
            raise PostgresError(f"unix socket path under {sock} is too long for the OS (max ~{_SOCKET_PATH_MAX} bytes): use a shorter data dir")
        path = self.data_dir / _CONF_NAME
        path.write_text(
            "# written by deploy.postgres_local on every start\n"
            f"port = {self.port}\n"
            f"listen_addresses = '{self.host}'\n"
            f"unix_socket_directories = '{sock}'\n"
            "max_connections = 200\n"
            + ("" if self.durable else "fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n")
        )
        self._chown(path)

    # -- superuser administration over the unix socket ----------------------------------------

    def _admin(self, database: str = "postgres") -> Any:
        import psycopg2  # noqa: PLC0415 - only needed once a server runs

        try:
            conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user=SUPERUSER, dbname=database, connect_timeout=10)
        except psycopg2.Error as e:
            raise PostgresError(f"cannot connect as {SUPERUSER} over {self.socket_dir}: {e}") from e
        conn.autocommit = True  # CREATE DATABASE refuses to run inside a transaction
        return conn

    def _ensure_role(self) -> None:
        from psycopg2 import sql  # noqa: PLC0415

        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (self.user,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(
                    sql.SQL(verb + " ROLE {} WITH LOGIN CREATEDB PASSWORD %s").format(sql.Identifier(self.user)),
                    (self.password,),
                )
        finally:
            conn.close()

    # -- the public API -----------------------------------------------------------------------

    def _running_port(self) -> int | None:
        """The port in postmaster.pid (line 4), None when unreadable."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
            return int(lines[3])
        except (OSError, IndexError, ValueError):
            return None

    def running(self) -> bool:
        """Whether a server runs on this data directory (`pg_ctl status`)."""
        if not self._initialised():
            return False
        return self._run("pg_ctl", "status", "-D", str(self.data_dir), check=False, timeout=30).returncode == 0

    def start(self, timeout: float = 60) -> LocalPostgres:
        """initdb when needed, start the server (waits until it accepts connections), create the role.

        Idempotent: when the server already runs, only the role is (re)asserted.

        Raises:
            PostgresError: binaries missing, directory unusable, or the server failed to start
                (the message carries the server log's tail).
        """
        bindir = self.bindir  # fail early, naming the missing binary
        self._prepare_dirs()
        if not self._initialised():
            self._initdb(timeout)
        else:
            version = (self.data_dir / "PG_VERSION").read_text().strip()
            major = bindir.parent.name
            if major.isdigit() and version != major:
                raise PostgresError(f"{self.data_dir} was initialised by PostgreSQL {version}, but the binaries in {bindir} are {major}")
        if self.running():
            port = self._running_port()
            if port is not None and port != self.port:
                raise PostgresError(f"a server already runs on {self.data_dir} but on port {port}, not {self.port}: stop() it first or use port {port}")
        else:
            self._write_conf()
            proc = self._run(
                "pg_ctl", "start", "-w", "-t", str(max(1, int(timeout))), "-D", str(self.data_dir), "-l", str(self.log_file),
                check=False, timeout=timeout + 15, start_new_session=True,
            )
            if proc.returncode != 0:
                raise PostgresError(
                    f"PostgreSQL failed to start on {self.host}:{self.port} (data dir {self.data_dir}, pg_ctl exit {proc.returncode}): "
                    f"{(proc.stdout + proc.stderr).strip()}\nserver log tail ({self.log_file}):\n{_tail(self.log_file)}"
                )
        deadline = time.monotonic() + timeout
        while True:  # pg_ctl -w already waited; a retry covers a server still finishing recovery
            try:
                self._ensure_role()
                break
            except PostgresError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        return self

    def create_database(self, name: str) -> str:
        """Create database `name` owned by `user` if missing (idempotent); returns `url(name)`."""
        from psycopg2 import sql  # noqa: PLC0415

        if not name or "\x00" in name:
            raise ValueError(f"invalid database name {name!r}")
        conn = self._admin()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(self.user)))
        finally:
            conn.close()
        return self.url(name)

    def url(self, database: str, driver: str = "postgresql+psycopg2") -> str:
        """The SQLAlchemy URL (password included, escaped) of `database` on this server over TCP."""
        from sqlalchemy.engine import URL  # noqa: PLC0415

        return URL.create(driver, username=self.user, password=self.password, host=self.host, port=self.port, database=database).render_as_string(
            hide_password=False
        )

    def stop(self, timeout: float = 60) -> None:
        """Stop the server (`pg_ctl stop -m fast`); a no-op when it does not run."""
        if not self.running():
            return
        self._run("pg_ctl", "stop", "-w", "-t", str(max(1, int(timeout))), "-m", "fast", "-D", str(self.data_dir), timeout=timeout + 15)

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
