"""Loading recorded runs: .npy and DICOM multi-frame, frame rate and intensity, and every kind of bad file."""
import numpy as np
import pytest
from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

from core.sources.stacks import load_stack
from tests.dicom_files import write_multiframe

rng = np.random.default_rng(7)
U16 = rng.integers(0, 4096, size=(5, 64, 48), dtype=np.uint16)
U8 = rng.integers(0, 256, size=(4, 16, 18), dtype=np.uint8)


def test_npy_needs_fps_and_defaults_intensity(tmp_path):
    np.save(tmp_path / "a.npy", U16)
    with pytest.raises(ValueError, match="--fps"):
        load_stack(tmp_path / "a.npy")
    stack = load_stack(tmp_path / "a.npy", fps=15)
    assert stack.intensity == "lin" and stack.fps == 15 and np.array_equal(stack.frames, U16)
    np.save(tmp_path / "b.npy", U8)
    assert load_stack(tmp_path / "b.npy", fps=30).intensity == "log"
    assert load_stack(tmp_path / "b.npy", fps=30, intensity="lin").intensity == "lin"


@pytest.mark.parametrize("modality", ["XA", "XRF"])
@pytest.mark.parametrize("compress", [None, RLELossless, JPEGLSLossless, JPEG2000Lossless])
def test_dicom_round_trip(tmp_path, modality, compress):
    path = tmp_path / "run.dcm"
    write_multiframe(path, U16, modality=modality, bits_stored=12, relationship="LIN", compress=compress)
    stack = load_stack(path)
    assert np.array_equal(stack.frames, U16)
    assert stack.intensity == "lin" and stack.bits_stored == 12
    assert stack.fps == pytest.approx(15.0, abs=0.01)


def test_dicom_secondary_capture_uint8_log(tmp_path):
    path = tmp_path / "sc.dcm"
    write_multiframe(path, U8, modality="SC", frame_time_ms=None, cine_rate=30)
    stack = load_stack(path)
    assert stack.frames.dtype == np.uint8 and stack.intensity == "log" and stack.fps == 30


def test_frame_time_vector_and_relationship(tmp_path):
    path = tmp_path / "v.dcm"
    write_multiframe(path, U16, frame_time_ms=None, frame_time_vector=[0, 33.3, 33.3, 33.3, 33.3],
                     relationship="LOG")
    stack = load_stack(path)
    assert stack.intensity == "log"
    assert stack.fps == pytest.approx(30.03, abs=0.01)
    assert stack.frame_times_s[-1] == pytest.approx(4 * 0.0333)


def test_monochrome1_is_flipped(tmp_path):
    path = tmp_path / "m1.dcm"
    write_multiframe(path, U16, bits_stored=12, photometric="MONOCHROME1")
    assert np.array_equal(load_stack(path).frames, 4095 - U16)


def test_fps_overrides_file(tmp_path):
    path = tmp_path / "o.dcm"
    write_multiframe(path, U16)
    assert load_stack(path, fps=7.5).fps == 7.5


@pytest.mark.parametrize("case,match", [
    ("text", "not a DICOM"),
    ("truncated", "DICOM|pixel"),
    ("single", "single frame"),
    ("missing", "no such file"),
    ("no_rate", "Frame Time"),
    ("float_npy", "uint8 or uint16"),
    ("bad_npy", "not a readable"),
])
def test_bad_files(tmp_path, case, match):
    path = tmp_path / "x.dcm"
    if case == "text":
        path.write_text("hello, not an image")
    elif case == "truncated":
        write_multiframe(path, U16)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) - 300])
    elif case == "single":
        write_multiframe(path, U16[:1])
    elif case == "no_rate":
        write_multiframe(path, U16, frame_time_ms=None)
    elif case == "float_npy":
        path = tmp_path / "f.npy"
        np.save(path, U16.astype(np.float32))
    elif case == "bad_npy":
        path = tmp_path / "g.npy"
        path.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=match):
        load_stack(path, fps=30 if path.suffix == ".npy" else None)


def test_intensity_relationship_sign(tmp_path):
    # Sign -1: higher stored values are less X-ray (contrast bright); it wins over the photometric hint.
    for photometric in ("MONOCHROME2", "MONOCHROME1"):
        path = tmp_path / f"inv_{photometric}.dcm"
        write_multiframe(path, 4095 - U16, bits_stored=12, relationship="LIN", photometric=photometric, sign=-1)
        s = load_stack(path)
        assert s.intensity == "lin" and np.array_equal(s.frames, U16)
    path = tmp_path / "up.dcm"
    write_multiframe(path, U16, bits_stored=12, relationship="LIN", photometric="MONOCHROME1", sign=1)
    assert np.array_equal(load_stack(path).frames, U16)
    path = tmp_path / "bad.dcm"
    write_multiframe(path, U16, bits_stored=12, sign=0)
    with pytest.raises(ValueError, match="Sign"):
        load_stack(path)


@pytest.mark.parametrize("relationship,intensity", [("LIN", "lin"), ("LOG", "log"), ("DISP", "log")])
def test_intensity_relationships(tmp_path, relationship, intensity):
    path = tmp_path / "r.dcm"
    write_multiframe(path, U16, bits_stored=12, relationship=relationship)
    assert load_stack(path).intensity == intensity
