"""The injector's condition book: fault alarm, when it clears, live values dropping to zero."""
from __future__ import annotations

import pytest

from core.appliance.injector import InjectorCondition

S = 1_000_000_000
HELLO = {"type": "HELLO", "model": "X", "serial_no": "1", "fw_version": "1.0.0"}


def sample(flow=5.0, volume=3.0, pressure=920):
    return {"type": "SAMPLE", "flow_ml_s": flow, "volume_ml": volume, "pressure_kpa": pressure, "phase": 1}


def fault(severity=2, code=0x0101, text="pressure limit exceeded"):
    return {"type": "FAULT", "code": code, "severity": severity, "text": text}


def injecting() -> InjectorCondition:
    book = InjectorCondition()
    book.on_hello(HELLO, 1000)
    book.on_state("armed")
    book.on_state("injecting")
    book.on_sample(sample(), 1 * S)
    return book


def test_an_error_fault_is_an_alarm_until_the_state_changes_to_idle():
    book = injecting()
    assert book.on_fault(fault(), 2 * S)
    assert book.alarms() == [{"kind": "injector_fault",
                              "message": "injector fault 0x0101 (error): pressure limit exceeded"}]
    assert book.active_fault() == {"code": 0x0101, "severity": 2, "text": "pressure limit exceeded"}
    assert book.on_state("aborted") == ("injecting", None)
    assert book.on_state("aborted") == ("aborted", None)        # heartbeats repeating it change nothing
    assert book.alarms() and book.active_fault()
    assert book.on_state("idle") == ("aborted", "injector state idle")
    assert book.alarms() == [] and book.active_fault() is None


def test_complete_clears_too_but_not_armed_or_injecting():
    book = injecting()
    book.on_fault(fault(), 2 * S)
    assert book.on_state("armed")[1] is None and book.on_state("injecting")[1] is None
    assert book.on_state("complete")[1] == "injector state complete"


def test_a_fault_while_idle_stays_until_the_state_changes_back_to_idle():
    book = InjectorCondition()
    book.on_hello(HELLO, 1000)
    book.on_state("idle")
    book.on_fault(fault(text=""), 1 * S)
    book.on_state("idle")            # the next heartbeat: still idle, no change, the error stands
    assert book.alarms() == [{"kind": "injector_fault", "message": "injector fault 0x0101 (error)"}]
    book.on_state("armed")
    assert book.on_state("idle")[1] == "injector state idle"


@pytest.mark.parametrize("severity", [0, 1])
def test_info_and_warning_are_not_alarms(severity):
    book = injecting()
    assert not book.on_fault(fault(severity=severity), 1 * S + 5)
    assert book.alarms() == [] and book.active_fault() is None
    assert book.live(1 * S + 6)["flow_ml_s"] == 5.0              # and the injection goes on


def test_a_periodic_hello_keeps_the_alarm_a_new_session_clears_it():
    book = injecting()
    book.on_fault(fault(), 2 * S)
    assert book.on_hello(HELLO, 11_000) == (False, None)         # the same device 10 s later
    assert book.alarms()
    book.on_link("silent")
    assert book.on_hello(HELLO, 21_000) == (False, "a new session (HELLO)")
    assert book.alarms() == []


def test_a_hello_from_another_device_or_a_restarted_clock_is_a_new_session():
    book = injecting()
    book.on_fault(fault(), 2 * S)
    assert book.on_hello(dict(HELLO, serial_no="2"), 2000) == (True, "a new session (HELLO)")
    book.on_fault(fault(), 3 * S)
    book.on_hello(dict(HELLO, serial_no="2"), 12_000)
    assert book.alarms()
    assert book.on_hello(dict(HELLO, serial_no="2"), 500)[1] is None    # 11.5 s back: a late copy, no restart
    assert book.alarms()
    book.on_hello(dict(HELLO, serial_no="2"), 100_000)
    assert book.on_hello(dict(HELLO, serial_no="2"), 20)[1] == "a new session (HELLO)"    # 100 s back: restart


def test_state_fault_is_an_alarm_while_it_lasts():
    book = injecting()
    book.on_state("fault")
    assert book.alarms() == [{"kind": "injector_fault", "message": "injector reports state fault"}]
    book.on_state("idle")
    assert book.alarms() == []


def test_flow_and_pressure_drop_to_zero_at_once_after_abort_or_fault():
    book = injecting()
    assert book.live(1 * S + 1) == {"flow_ml_s": 5.0, "volume_ml": 3.0, "pressure_kpa": 920}
    book.on_state("aborted")
    # Not the last sample for a second: zero now, the volume delivered so far still shown.
    assert book.live(1 * S + 2) == {"flow_ml_s": 0.0, "volume_ml": 3.0, "pressure_kpa": 0.0}
    book = injecting()
    book.on_fault(fault(), 1 * S + 5)
    assert book.live(1 * S + 6)["flow_ml_s"] == 0.0 and book.live(1 * S + 6)["pressure_kpa"] == 0.0
    book = injecting()
    book.on_state("hold")                                        # held: the device's samples say 0 themselves
    assert book.live(1 * S + 1)["flow_ml_s"] == 5.0


def test_live_values_go_stale_and_a_doubted_volume_is_unknown():
    book = injecting()
    assert book.live(2 * S) == {"flow_ml_s": 0.0, "volume_ml": None, "pressure_kpa": 0.0}
    book.on_sample(sample(volume=1.0), 3 * S, volume_doubted=True)
    assert book.live(3 * S) == {"flow_ml_s": 5.0, "volume_ml": None, "pressure_kpa": 920}
