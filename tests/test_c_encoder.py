"""The C99 firmware encoder (firmware_bridge/c/) against the Python codec, through one vectors file."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from firmware_bridge import vectors
from firmware_bridge.framing import Decoder
from firmware_bridge.messages import parse

C_DIR = Path(vectors.__file__).parent / "c"
CC = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


def test_vectors_file_is_current():
    assert vectors.VECTORS_PATH.read_text(encoding="utf-8") == vectors.format_file(), \
        "regenerate: python -m firmware_bridge.vectors > firmware_bridge/c/vectors.txt"


def test_python_codec_agrees_with_every_vector():
    loaded = vectors.load()
    assert [n for n, _, _ in loaded] == [n for n, _ in vectors.EXAMPLES]
    for name, msg, wire in loaded:
        assert wire == b"\x00" + msg.encode() == vectors.wire_bytes(msg), name
        (packet,) = Decoder().feed(wire)
        assert parse(packet) == msg, name


def test_vector_parser_rejects_bad_lines():
    for line, match in [("a SAMPLE 1", "too few"), ("a NOPE 1 2 x=1", "unknown message type"),
                        ("a XRAY 1 2 on=1", "no expect"), ("a XRAY 1 2 colour=1 expect=00", "no field"),
                        ("a XRAY 1 2 on expect=00", "key=value")]:
        with pytest.raises(ValueError, match=match):
            vectors.parse_line(line)


def test_encoder_uses_only_stdint_and_string():
    for name in ("cathlab_encoder.c", "cathlab_encoder.h"):
        includes = re.findall(r'#include\s+[<"]([^>"]+)[>"]', (C_DIR / name).read_text())
        assert set(includes) <= {"stdint.h", "string.h", "cathlab_encoder.h"}, (name, includes)
        assert not re.search(r"\b(malloc|calloc|free|printf)\s*\(", (C_DIR / name).read_text())


@pytest.fixture(scope="module")
def vectors_test(tmp_path_factory):
    if CC is None:
        pytest.skip("no C compiler on this machine (CI has one)")
    out = tmp_path_factory.mktemp("c") / "vectors_test"
    cmd = [CC, "-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic", "-O1", "-o", str(out),
           str(C_DIR / "vectors_test.c"), str(C_DIR / "cathlab_encoder.c")]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    return out


def test_c_encoder_reproduces_every_vector(vectors_test):
    res = subprocess.run([str(vectors_test), str(vectors.VECTORS_PATH)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr
    passed = set(re.findall(r"^ok (\S+)$", res.stdout, re.M))
    assert passed == {n for n, _ in vectors.EXAMPLES} | {"argument_checks"}
    assert "0 failures" in res.stdout


def test_c_test_fails_on_a_wrong_vector(vectors_test, tmp_path):
    # The C check must be able to fail: one flipped expected byte is reported.
    text = vectors.VECTORS_PATH.read_text()
    bad = re.sub(r"(^sample .*expect=)(..)", lambda m: m.group(1) + ("00" if m.group(2) != "00" else "01"),
                 text, count=1, flags=re.M)
    (tmp_path / "bad.txt").write_text(bad)
    res = subprocess.run([str(vectors_test), str(tmp_path / "bad.txt")], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "FAIL sample" in res.stdout


def test_encoder_compiles_freestanding(tmp_path):
    if CC is None:
        pytest.skip("no C compiler on this machine (CI has one)")
    res = subprocess.run([CC, "-std=c99", "-ffreestanding", "-Wall", "-Wextra", "-Werror", "-pedantic", "-c",
                          "-o", str(tmp_path / "enc.o"), str(C_DIR / "cathlab_encoder.c")],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr


DOC = Path(vectors.__file__).resolve().parents[1] / "docs" / "serial-protocol.md"


def test_protocol_document_hex_dumps_match_the_encoder():
    text = DOC.read_text(encoding="utf-8")
    blocks = vectors.doc_blocks(text)
    assert set(blocks) == {n for n, _ in vectors.EXAMPLES}, "every example appears in the document once"
    for name, msg in vectors.EXAMPLES:
        assert blocks[name] == vectors.doc_block(msg), \
            f"{name}: stale hex dump; run python -m firmware_bridge.vectors --doc docs/serial-protocol.md"
        wire = bytes.fromhex("".join(blocks[name].split("the 0x00 delimiter)")[1].split()))
        assert wire == b"\x00" + msg.encode()


def test_protocol_document_covers_every_message_type():
    from firmware_bridge.messages import MsgType
    text = DOC.read_text(encoding="utf-8")
    for t in MsgType:
        assert f"0x{t:02X} {t.name}" in text or f"| 0x{t:02X} | {t.name} |" in text, t.name
    assert "0x29B1" in text and "little-endian" in text


def test_protocol_document_cobs_walkthrough_matches_the_encoder():
    from firmware_bridge.messages import Heartbeat
    text = " ".join(DOC.read_text(encoding="utf-8").split())
    hb = Heartbeat(1, 124000, state=1)
    assert f"`{hb.pack().hex(' ')} {crc_le(hb.pack())}`" in text
    assert f"`{hb.encode().hex(' ')}`" in text


def crc_le(packet):
    from firmware_bridge.wire import crc16
    return crc16(packet).to_bytes(2, "little").hex(" ")
