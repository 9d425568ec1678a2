"""A PostgreSQL server of our own on 127.0.0.1, from the binaries the pgserver wheel ships
(installed by pip with requirements-dev.txt): for the tests (conftest.py) and the store
benchmark (bench/stores.py), on a machine with only Python."""

import os
import shutil
import signal
import socket
import subprocess
import time
import uuid

import pgserver
import psycopg
from pgserver.utils import ensure_user_exists


class Postgres:
    """A PostgreSQL server on 127.0.0.1: started, stopped and started again on one data
    folder (made by initdb here) and one port."""

    def __init__(self, folder):
        self.bin = pgserver._commands.POSTGRES_BIN_PATH
        self.folder, self.port, self.process = folder, _free_port(), None
        self.user = None
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            self.user = "pgserver"
            ensure_user_exists(self.user)
            shutil.chown(folder, self.user)
        subprocess.run([self.bin / "initdb", "-D", folder / "data", "-U", "postgres",
                        "--auth=trust", "--no-sync", "-E", "UTF8"], user=self.user,
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def start(self):
        self.process = subprocess.Popen(
            [self.bin / "postgres", "-D", self.folder / "data", "-h", "127.0.0.1",
             "-p", str(self.port), "-k", self.folder, "-c", "fsync=off",
             "-c", "max_connections=400"],
            user=self.user, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_until_up(self.url)

    def stop(self):
        self.process.send_signal(signal.SIGINT)  # a fast shutdown: clients are cut off
        self.process.wait(timeout=30)

    def new_database(self):
        """The URL of a new, empty database on this server."""
        name = f"t{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.url.rsplit("/", 1)[0] + f"/{name}"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_up(url, seconds=30):
    deadline = time.monotonic() + seconds
    while True:
        try:
            psycopg.connect(url, connect_timeout=1).close()
            return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
