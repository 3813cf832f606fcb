"""What clearance is graded on: the operator's named segments of the centreline, and the lysis grade."""
from __future__ import annotations

from core.identity import check_text

DEFAULT_GRADES = (50.0, 95.0)     # SIR: I < 50, II 50-95, III > 95


def parse_segments(text: str | None) -> list[tuple[str, float, float]]:
    """``"name:a-b,..."`` (arc fractions 0..1 of the analysed centreline) -> [(name, a, b)]."""
    if text is None:
        return []
    if not isinstance(text, str) or not text.strip():
        raise ValueError("--segments is empty; expected \"name:a-b,...\"")
    out = []
    for item in text.split(","):
        item = item.strip()
        name, sep, rng = item.rpartition(":")
        name = name.strip()
        a_txt, dash, b_txt = rng.partition("-")
        if not sep or not name or not dash:
            raise ValueError(f"--segments item {item!r} is not \"name:a-b\"")
        try:
            a, b = float(a_txt), float(b_txt)
        except ValueError:
            raise ValueError(f"--segments item {item!r}: {rng!r} is not two numbers a-b") from None
        if not (0.0 <= a < b <= 1.0):
            raise ValueError(f"--segments item {item!r}: need 0 <= a < b <= 1 (arc fractions)")
        check_text(name, "--segments name")     # names land in the output and the image: no identity
        if any(name == n for n, _, _ in out):
            raise ValueError(f"--segments names segment {name!r} twice")
        out.append((name, a, b))
    return out


def check_segments(segments) -> list[tuple[str, float, float]]:
    if segments is None:
        return []
    if isinstance(segments, str):
        return parse_segments(segments)
    out = []
    for seg in segments:
        try:
            name, a, b = seg
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            raise ValueError(f"segment {seg!r} is not (name, start, end)") from None
        if not (0.0 <= a < b <= 1.0):
            raise ValueError(f"segment {name!r}: need 0 <= start < end <= 1 (arc fractions), got {a}, {b}")
        out.append((str(name), a, b))
    return out


def check_thresholds(thresholds) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in thresholds)
    except (TypeError, ValueError):
        raise ValueError(f"grade_thresholds must be two numbers (II from, III above), got {thresholds!r}") from None
    if not (0.0 < lo < hi <= 100.0):
        raise ValueError(f"grade_thresholds need 0 < II < III <= 100, got {thresholds!r}")
    return lo, hi


def grade(clearance_pct: float | None, thresholds=DEFAULT_GRADES) -> str | None:
    """Lysis grade: I below the first threshold, III above the second, II between (inclusive)."""
    if clearance_pct is None:
        return None
    lo, hi = check_thresholds(thresholds)
    if clearance_pct < lo:
        return "I"
    if clearance_pct > hi:
        return "III"
    return "II"
