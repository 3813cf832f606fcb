"""The appliance's fleet link from its settings: the publisher when ``fleet_broker`` is set, and what the status,
the page and /metrics show of it (link up or down, backlog, last forwarded id). A fleet setting that cannot be
used (an unreadable password file) never stops the appliance: the link stays down and says why."""
from __future__ import annotations

import logging
from collections.abc import Callable

from core.fleet.config import FleetConfigError, appliance_id, parse_broker
from core.fleet.publisher import Publisher
from core.ops.settings import Settings
from core.store.eventlog import EventLog

log = logging.getLogger("cathlab.fleet")
LINK_STATES = ("up", "down", "refused", "denied", "no_subscriber")


def broker_of(settings: Settings):
    """The Broker of the settings (raises FleetConfigError), or None while the fleet is off."""
    if not settings.fleet_broker:
        return None
    return parse_broker(settings.fleet_broker, username=settings.fleet_username,
                        password_file=settings.fleet_password_file, ca_file=settings.fleet_ca_file,
                        client_cert=settings.fleet_client_cert, client_key=settings.fleet_client_key)


class FleetLink:
    def __init__(self, settings: Settings, event_log: EventLog, status_extra: Callable[[], dict] = dict) -> None:
        self.publisher: Publisher | None = None
        self._log = event_log
        self.problem: str | None = None
        self.enabled = bool(settings.fleet_broker)
        if not self.enabled:
            return
        try:
            self.publisher = Publisher(event_log, broker_of(settings), site=settings.site, room=settings.room,
                                       appliance_id=appliance_id(settings.data_dir, settings.appliance_id),
                                       status_extra=status_extra)
        except (FleetConfigError, OSError) as exc:
            self.problem = f"fleet link off: {exc}"
            log.error("%s", self.problem)

    def start(self) -> None:
        if self.publisher is None:
            return
        try:
            self.publisher.start()
        except (OSError, ValueError) as exc:   # a TLS file that cannot be used: the box runs, the link says why
            b = self.publisher.broker
            files = ", ".join(str(f) for f in (b.ca_file, b.client_cert, b.client_key) if f is not None)
            self.problem = f"fleet link off: TLS files for {b.url} ({files}) cannot be used: {exc}"
            log.error("%s", self.problem)
            self.publisher = None

    def stop(self, timeout: float = 0.5) -> None:
        """Within ``timeout``: commit what is queued (the appliance_stop event), forward it, go offline."""
        if self.publisher is not None:
            self._log.flush(timeout / 3)
            self.publisher.stop(timeout * 2 / 3)

    def snapshot(self) -> dict:
        if self.publisher is not None:
            return self.publisher.snapshot()
        return {"enabled": self.enabled, "link": "down" if self.enabled else "off", "problem": self.problem,
                "backlog": None, "last_forwarded_id": None}

    def metrics(self) -> dict[str, float]:
        if not self.enabled:
            return {}
        snap = self.snapshot()
        out = {"fleet_link_up": float(snap["link"] == "up")}
        if snap.get("backlog") is not None:
            out["fleet_backlog"] = snap["backlog"]
        if snap.get("last_forwarded_id") is not None:
            out["fleet_last_forwarded_id"] = snap["last_forwarded_id"]
            out["fleet_forwarded"] = snap.get("forwarded", 0)
        return out
