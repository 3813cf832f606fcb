"""One ``open_video``: the frame source the settings name, for the appliance and the ``run`` command alike."""
from __future__ import annotations

from pathlib import Path
from typing import Protocol

from core.sources.folder import DirectorySource
from core.sources.frames import FrameSource
from core.sources.replay import replay
from core.vocab import VIDEO_NONE, VIDEO_PHANTOM

# One (dx, dy) per run of firmware_bridge.scenarios.PROCEDURE.
DEMO_SHIFTS = ((0.0, 0.0), (0.0, 0.0), (14.0, -9.0), (14.0, -9.0), (-22.0, 11.0), (-22.0, 11.0))


class VideoSettings(Protocol):
    """What ``open_video`` reads of the appliance's settings (core.ops.settings.Settings has them all)."""
    video_source: str
    video_fps: float | None
    phantom_size: int
    phantom_intensity: str
    phantom_timeline: str
    reconnect_min_s: float
    reconnect_max_s: float
    replay_speed: float | None
    replay_loop: bool


def open_video(settings: VideoSettings, t0_ns: int, on_event=None) -> FrameSource | None:
    """The frame source named by ``settings.video_source``: None for "none" (no video), the built-in phantom on
    the shared timeline for "phantom", /dev/videoN a V4L2 grabber, a folder or file a replay."""
    video = settings.video_source
    if video == VIDEO_NONE:
        return None
    if video == VIDEO_PHANTOM:
        from core.sources.phantom.config import PhantomConfig
        from core.sources.phantom.video import PhantomSource, PhantomVideo

        fps = settings.video_fps or 30.0
        config = PhantomConfig(size=(settings.phantom_size, settings.phantom_size),
                               intensity=settings.phantom_intensity, fps=fps, pulse_rate=min(15.0, fps))
        from firmware_bridge.scenarios import TIMELINES

        timeline, period_s = TIMELINES[settings.phantom_timeline]
        # The table moves between thrombectomy passes, so the demo exercises registration too.
        shifts = DEMO_SHIFTS if settings.phantom_timeline == "procedure" else None
        return PhantomSource(PhantomVideo(config, timeline, period_s, shifts=shifts), t0_ns=t0_ns)
    if video.startswith("/dev/"):
        from core.sources.v4l2 import open_grabber  # linuxpy is only needed with a grabber

        return open_grabber(video, fps=settings.video_fps, on_event=on_event,
                            reconnect_min_s=settings.reconnect_min_s, reconnect_max_s=settings.reconnect_max_s)
    speed = settings.replay_speed or None    # 0: as fast as possible
    path = Path(video)
    if path.is_dir():
        return DirectorySource(path, settings.video_fps, speed=speed, loop=settings.replay_loop)
    return replay(path, settings.video_fps, speed=speed, loop=settings.replay_loop)
