"""One MQTT client setup for every fleet role (publisher, ingester, doctor): MQTT 5, credentials, TLS."""
from __future__ import annotations

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from core.fleet.config import Broker


def mqtt_client(broker: Broker, client_id: str, *, manual_ack: bool = False) -> mqtt.Client:
    """A paho client for ``broker`` (not connected yet). ``manual_ack``: the ingester acknowledges a message
    only once its row is committed."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5,
                         manual_ack=manual_ack)
    if broker.username is not None:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        client.tls_set(ca_certs=str(broker.ca_file) if broker.ca_file else None,
                       certfile=str(broker.client_cert) if broker.client_cert else None,
                       keyfile=str(broker.client_key) if broker.client_key else None)
    return client
