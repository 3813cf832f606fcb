"""A folder of recordings as one stream: name order, per-file frame rate, pacing, looping, rejected files."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from core.identity import content_label
from core.sources.folder import DirectorySource
from tests.dicom_files import write_multiframe


def stack(value0: int, n: int = 4, dtype=np.uint8, shape=(16, 16)) -> np.ndarray:
    return np.stack([np.full(shape, value0 + i, dtype) for i in range(n)])


@pytest.fixture
def folder(tmp_path):
    np.save(tmp_path / "a_run.npy", stack(10))
    write_multiframe(tmp_path / "b_run.dcm", stack(20, 3), frame_time_ms=100.0, relationship="LOG")
    (tmp_path / "c_notes.txt").write_text("not a recording")
    np.save(tmp_path / "d_lin.npy", stack(30, dtype=np.uint16))   # uint16 defaults to linear: not this stream
    np.save(tmp_path / "e_single.npy", stack(40, 1))               # one frame is not a run
    np.save(tmp_path / "f_noise.npy", stack(50, shape=(1, 1)))     # 1x1 frames are not fluoroscopy
    (tmp_path / ".hidden.npy").write_bytes(b"")
    return tmp_path


def values(src, limit=100):
    out = []
    for _ in range(limit):
        f = src.read()
        if f is None:
            break
        out.append((int(f.pixels[0, 0]), f.index, f.t_ns))
    return out


def test_plays_usable_files_in_order_and_says_why_others_are_skipped(folder):
    src = DirectorySource(folder, 10.0, speed=None)
    got = values(src)
    assert [v for v, _, _ in got] == [10, 11, 12, 13, 20, 21, 22]
    assert [i for _, i, _ in got] == list(range(7))
    assert src.intensity == "log" and src.shape == (16, 16) and src.dtype == np.uint8
    assert set(src.rejected) == {"c_notes.txt", "d_lin.npy", "e_single.npy", "f_noise.npy"}
    assert "differs" in src.rejected["d_lin.npy"] and "single frame" in src.rejected["e_single.npy"]
    assert "1x1 pixel frames are not fluoroscopy" in src.rejected["f_noise.npy"]


def test_paced_replay_follows_each_files_own_frame_times(folder):
    # .npy needs a rate; the DICOM file keeps its own 100 ms frame time unless fps overrides it.
    src = DirectorySource(folder, 20.0, speed=10.0)
    got = values(src)
    t = np.array([t for _, _, t in got], dtype=np.int64)
    steps_ms = np.diff(t) / 1e6
    # 20 fps (.npy, overridden) at 10x: 5 ms per frame throughout, including the DICOM file here.
    assert np.allclose(steps_ms, 5.0, atol=2.0), steps_ms


def test_loop_starts_over(folder):
    src = DirectorySource(folder, 10.0, speed=None, loop=True)
    got = [v for v, _, _ in values(src, 16)]
    assert got[:9] == [10, 11, 12, 13, 20, 21, 22, 10, 11]


def test_close_ends_a_paced_read(folder):
    src = DirectorySource(folder, 0.5, speed=1.0)          # 2 s per frame
    src.read()
    threading.Timer(0.1, src.close).start()
    start = time.monotonic()
    assert src.read() is None and time.monotonic() - start < 1.0


def test_unusable_folders(tmp_path):
    with pytest.raises(ValueError, match="not a directory"):
        DirectorySource(tmp_path / "none")
    with pytest.raises(ValueError, match="folder is empty"):
        DirectorySource(tmp_path)
    (tmp_path / "x.txt").write_text("hello")
    # The file is named by its content hash: exported studies are named after the patient.
    with pytest.raises(ValueError, match=f"no usable recording.*{content_label(tmp_path / 'x.txt')}") as refused:
        DirectorySource(tmp_path)
    assert "x.txt" not in str(refused.value) and str(tmp_path) not in str(refused.value)
    np.save(tmp_path / "y.npy", stack(1))
    with pytest.raises(ValueError, match="speed"):
        DirectorySource(tmp_path, 10.0, speed=0)


def test_a_short_stall_loses_nothing_a_long_one_drops(tmp_path):
    from core.sources.frames import QUEUE_FRAMES

    fps = 100.0
    np.save(tmp_path / "run.npy", stack(0, 60))
    src = DirectorySource(tmp_path, fps, speed=1.0)
    src.read()
    time.sleep((QUEUE_FRAMES - 3) / fps)            # shorter than a grabber's queue
    assert [int(src.read().pixels[0, 0]) for _ in range(QUEUE_FRAMES)] == list(range(1, QUEUE_FRAMES + 1))
    assert src.dropped == 0
    time.sleep((QUEUE_FRAMES + 20) / fps)
    src.read()
    assert src.dropped >= 20
    src.close()
