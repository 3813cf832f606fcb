"""Request and response schemas: what /openapi.json documents and what every response is validated against.

Response models name the fields clients rely on and allow extra ones (``extra="allow"``), so the appliance can
add detail without breaking the contract; request models forbid extras so a typo is a 422, not a silent no-op.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from core.analysis.clearance.measure import MAX_CENTERLINE_POINTS
from core.analysis.totals import CREATININE_RANGE_MG_DL, MAX_CONCENTRATION_MG_ML, MAX_INJECTION_ML, WEIGHT_RANGE_KG
from core.identity import ALLOWED, MAX_TEXT, check_optional

# Ids the appliance hands out are short tokens (run "1a2b3c4d-7", procedure uuid hex); anything else is malformed.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
RunId = Annotated[str, Field(pattern=ID_PATTERN, description="Run id, as listed by `GET /api/runs`")]
ProcedureId = Annotated[str, Field(pattern=ID_PATTERN, description="Procedure id, as listed by `GET /api/procedures`")]


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Closed(BaseModel):
    # Strict: JSON true is not the number 1 and "70" is not 70 (an int still passes for a float, as in JSON).
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


# -- errors ----------------------------------------------------------------------------------------------
class Message(BaseModel):
    detail: str = Field(description="What went wrong, for a person")


# FastAPI reads a body before any dependency runs: one that is not even text is a 400, token or not.
UNPARSABLE = {400: {"model": Message, "description": "The body could not be read (not UTF-8 text)"}}
# Routes that wait for the appliance's analysis worker (bounded): 503 with Retry-After when it is busy.
BUSY = {503: {"model": Message, "description": "The analysis worker is busy; retry after the Retry-After seconds"}}


# -- status ----------------------------------------------------------------------------------------------
class InjectorFault(_Open):
    code: int = Field(description="The device's fault code")
    severity: int = Field(description="2 (error): only errors are alarms")
    text: str = Field(description="The device's text, may be empty")


class Injector(_Open):
    link: Literal["up", "silent", "down"] = Field(description="Serial link: up, silent (no packet for 3 s) or down")
    state: str | None = Field(description="Injector state as the device reports it (idle, armed, injecting, ...)")
    flow_ml_s: float | None = Field(description="Live flow; 0 without a recent sample, and at once when the "
                                                "injector stops pumping (complete, abort, fault)")
    volume_ml: float | None = Field(description="Volume delivered in the current injection; "
                                                "null without a recent sample or when the sample's volume "
                                                "was implausible")
    pressure_kpa: float | None = Field(description="Live pressure; 0 as flow is")
    device: dict[str, Any] | None = Field(description="Model, serial number, firmware, from the device's HELLO")
    fault: InjectorFault | None = Field(None, description="The injector's active error (FAULT of severity 2), "
                                                          "until its state changes to idle or complete or a "
                                                          "new session starts; null when none")


class Video(_Open):
    enabled: bool = Field(description="False: no video by configuration (`video = \"none\"`, or a serial "
                                      "injector without a video setting); the injector alone is watched")
    source: str = Field(description="\"none\", \"phantom\", or the grabber or replayed file's name")


class XRay(_Open):
    on: bool = Field(description="X-ray on, arbitrated: the injector's X-ray signal when it gives one, else the image")
    pulse_rate: float | None = Field(description="Pulses per second recovered from repeated frames")
    source: str | None = Field(None, description="What decided `on`: device or image; null without video and "
                                                 "without the injector's X-ray signal")
    image_on: bool | None = Field(None, description="The video says X-ray is on (frames changing); null "
                                                    "without video")
    device_on: bool | None = Field(None, description="The injector's X-ray signal; null without one")


class Alarm(_Open):
    kind: str = Field(description="link, video, disk, clock, ... (stable machine name)")
    message: str = Field(description="What is wrong, for the people in the room")


class LiveCurve(_Open):
    roi: list[int] | None = Field(None, description="[x, y, w, h] of the ROI in frame pixels")
    auto: bool | None = Field(None, description="The ROI was placed automatically")
    curve: list[tuple[float, float | None]] = Field(default_factory=list,
                                                    description="[seconds from run start, mean opacity] so far")


class LiveRun(_Open):
    index: int | None = None
    run_id: str | None = None
    duration_s: float | None = Field(None, description="The run timer")
    frames: int | None = None
    pulses: int | None = None
    pulse_rate: float | None = None
    contrast: bool | None = Field(None, description="An injection overlaps the run or opacity rose in it")
    injection_delay_s: float | None = Field(None, description="Injection start - X-ray start")
    tdc: LiveCurve | None = Field(None, description="The first ROI's time-density curve as it grows")


class RunBrief(_Open):
    run_id: str | None = None
    label: str | None = None
    contrast: bool | None = None
    duration_s: float | None = None
    frames: int | None = None
    pulses: int | None = None
    pulse_rate: float | None = None
    injection_delay_s: float | None = None
    injection_source: str | None = Field(None, description="Who gave the run's injection: injector, hand or null")
    delivered_volume_ml: float | None = None
    arrival_s: float | None = None
    peak_s: float | None = None
    washout_s: float | None = None
    mtt_s: float | None = Field(None, description="Centroid - injection start; null without a known start")
    roi: list[int] | None = Field(None, description="[x, y, w, h] of the ROI the times are of")
    roi_auto: bool | None = Field(None, description="The ROI was placed automatically")
    roi_reason: str | None = Field(None, description="Why the automatic ROI is where it is")


class Status(_Open):
    injector: Injector
    video: Video | None = Field(None, description="Which video the appliance watches, or that it has none")
    xray: XRay
    run: LiveRun | None = Field(description="The current X-ray run (timer, frames, pulses, live curve), or null")
    last_runs: list[RunBrief] = Field(default_factory=list, description="Most recent runs first, with timing")
    procedure: dict[str, Any] | None = Field(description="The open procedure with its totals, or null")
    counters: dict[str, Any] = Field(description="Frames, drops, serial packets, CRC errors, event log ...")
    alarms: list[Alarm]
    warnings: list[str] = Field(default_factory=list,
                                description="How the API is exposed, e.g. listening beyond loopback without TLS")
    uptime_s: float | None = None


class Health(BaseModel):
    ok: bool
    reasons: list[str] = Field(description="Why the appliance is unhealthy; empty when ok")


# -- runs, procedures, events ----------------------------------------------------------------------------
class Vessel(_Open):
    """The same JSON as ``cathlab-edge vessel --json``."""
    calibration: Literal["dicom", "catheter", "operator"] | None = Field(description="Where mm_per_px came from; "
                                                                                     "null: pixels only")
    mm_per_px: float | None = None
    reference_diameter_px: float
    reference_diameter_mm: float | None = None
    mld_px: float = Field(description="Minimal lumen diameter at the lesion")
    mld_mm: float | None = None
    diameter_stenosis_pct: float
    area_stenosis_pct: float
    lesion_length_px: float
    lesion_length_mm: float | None = None
    lesion: dict[str, float] = Field(description="x, y of the narrowest point and its arc fraction frac")
    residual_stenosis_ge_50: bool
    profile: list[dict[str, Any]] = Field(description="s_px, diameter_px, reference_px along the vessel")
    warnings: list[str]


class Run(_Open):
    run_id: str
    procedure_id: str | None = None
    duration_s: float | None = None
    frames: int | None = None
    pulses: int | None = None
    pulse_rate: float | None = None
    label: str | None = None
    vessel: Vessel | None = Field(None, description="Vessel sizing (single run): measured for runs labelled "
                                                    "completion and on request; null when not measured")


class RunList(BaseModel):
    runs: list[Run] = Field(description="Oldest first")


class Totals(_Open):
    fluoro_time_s: float | None = Field(None, description="Fluoroscopy time: the runs' summed duration")
    runs: int | None = None
    contrast_runs: int | None = None
    contrast_ml: float | None = Field(None, description="Contrast delivered, from the injector's summaries")
    injections: int | None = None
    weight_kg: float | None = None
    creatinine_mg_dl: float | None = None
    max_contrast_ml: float | None = Field(None, description="Cigarroa: 5 ml x kg / (mg/dl), at most 300 ml; "
                                                            "null until weight and creatinine are set")
    contrast_pct: float | None = Field(None, description="contrast_ml against max_contrast_ml, %")
    contrast_ml_injector: float | None = Field(None, description="Contrast from the injector's summaries")
    contrast_ml_hand: float | None = Field(None, description="Contrast given by hand, as entered")
    iodine_g: float | None = Field(None, description="Iodine: volume x concentration, all contrast; null while "
                                                     "some volume has no known concentration")


class Procedure(_Open):
    id: str
    label: str | None = None
    started_wall: str | None = None
    ended_wall: str | None = None
    open: bool | None = None
    fields: dict[str, Any] = Field(default_factory=dict, description="Clinical parameters (weight, creatinine)")
    totals: Totals | None = Field(None, description="Totals and the contrast limit (status and single procedure)")
    clearance: list[dict[str, Any]] | None = Field(None, description="Clearance results (single procedure)")


class ProcedureList(BaseModel):
    procedures: list[Procedure] = Field(description="Most recent first; the open one first of all")


class Event(BaseModel):
    id: int
    procedure_id: str | None
    t_mono_ns: int = Field(description="Appliance monotonic clock, ns (orders events; not a wall time)")
    t_wall: str = Field(description="UTC ISO-8601 wall time, for display")
    kind: str
    data: dict[str, Any]


class EventPage(BaseModel):
    events: list[Event] = Field(description="In id order")
    next: int = Field(description="Pass as `after` to get the following page")


# -- writes ----------------------------------------------------------------------------------------------
# What core.identity.check_text accepts, so the schema shows clients the rule before the check refuses.
LABEL_PATTERN = r"^[A-Za-z0-9 .,_+()/-]+$"


class ProcedureStart(_Closed):
    label: str | None = Field(None, min_length=1, max_length=MAX_TEXT, pattern=LABEL_PATTERN,
                              description=f"Short operator note such as a room or a series (\"room 2\", "
                                          f"\"L iliac\"): at most {MAX_TEXT} characters of {ALLOWED}. Refused "
                                          "(422) when it looks like patient identity: a '^' (DICOM names), 6 or "
                                          "more digits (record or accession numbers), a date or an identity "
                                          "word (MRN, DOB, patient, name ...). The procedure id is generated.")

    # Before the schema's own constraints, so a refusal says which rule (a '^', digits, a date), not "pattern".
    @field_validator("label", mode="before")
    @classmethod
    def _no_identity(cls, label):
        return check_optional(label, "procedure label")


class RunLabel(_Closed):
    label: Literal["baseline", "intraprocedural", "completion"] = Field(
        description="The run's role in the procedure; one of three words, never free text")


class RunLabelled(BaseModel):
    run_id: str
    label: str


class Patient(_Closed):
    # The appliance's plausible ranges (core.analysis.totals), so the schema tells clients what it will accept.
    weight_kg: float | None = Field(..., ge=WEIGHT_RANGE_KG[0], le=WEIGHT_RANGE_KG[1],
                                    description="Body weight; null clears it")
    creatinine_mg_dl: float | None = Field(..., ge=CREATININE_RANGE_MG_DL[0], le=CREATININE_RANGE_MG_DL[1],
                                           description="Serum creatinine; null clears it")


class HandInjection(_Closed):
    volume_ml: float = Field(..., gt=0, le=MAX_INJECTION_ML, description="Volume given by hand")
    concentration_mg_ml: float | None = Field(None, gt=0, le=MAX_CONCENTRATION_MG_ML,
                                              description="mg iodine per ml; null: not known")
    at: str | None = Field(None, max_length=40, description="When it was given: ISO-8601 wall time with its "
                                                            "offset (2026-12-04T10:00:00+01:00); null: now")

    @field_validator("at")
    @classmethod
    def _wall_time(cls, at):
        if at is None:
            return at
        try:
            when = datetime.fromisoformat(at)
        except ValueError:
            raise ValueError("at must be an ISO-8601 time such as 2026-12-04T10:00:00+01:00") from None
        if when.tzinfo is None:
            raise ValueError("at needs its UTC offset (a wall time alone is ambiguous)")
        return when.isoformat()


# Fixed-length arrays rather than tuples: a tuple becomes prefixItems, which OpenAPI tooling reads unevenly.
Pixel = Annotated[int, Field(ge=0, le=100_000)]
Roi = Annotated[list[Pixel], Field(min_length=4, max_length=4, description="[x, y, w, h]; w and h at least 1")]


class Rois(_Closed):
    rois: list[Roi] | None = Field(..., max_length=16,
                                   description="Regions of interest as [x, y, w, h] in frame pixels; null: automatic")

    @field_validator("rois")
    @classmethod
    def _extent(cls, rois):
        for roi in rois or ():
            if roi[2] < 1 or roi[3] < 1:
                raise ValueError(f"ROI {roi}: width and height must be at least 1 pixel")
        return rois


Point = Annotated[list[Annotated[float, Field(ge=0, le=100_000)]], Field(min_length=2, max_length=2,
                                                                          description="[x, y]")]


class Centerline(_Closed):
    points: list[Point] | None = Field(
        ..., min_length=2, max_length=MAX_CENTERLINE_POINTS,
        description=f"Vessel centreline as [x, y] in baseline pixels; null: automatic. At most "
                    f"{MAX_CENTERLINE_POINTS} points (a vein is drawn with a few dozen) and at most 2 x (width + "
                    f"height) of the image long (it crosses the image once): the analysis time grows with the "
                    f"length, and the analysis worker is shared with run recording")
    diameter_px: float | None = Field(None, gt=0, le=10_000, description="Reference lumen diameter in pixels")


class Accepted(_Open):
    ok: bool = True


class CalibrationSet(_Closed):
    mm_per_px: float | None = Field(None, gt=0, le=10, description="Millimetres per pixel at the vessel")
    catheter_french: float | None = Field(None, ge=3, le=30, description="Catheter size in French (outer "
                                                                         "diameter F/3 mm)")
    catheter: list[Point] | None = Field(None, min_length=2, max_length=2,
                                         description="Two [x, y] points along the catheter on the run's image")
    run_id: RunId | None = Field(None, description="The run whose contrast-free image shows the catheter (kept "
                                                   "while the run's image is: GET /api/runs/{id}/image.png)")

    @model_validator(mode="after")
    def _one_kind(self):
        catheter = (self.catheter_french, self.catheter, self.run_id)
        if self.mm_per_px is not None:
            if any(v is not None for v in catheter):
                raise ValueError("give mm_per_px, or catheter_french with catheter and run_id, not both")
        elif any(v is None for v in catheter):
            raise ValueError("give mm_per_px, or catheter_french with catheter and run_id")
        return self


class Calibration(_Open):
    calibration: Literal["operator", "catheter"]
    mm_per_px: float
    catheter_french: float | None = None
    catheter: list[list[float]] | None = None
    run_id: str | None = None
