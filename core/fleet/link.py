"""The fleet link of one appliance from its settings: a Publisher, or None while ``fleet_broker`` is unset."""
from __future__ import annotations

from collections.abc import Callable

from core.fleet.config import appliance_id, parse_broker
from core.fleet.publisher import Publisher
from core.ops.settings import Settings
from core.store.eventlog import EventLog


def broker_of(settings: Settings):
    """The Broker of the settings (raises FleetConfigError), or None while the fleet is off."""
    if not settings.fleet_broker:
        return None
    return parse_broker(settings.fleet_broker, username=settings.fleet_username,
                        password_file=settings.fleet_password_file, ca_file=settings.fleet_ca_file,
                        client_cert=settings.fleet_client_cert, client_key=settings.fleet_client_key)


def publisher_from_settings(settings: Settings, event_log: EventLog,
                            status_extra: Callable[[], dict] = dict) -> Publisher | None:
    broker = broker_of(settings)
    if broker is None:
        return None
    return Publisher(event_log, broker, site=settings.site, room=settings.room,
                     appliance_id=appliance_id(settings.data_dir, settings.appliance_id), status_extra=status_extra)
