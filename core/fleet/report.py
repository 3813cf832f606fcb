"""The fleet report from PostgreSQL: per site and room, procedures, contrast runs, contrast volume, fluoroscopy
time, clearance grades, boxes offline and the oldest un-forwarded backlog. Data only; the command prints."""
from __future__ import annotations

import datetime as dt

import psycopg

# A box that has not refreshed its status (every 10 s) for this long counts as offline even without its will.
STALE_S = 60

# A run may be recorded again (relabelled, completed by a late injector summary): its newest record counts.
_ACTIVITY = """
WITH ev AS (
    SELECT * FROM cathlab_events WHERE %(since)s::timestamptz IS NULL OR t_wall >= %(since)s::timestamptz
), runs AS (
    SELECT DISTINCT ON (appliance_id, data->>'run_id') site, room, data
    FROM ev WHERE kind = 'run' ORDER BY appliance_id, data->>'run_id', event_id DESC
), per_room AS (
    SELECT site, room, count(DISTINCT procedure_id) AS procedures FROM ev GROUP BY site, room
), run_totals AS (
    SELECT site, room, count(*) FILTER (WHERE (data->>'contrast')::boolean) AS contrast_runs,
           coalesce(sum((data->>'duration_s')::float8), 0) AS fluoro_s
    FROM runs GROUP BY site, room
), volume AS (
    SELECT site, room, coalesce(sum((data->>'delivered_volume_ml')::float8), 0) AS contrast_ml
    FROM ev WHERE kind = 'injection' GROUP BY site, room
), grades AS (
    SELECT site, room, jsonb_object_agg(grade, n) AS grades FROM (
        SELECT site, room, coalesce(data->>'grade', '?') AS grade, count(*) AS n
        FROM ev WHERE kind = 'clearance' GROUP BY site, room, 3) g GROUP BY site, room
)
SELECT p.site, p.room, p.procedures, coalesce(r.contrast_runs, 0), coalesce(r.fluoro_s, 0),
       coalesce(v.contrast_ml, 0), coalesce(g.grades, '{}'::jsonb)
FROM per_room p
LEFT JOIN run_totals r ON r.site IS NOT DISTINCT FROM p.site AND r.room IS NOT DISTINCT FROM p.room
LEFT JOIN volume v ON v.site IS NOT DISTINCT FROM p.site AND v.room IS NOT DISTINCT FROM p.room
LEFT JOIN grades g ON g.site IS NOT DISTINCT FROM p.site AND g.room IS NOT DISTINCT FROM p.room
ORDER BY p.site, p.room NULLS FIRST
"""

_BOXES = """
SELECT site, room, count(*) AS boxes,
       count(*) FILTER (WHERE NOT online OR last_seen < now() - make_interval(secs => %(stale)s)) AS offline,
       coalesce(sum(backlog), 0) AS backlog,
       min(status->>'backlog_oldest_wall') FILTER (WHERE coalesce(backlog, 0) > 0) AS oldest_backlog
FROM cathlab_appliances GROUP BY site, room
"""


def fleet_report(dsn: str, since: dt.date | None = None) -> list[dict]:
    """One dict per (site, room) seen in events or status messages."""
    with psycopg.connect(dsn) as conn:
        activity = conn.execute(_ACTIVITY, {"since": since}).fetchall()
        boxes = {(r[0], r[1]): r[2:] for r in conn.execute(_BOXES, {"stale": STALE_S}).fetchall()}
    rows = {}
    for site, room, procedures, contrast_runs, fluoro_s, contrast_ml, grades in activity:
        rows[(site, room)] = {"site": site, "room": room, "procedures": procedures, "contrast_runs": contrast_runs,
                              "contrast_ml": round(contrast_ml, 1), "fluoro_time_s": round(fluoro_s, 1),
                              "clearance_grades": dict(grades), "boxes": 0, "boxes_offline": 0, "backlog": 0,
                              "oldest_backlog_wall": None}
    for key, (n, offline, backlog, oldest) in boxes.items():
        row = rows.setdefault(key, {"site": key[0], "room": key[1], "procedures": 0, "contrast_runs": 0,
                                    "contrast_ml": 0.0, "fluoro_time_s": 0.0, "clearance_grades": {}})
        row.update(boxes=n, boxes_offline=offline, backlog=int(backlog), oldest_backlog_wall=oldest)
    return [rows[k] for k in sorted(rows, key=lambda k: (k[0] or "", k[1] or ""))]
