"""X-ray arbitration: device XRAY wins over the image heuristic; long disagreement raises an alarm."""
import pytest

from core.analysis.xray import XrayArbiter
from core.vocab import NS


def test_image_alone_decides_until_a_device_speaks():
    x = XrayArbiter()
    assert x.image(True, 1 * NS) == [(True, 1 * NS, "image")]
    assert x.on and x.source == "image"
    assert x.image(False, 2 * NS) == [(False, 2 * NS, "image")]


def test_device_wins_over_image():
    x = XrayArbiter()
    assert x.device(True, 1 * NS) == [(True, 1 * NS, "device")]
    assert x.image(True, 1 * NS + NS // 10) == []            # agrees: no new edge
    assert x.image(False, 2 * NS) == []                      # image says off, the device still on
    assert x.on
    assert x.device(False, 3 * NS) == [(False, 3 * NS, "device")]


def test_disagreement_alarm_after_two_seconds_only():
    x = XrayArbiter(alarm_after_s=2.0)
    x.device(False, 0)
    x.image(True, 1 * NS)                                    # images change while the device says off
    assert x.alarms(int(2.9 * NS)) == []
    alarms = x.alarms(int(3.1 * NS))
    assert [a["kind"] for a in alarms] == ["xray_disagreement"] and "2.1 s" in alarms[0]["message"]
    x.image(False, int(3.2 * NS))                            # agree again: alarm clears
    assert x.alarms(int(10 * NS)) == []


def test_short_lag_of_the_image_is_no_alarm():
    x = XrayArbiter()
    x.device(True, 0)
    x.image(True, int(0.3 * NS))                             # the image needs a few pulses to confirm
    x.device(False, 5 * NS)
    x.image(False, int(5.7 * NS))                            # and some pulse intervals to see LIH
    assert x.alarms(6 * NS) == []


def test_device_lost_hands_back_to_the_image():
    x = XrayArbiter()
    x.device(True, 0)
    x.image(False, 1)
    assert x.on
    assert x.device_lost(NS) == [(False, NS, "image")]
    assert x.alarms(100 * NS) == []


def test_out_of_order_times_are_clamped_not_fatal():
    x = XrayArbiter()
    x.image(True, 5 * NS)
    assert x.device(False, 4 * NS) == [(False, 5 * NS, "device")]


@pytest.mark.parametrize("bad", [1, None, "on"])
def test_bad_flags(bad):
    with pytest.raises(ValueError):
        XrayArbiter().device(bad, 0)


def test_bad_parameters():
    with pytest.raises(ValueError):
        XrayArbiter(alarm_after_s=0)
    with pytest.raises(ValueError):
        XrayArbiter().image(True, 1.5)
