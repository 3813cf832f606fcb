"""The doctor's look at the fleet broker: reachable, TLS accepted, credentials taken, and allowed to publish
under this appliance's id. Uses its own client id, so the running appliance's session is left alone."""
from __future__ import annotations

import ssl
import threading
import uuid

import paho.mqtt.client as mqtt

from core.fleet.client import mqtt_client
from core.fleet.config import TOPIC_ROOT, FleetConfigError, appliance_id
from core.fleet.link import broker_of
from core.ops.doctor import FAIL, OK, Check
from core.ops.settings import Settings

NAME = "fleet broker"


def check_broker(settings: Settings, timeout: float = 5.0) -> Check:
    if not settings.fleet_broker:
        return Check(NAME, OK, "off (fleet_broker not set): events stay on this box")
    try:
        broker = broker_of(settings)
        aid = appliance_id(settings.data_dir, settings.appliance_id)
    except (FleetConfigError, OSError) as exc:
        return Check(NAME, FAIL, str(exc), "fix the fleet_* settings (cathlab-edge config --show)")
    connected, acked = threading.Event(), threading.Event()
    result: dict = {}
    def on_connect(_c, _u, _flags, reason, _p) -> None:
        result["connack"] = reason
        connected.set()

    def on_publish(_c, _u, _mid, reason, _p) -> None:
        result["puback"] = reason
        acked.set()

    def on_disconnect(_c, _u, _flags, reason, _p) -> None:
        # Closed before any CONNACK: with TLS 1.3 a listener that wants a client certificate (or refuses this
        # one) accepts the handshake and drops the connection right after.
        result.setdefault("closed", reason)
        connected.set()
        acked.set()
    try:
        client = mqtt_client(broker, f"cathlab-doctor-{uuid.uuid4().hex[:8]}")   # TLS files are read here
        client.on_connect, client.on_publish, client.on_disconnect = on_connect, on_publish, on_disconnect
        client.connect(broker.host, broker.port, keepalive=10)
    except ssl.SSLError as exc:
        return Check(NAME, FAIL, f"TLS with {broker.url} failed: {exc}",
                     "set fleet_ca_file to the CA that signed the broker's certificate")
    except (OSError, ValueError) as exc:
        return Check(NAME, FAIL, f"cannot reach {broker.url}: {exc}",
                     "check fleet_broker and the network (events are kept on the box meanwhile)")
    client.loop_start()
    try:
        if not connected.wait(timeout):
            return Check(NAME, FAIL, f"{broker.url} did not answer the MQTT connect within {timeout:g} s",
                         "check that fleet_broker points at an MQTT broker (mqtts:// for TLS)")
        if "connack" not in result:
            cert = "with" if broker.client_cert else "without"
            return Check(NAME, FAIL, f"{broker.url} closed the connection before answering the MQTT connect "
                         f"({cert} a client certificate): {result['closed']}",
                         "the broker may want a client certificate its CA signed: set fleet_client_cert and "
                         "fleet_client_key (or check that fleet_broker is this box's listener)")
        if result["connack"].is_failure:
            return Check(NAME, FAIL, f"{broker.url} refused the credentials of user {broker.username!r}: "
                         f"{result['connack']}", "check fleet_username and fleet_password_file")
        info = client.publish(f"{TOPIC_ROOT}/{settings.site}/{aid}/doctor", b"{}", qos=1)
        if acked.wait(timeout) and "puback" not in result:   # some brokers refuse a publish by closing
            return Check(NAME, FAIL, f"{broker.url} closed the connection on a test message from user "
                         f"{broker.username!r} as appliance {aid!r}: {result['closed']}",
                         "set appliance_id to the id the broker's ACL gives this user (often the user name)")
        if "puback" not in result or info.rc != mqtt.MQTT_ERR_SUCCESS:
            return Check(NAME, FAIL, f"{broker.url} did not acknowledge a test message within {timeout:g} s")
        if result["puback"].is_failure:
            return Check(NAME, FAIL, f"{broker.url} refuses user {broker.username!r} to publish as appliance "
                         f"{aid!r}: {result['puback']}",
                         "set appliance_id to the id the broker's ACL gives this user (often the user name)")
        return Check(NAME, OK, f"{broker.url} takes events of appliance {aid!r} (site {settings.site!r})")
    finally:
        client.disconnect()
        client.loop_stop()
