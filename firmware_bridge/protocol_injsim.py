"""pyserial URL handler ``injsim://?scenario=NAME&t0_ns=INT&ber=FLOAT&seed=INT``: the injector simulator
as a serial port, like pyserial's ``loop://``. pyserial imports this module because firmware_bridge is
listed in ``serial.protocol_handler_packages`` (see firmware_bridge/__init__.py).

The device is driven by ``read()`` and ``in_waiting`` with the monotonic clock (no thread; idle reads
sleep until the next scheduled packet). It outlives the port object, as a real device outlives its
cable: reopening the same URL continues the same device (seq, unacknowledged retransmissions), and
without ``t0_ns`` the timeline starts when the URL is first opened. During a scenario's disconnect
windows the port behaves like an unplugged USB adapter: reads raise and opening fails.
"""
from __future__ import annotations

import threading
import time

from serial.serialutil import PortNotOpenError, SerialBase, SerialException, to_bytes

from .simulator import InjectorDevice, parse_sim_url

_devices: dict[str, InjectorDevice] = {}
_devices_lock = threading.Lock()


def _device_for(url: str) -> InjectorDevice:
    try:
        opts = parse_sim_url(url)
    except ValueError as exc:
        raise SerialException(str(exc)) from None
    with _devices_lock:
        dev = _devices.get(url)
        if dev is None:
            t0 = time.monotonic_ns() if opts["t0_ns"] is None else opts["t0_ns"]
            dev = InjectorDevice(opts["scenario"], t0_ns=t0, seed=opts["seed"], bit_error_rate=opts["ber"])
            _devices[url] = dev
        return dev


class Serial(SerialBase):
    """The simulated injector behind a pyserial port object."""

    def open(self) -> None:
        if self.is_open:
            raise SerialException("Port is already open.")
        if self._port is None:
            raise SerialException("Port must be configured before it can be used.")
        dev = _device_for(self.portstr)
        now = time.monotonic_ns()
        if dev.disconnected(now):
            raise SerialException(f"could not open port {self.portstr}: simulated unplug")
        self._dev = dev
        self._buf = bytearray()
        self._lock = threading.Lock()
        dev.poll(now)  # what the device sent while unplugged never reached this port
        dev.connected(now)
        self.is_open = True

    def close(self) -> None:
        self.is_open = False
        super().close()

    def _reconfigure_port(self) -> None:
        pass  # a simulated line has no baud rate to set

    def _pump(self) -> None:
        now = time.monotonic_ns()
        if self._dev.disconnected(now):
            self._dev.poll(now)  # the device keeps living; its bytes fall on the floor
            raise SerialException("device reports readiness to read but returned no data (simulated unplug)")
        self._buf += self._dev.poll(now)

    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        with self._lock:
            self._pump()
            return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        while True:
            with self._lock:
                self._pump()
                if len(self._buf) >= size or (self._buf and deadline is not None and time.monotonic() >= deadline):
                    data = bytes(self._buf[:size])
                    del self._buf[:size]
                    return data
                wake_ns = self._dev.next_due_ns()
            if deadline is not None and time.monotonic() >= deadline:
                with self._lock:
                    data = bytes(self._buf[:size])
                    del self._buf[:size]
                return data
            wait = max(wake_ns - time.monotonic_ns(), 0) / 1e9
            if deadline is not None:
                wait = min(wait, max(deadline - time.monotonic(), 0))
            time.sleep(min(wait, 0.1) + 0.0005)
            if not self.is_open:
                return b""

    def write(self, data) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        data = to_bytes(data)
        with self._lock:
            self._dev.receive(data, time.monotonic_ns())
        return len(data)

    def reset_input_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()
        with self._lock:
            self._buf.clear()

    def reset_output_buffer(self) -> None:
        if not self.is_open:
            raise PortNotOpenError()

    @property
    def cts(self) -> bool:
        return True

    @property
    def dsr(self) -> bool:
        return True

    @property
    def ri(self) -> bool:
        return False

    @property
    def cd(self) -> bool:
        return True

    def _update_rts_state(self) -> None:
        pass

    def _update_dtr_state(self) -> None:
        pass

    def _update_break_state(self) -> None:
        pass
