"""Builds small DICOM multi-frame files for tests (XA, XRF, secondary capture; raw and compressed)."""
from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SOP_CLASS = {
    "XA": "1.2.840.10008.5.1.4.1.1.12.1",
    "XRF": "1.2.840.10008.5.1.4.1.1.12.2",
    "SC": "1.2.840.10008.5.1.4.1.1.7.2",   # multi-frame grayscale byte secondary capture
}


def write_multiframe(path, frames: np.ndarray, *, modality: str = "XA", frame_time_ms: float | None = 66.667,
                     frame_time_vector: list[float] | None = None, cine_rate: float | None = None,
                     relationship: str | None = None, bits_stored: int | None = None,
                     photometric: str = "MONOCHROME2", compress: str | None = None,
                     sign: int | None = None) -> None:
    frames = np.ascontiguousarray(frames)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SOP_CLASS[modality]
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT" if modality == "SC" else modality
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.NumberOfFrames = frames.shape[0]
    ds.Rows, ds.Columns = frames.shape[1:]
    ds.BitsAllocated = frames.dtype.itemsize * 8
    ds.BitsStored = bits_stored or ds.BitsAllocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if frame_time_ms is not None:
        ds.FrameTime = f"{frame_time_ms:.3f}"
    if frame_time_vector is not None:
        ds.FrameTimeVector = [f"{v:.3f}" for v in frame_time_vector]
    if cine_rate is not None:
        ds.CineRate = int(cine_rate)
    if relationship is not None:
        ds.PixelIntensityRelationship = relationship
    if sign is not None:
        ds.PixelIntensityRelationshipSign = sign
    ds.PixelData = frames.tobytes()
    if compress is not None:
        ds.compress(compress, frames)
    ds.save_as(path, enforce_file_format=True)
