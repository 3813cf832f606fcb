"""The device end of a line for the injector simulator, and the loop that plays a device on it.

``open_line`` gives a pty pair, a TCP server for ``socket://host:port`` or any pyserial URL; ``play`` runs an
``InjectorDevice`` on it in real time (``cathlab-edge simulate-injector``).
"""
from __future__ import annotations

import os
import select
import socket
import time
import tty
from urllib.parse import urlsplit

from .simulator import InjectorDevice


class _PtyLine:
    """The device end of a new pty pair; the appliance opens ``path``."""

    def __init__(self) -> None:
        self.master, slave = os.openpty()
        tty.setraw(slave)  # no echo, no line discipline: a clean 8-bit line
        self.path = os.ttyname(slave)
        self._slave = slave  # keep it open so the pair survives the appliance closing its end
        os.set_blocking(self.master, False)

    def write(self, data: bytes) -> None:
        try:
            os.write(self.master, data)
        except BlockingIOError:
            pass  # nobody reads: a real UART drops bytes the same way

    def read(self) -> bytes:
        try:
            return os.read(self.master, 4096)
        except (BlockingIOError, OSError):
            return b""

    def fileno(self) -> int:
        return self.master

    def close(self) -> None:
        os.close(self.master)
        os.close(self._slave)


class _SocketLine:
    """A TCP server for ``socket://host:port``: one appliance connection at a time."""

    def __init__(self, host: str, port: int) -> None:
        self._srv = socket.create_server((host, port))
        self._srv.setblocking(False)
        self.path = f"socket://{host}:{self._srv.getsockname()[1]}"
        self._conn: socket.socket | None = None

    def accept(self) -> bool:
        if self._conn is not None:
            return False
        try:
            self._conn, _ = self._srv.accept()
        except BlockingIOError:
            return False
        self._conn.setblocking(False)
        return True

    def drop(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(self, data: bytes) -> None:
        if self._conn is None:
            return
        try:
            self._conn.sendall(data)
        except BlockingIOError:
            pass
        except OSError:
            self.drop()

    def read(self) -> bytes:
        if self._conn is None:
            return b""
        try:
            data = self._conn.recv(4096)
        except BlockingIOError:
            return b""
        except OSError:
            data = b""
        if not data:
            self.drop()
        return data

    def fileno(self) -> int:
        return self._conn.fileno() if self._conn is not None else self._srv.fileno()

    def close(self) -> None:
        self.drop()
        self._srv.close()


class _SerialLine:
    """Any pyserial URL the device end can open (a real cable's tty, rfc2217://, an existing pty)."""

    def __init__(self, url: str) -> None:
        import serial
        self._port = serial.serial_for_url(url, baudrate=115200, timeout=0, write_timeout=0.5)
        self.path = url

    def write(self, data: bytes) -> None:
        import serial
        try:
            self._port.write(data)
        except serial.SerialTimeoutException:
            pass

    def read(self) -> bytes:
        return self._port.read(self._port.in_waiting or 1)

    def fileno(self) -> int | None:
        return getattr(self._port, "fd", None)

    def close(self) -> None:
        self._port.close()


def open_line(port: str):
    """The device end of ``port``: "pty" creates a pty pair (its ``path`` is the appliance's end),
    ``socket://host:port`` serves TCP, anything else is a device path or pyserial URL. Raises OSError,
    ValueError or pyserial's SerialException when the port cannot be used."""
    if port == "pty":
        return _PtyLine()
    if port.startswith("socket://"):
        parts = urlsplit(port)
        return _SocketLine(parts.hostname or "127.0.0.1", parts.port or 0)
    return _SerialLine(port)


def play(line, dev: InjectorDevice, start_ns: int, end_ns: int | None = None) -> None:
    """Play ``dev`` on ``line`` (from ``open_line``) from ``start_ns`` until ``end_ns`` (None: until
    interrupted), then close the line. A socket line connects the device when a client connects."""
    is_socket = isinstance(line, _SocketLine)
    if not is_socket:
        dev.connected(start_ns)
    was_unplugged = False
    try:
        while end_ns is None or time.monotonic_ns() < end_ns:
            now = time.monotonic_ns()
            unplugged = dev.disconnected(now)
            if is_socket:
                if unplugged:
                    line.drop()
                elif line.accept():
                    dev.connected(now)
            elif was_unplugged and not unplugged:
                dev.poll(now)       # what was due while unplugged is lost on the floor
                dev.connected(now)  # a pty or cable line back: HELLO again
            was_unplugged = unplugged
            data = dev.poll(now)
            if not unplugged:
                line.write(data)
                incoming = line.read()
                if incoming:
                    dev.receive(incoming, time.monotonic_ns())
            wait = min(max(dev.next_due_ns() - time.monotonic_ns(), 0) / 1e9, 0.05)
            fd = line.fileno()
            if fd is not None and not unplugged:
                select.select([fd], [], [], wait)
            else:
                time.sleep(wait)
    finally:
        line.close()
