"""Serial bridge to power injectors and X-ray interface boxes (docs/serial-protocol.md).

Registers this package with pyserial's URL plug-in point so ``serial.serial_for_url("injsim://...")``
opens the built-in injector simulator (firmware_bridge/protocol_injsim.py), like ``loop://``.
"""
import serial

if "firmware_bridge" not in serial.protocol_handler_packages:
    serial.protocol_handler_packages.append("firmware_bridge")
