"""A catheter calibration the profile cannot pin is refused with its reason (``cathlab-edge vessel`` exits 2,
``PUT /api/calibration`` answers 422), and the phantom's own catheters are not: their width holds with the
blur measured on the vein, and the MLD in mm within the issue's 0.3 mm."""
import numpy as np
import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.auth import TOKEN_FILE
from api.cli.main import main
from core.analysis.calibration import catheter_mm_per_px
from core.analysis.peak import peak_and_mask
from core.analysis.sizing import measure_sizing
from core.ops.settings import Settings
from core.sources.phantom.render import render_run
from core.sources.phantom.sizing_cases import make_sizing_case
from core.sources.stacks import FrameStack
from tests.test_catheter_vessel_blur import scene

REASON = "catheter width ambiguous: a thin wall under blur fits"


def thin_wall_run(seed: int = 5, frames: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """(12-bit linear frames, catheter points): an 8 px catheter with a 0.75 px wall under a 1.5 px PSF (the
    least-blur fit reads it 23% wide) and no vein to measure the blur on; quantum-like noise per frame."""
    mask, _, points, _ = scene(8.0, 0.75, 1.5, seed=seed, vein_px=None, noise=0.0)
    rng = np.random.default_rng(seed)
    counts = 3000.0 * np.exp(mask - 5.0)
    stack = np.clip(np.rint(counts[None] + rng.normal(0, 30.0, (frames, *mask.shape))), 0, 4095)
    return stack.astype(np.uint16), points


def test_the_command_refuses_an_ambiguous_catheter_with_its_reason(tmp_path, capsys):
    frames, points = thin_wall_run()
    np.save(tmp_path / "run.npy", frames)
    cath = ";".join(f"{x:.1f},{y:.1f}" for x, y in points)
    assert main(["vessel", str(tmp_path / "run.npy"), "--fps", "15", "--catheter", cath,
                 "--catheter-french", "6"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"cathlab-edge vessel: {REASON}"), err


def test_the_api_refuses_an_ambiguous_catheter_with_422_and_its_reason(tmp_path):
    frames, points = thin_wall_run()
    stack = FrameStack(frames, 15.0, "lin", 12, np.arange(len(frames)) / 15.0, "test")
    peak, mask = peak_and_mask(stack)
    app = create_app(Settings(data_dir=tmp_path, phantom_size=256))
    with TestClient(app) as client:
        h = {"Authorization": f"Bearer {(tmp_path / TOKEN_FILE).read_text().strip()}"}
        sizing = app.state.appliance.sizing
        # Images are kept on the analysis worker (as the appliance does when a run ends).
        sizing._worker.submit(sizing.add_run, "thin-1", peak, mask, None).result(timeout=10)
        r = client.put("/api/calibration", json={"catheter_french": 6, "catheter": points.tolist(),
                                                 "run_id": "thin-1"}, headers=h)
        assert r.status_code == 422, r.text
        assert r.json()["detail"][0]["msg"].startswith(REASON)


@pytest.mark.parametrize("seed", range(8))
def test_the_phantom_catheters_are_not_refused(seed):
    intensity = "lin" if seed % 2 == 0 else "log"
    case = make_sizing_case(seed, 50.0, intensity, catheter=True)
    run = render_run(case.config)
    stack = FrameStack(run.frames, run.fps, intensity, 12 if intensity == "lin" else 8,
                       np.arange(run.frames.shape[0]) / run.fps, "phantom")
    peak, mask = peak_and_mask(stack)
    mm = catheter_mm_per_px(mask, case.truth.catheter_xy, 6.0, opacity=peak, ln_mask=intensity == "lin")
    true_mm = 2.0 / case.truth.catheter_px
    assert mm == pytest.approx(true_mm, rel=0.07)
    r = measure_sizing(peak, case.truth.centreline_xy, mm_per_px=mm, calibration="catheter").to_json()
    assert abs(r["mld_mm"] - case.truth.mld_px * true_mm) <= 0.3


# Seeds 10 and 13 read 17-21% narrow before; 1 and 16 are measured (the rest of the sweep's eight: the sweep).
@pytest.mark.parametrize("seed", [1, 10, 13, 16])
def test_the_sweeps_catheters_under_blur_are_right_or_refused(seed):
    """benchmarks/sweep_vessel.py's catheters (a paired vein, a collateral, a device beside the vein; some lie
    along the phantom's bony ring in the mask) under a 1 px PSF: within 7% or refused, never 20% off (two read
    the catheter 17-21% narrow: at the vein's blur the fit ran to its thinnest wall)."""
    from benchmarks.sweep_vessel import blurred_stack, case_for
    case = case_for(seed)[0]
    peak, mask = peak_and_mask(blurred_stack(render_run(case.config), case.config.intensity, 1.0))
    try:
        mm = catheter_mm_per_px(mask, case.truth.catheter_xy, 6.0, opacity=peak, centerline=case.truth.centreline_xy,
                                ln_mask=case.config.intensity == "lin")
    except ValueError as exc:
        assert str(exc).startswith(("catheter width ambiguous", "catheter profile does not fit a tube")), exc
        return
    assert mm == pytest.approx(2.0 / case.truth.catheter_px, rel=0.07)
