"""The collimated field: found once from the first distinct pulses, off the frame path, then used to blank
recordings (outside the field and in the burnt-in text) and to leave the surround out of measurements."""
from __future__ import annotations

import logging

import numpy as np

from core.appliance.worker import AnalysisWorker
from core.sources.collimator import FieldDetector
from core.store.eventlog import EventLog
from core.store.recorder import ProcedureRecorder, privacy_mask

log = logging.getLogger("cathlab.appliance")


class FieldWatch:
    def __init__(self, crop: tuple[int, int, int, int] | None, blank_recordings: bool, worker: AnalysisWorker,
                 log: EventLog, recorder: ProcedureRecorder | None) -> None:
        """Without a configured ``crop`` the field is found to mask measurements; with one, recordings that
        must be blanked still need the burnt-in text found."""
        self._crop = crop
        self._detector = FieldDetector(crop=crop) if crop is None or blank_recordings else None
        self._busy = False
        self._mask: np.ndarray | None = None   # bool, frame shape: where measurements may look
        self._worker = worker
        self._log = log
        self._recorder = recorder

    def add(self, pixels: np.ndarray) -> None:
        """A new pulse (frame thread): once the detector has seen enough, it runs on the worker."""
        detector = self._detector
        if detector is not None and not self._busy and detector.add(pixels):
            self._busy = True
            self._worker.submit(self._detect, detector)   # about a second at 1024x1024: off the frame path

    def _detect(self, detector: FieldDetector) -> None:
        try:
            geometry = detector.detect()
        except Exception:  # boundary: a field we cannot find leaves the whole frame measured
            log.exception("collimated field detection failed")
            geometry = None
        finally:
            self._busy = False
        if geometry is not None:
            if self._recorder is not None:
                self._recorder.set_mask(privacy_mask(geometry))   # outside the field and text: blanked
            # A mask, not a new crop: every run keeps one image geometry, so runs before and after the
            # detection still register against each other. A configured crop is measured as configured.
            if self._crop is None:
                self._mask = geometry.mask
            self._log.record("video_field", {"shape": geometry.shape, "crop": list(geometry.crop),
                                             "text_boxes": [list(b) for b in geometry.text_boxes]})

    def masked(self, peak: np.ndarray) -> np.ndarray:
        """Burnt-in text and the black surround are not measured: NaN there."""
        mask = self._mask
        if mask is None or mask.shape != peak.shape:
            return peak
        return np.where(mask, peak, np.float32(np.nan))
