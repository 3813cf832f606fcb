"""The collimated field: found once from the first distinct pulses, off the frame path, then used to blank
recordings and the run images kept on disk (outside the field and in the burnt-in text) and to leave the
surround out of measurements."""
from __future__ import annotations

import logging

import numpy as np

from core.appliance.worker import AnalysisWorker
from core.sources.collimator import FieldDetector
from core.store.eventlog import EventLog
from core.store.recorder import ProcedureRecorder, privacy_mask

log = logging.getLogger("cathlab.appliance")


class FieldWatch:
    def __init__(self, crop: tuple[int, int, int, int] | None, worker: AnalysisWorker,
                 log: EventLog, recorder: ProcedureRecorder | None) -> None:
        """Without a configured ``crop`` the field is found to mask measurements; with one, the burnt-in text
        is still found: recordings and the run images kept on disk are blanked there."""
        self._crop = crop
        self._detector = FieldDetector(crop=crop)
        self._busy = False
        self._mask: np.ndarray | None = None   # bool, frame shape: where measurements may look
        self._keep: np.ndarray | None = None   # bool, frame shape: what a stored image keeps (privacy_mask)
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
            self._keep = privacy_mask(geometry)
            if self._recorder is not None:
                self._recorder.set_mask(self._keep)   # outside the field and text: blanked
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

    def blanked(self, image: np.ndarray) -> np.ndarray | None:
        """A copy for the disk, NaN outside the field and in every burnt-in text box, as recordings blank them
        (where C-arms print the patient's name); None while the field is not known: never stored raw."""
        keep = self._keep
        if keep is None:
            return None
        if image.shape != keep.shape and self._crop is not None:
            x, y, w, h = self._crop
            keep = keep[y:y + h, x:x + w]      # the pipeline's images are of the configured crop
        if image.shape != keep.shape:
            return None
        return np.where(keep, image, np.float32(np.nan)).astype(np.float32, copy=False)
