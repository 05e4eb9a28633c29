"""SQLite access for the data services: WAL, busy timeouts, short transactions, off the loop.

Does I/O. Every instance of one service in one site opens the same database file, so
several processes write concurrently: WAL lets readers run beside the one writer,
`busy_timeout` makes a second writer wait instead of failing, and every transaction
is short (`BEGIN IMMEDIATE` takes the write lock up front, so a read-then-write never
dead-ends in SQLITE_BUSY halfway). sqlite3 calls block, so they run on a small
thread pool with one connection per thread; the event loop never waits on the disk.

Seeding is idempotent across processes: the first instance to take the write lock
creates and fills the schema and records `seed` in `meta`; the others wait on the
lock, then see the record and skip.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

log = logging.getLogger("services.db")

T = TypeVar("T")

BUSY_TIMEOUT_S = 5.0
SEED_LOCK_TIMEOUT_S = 60.0


@contextmanager
def transaction(conn: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN [IMMEDIATE] ... COMMIT, ROLLBACK on any exception."""
    conn.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def connect(path: str, busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite3.Connection:
    # isolation_level=None: autocommit; transactions are explicit (see `transaction`).
    conn = sqlite3.connect(
        path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )
    conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
    conn.execute("PRAGMA synchronous = NORMAL")  # safe with WAL; fsync at checkpoints
    return conn


SeedFn = Callable[[sqlite3.Connection], None]


def initialise(path: str, schema: str, seed_key: str, seed: SeedFn) -> bool:
    """Make the file WAL, create the schema and seed it once. True if this call seeded."""
    conn = connect(path, SEED_LOCK_TIMEOUT_S)
    try:
        deadline = time.monotonic() + SEED_LOCK_TIMEOUT_S
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:  # another process is switching it
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        with transaction(conn):
            conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            row = conn.execute("SELECT value FROM meta WHERE key = 'seed'").fetchone()
            if row is not None:
                if row[0] != seed_key:
                    log.warning("%s holds %s; keeping it (asked: %s)", path, row[0], seed_key)
                return False
            started = time.perf_counter()
            for statement in schema.split(";"):
                if statement.strip():
                    conn.execute(statement)
            seed(conn)
            conn.execute("INSERT INTO meta (key, value) VALUES ('seed', ?)", (seed_key,))
            log.info("seeded %s (%s) in %.2f s", path, seed_key, time.perf_counter() - started)
            return True
    finally:
        conn.close()


class Database:
    """A thread pool with one connection per thread; `await db.run(fn, ...)` calls fn(conn, ...)."""

    def __init__(self, path: str, workers: int = 4) -> None:
        self.path = path
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sqlite")

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def _call(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        return fn(self._conn(), *args)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._call, fn, args)

    async def initialise(self, schema: str, seed_key: str, seed: SeedFn) -> bool:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, initialise, self.path, schema, seed_key, seed)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        with self._lock:
            for conn in self._conns:
                conn.close()
            self._conns.clear()
