"""Hypothesis strategies and a seeded generator for intact version-1 device packets (header + payload)."""
import random

from hypothesis import strategies as st

from firmware_bridge.messages import Fault, Heartbeat, Hello, Sample, State, Summary, TimeResp, Xray

u16, u32 = st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF)
_text = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=16).filter(
    lambda t: len(t.encode()) <= 16)

messages = st.one_of(
    st.builds(Heartbeat, u16, u32, state=st.integers(0, 6)),
    st.builds(Sample, u16, u32, flow=u16, volume=u32, pressure=u16, phase=st.integers(0, 255)),
    st.builds(State, u16, u32, state=st.integers(0, 6), phase=st.integers(0, 255)),
    st.builds(Xray, u16, u32, on=st.integers(0, 1)),
    st.builds(TimeResp, u16, u32, token=u32),
    st.builds(Summary, u16, u32, programmed_volume=u32, delivered_volume=u32, duration_ms=u32,
              xray_delay_ms=st.integers(-(1 << 31), (1 << 31) - 1)),
    st.builds(Fault, u16, u32, code=u16, severity=st.integers(0, 2),
              text=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=64).filter(
                  lambda t: len(t.encode()) <= 64)),
    st.builds(Hello, u16, u32, vendor_id=u16, model=_text, serial_no=_text, capabilities=st.integers(0, 7)),
)
packets = messages.map(lambda m: m.pack())


def random_packet(rnd: random.Random) -> bytes:
    """One intact v1 device packet with random fields (for the seeded fuzz streams)."""
    seq, ms = rnd.getrandbits(16), rnd.getrandbits(32)
    kind = rnd.randrange(6)
    if kind == 0:
        return Heartbeat(seq, ms, state=rnd.randrange(7)).pack()
    if kind == 1:
        return Sample(seq, ms, flow=rnd.getrandbits(16), volume=rnd.getrandbits(32), pressure=rnd.getrandbits(16),
                      phase=rnd.getrandbits(8)).pack()
    if kind == 2:
        return Summary(seq, ms, programmed_volume=rnd.getrandbits(32), delivered_volume=rnd.getrandbits(32),
                       duration_ms=rnd.getrandbits(32)).pack()
    if kind == 3:
        return Fault(seq, ms, code=rnd.getrandbits(16), severity=rnd.randrange(3),
                     text="".join(chr(rnd.randint(32, 126)) for _ in range(rnd.randint(0, 64)))).pack()
    if kind == 4:
        return Hello(seq, ms, vendor_id=rnd.getrandbits(16), model="M" * rnd.randint(0, 16),
                     capabilities=rnd.randrange(8)).pack()
    return Xray(seq, ms, on=rnd.randrange(2)).pack()
