"""What the pages say: plain-language banners, the stage timeline and the SVG charts.

Everything returned here is data or text; the templates escape it.  The SVG charts are built
from numbers only (no header text ever reaches them), then marked safe by the templates.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from drossel.app.report import StageHistory, day_of, stage_rates
from drossel.core.decision import relevant_pauses
from drossel.core.policy import Policy
from drossel.core.schedule import Pause, stage_at, stage_start
from drossel.storage.store import StoredServer


def install_text(row: dict[str, Any]) -> str:
    recs = row.get("recommended_builds") or []
    if not recs:
        return ""
    text = "; ".join(recs)
    return text if text.lower().startswith("migrate") else f"install {text}"


def _refusal(throttle: int, block: int) -> str:
    if block >= 60:
        return "all mail from it will be refused (550, bounced to the sender)"
    if block:
        return (
            f"mail from it will be bounced (550) {block} minutes and delayed (450) "
            f"{throttle} minutes of every hour"
        )
    return (
        "mail from it will be refused temporarily (450, retried later) "
        f"{throttle} minutes of every hour"
    )


@dataclass(frozen=True, slots=True)
class Banner:
    level: str  # "ok", "info", "warn", "bad"
    server: str
    text: str
    install: str


def banner(row: dict[str, Any]) -> Banner:
    """One sentence an admin understands: what happens to mail from this server, from when,
    and what to install to stop it."""
    server = row["server_fqdn"]
    install = install_text(row)
    if row.get("remediated"):
        return Banner(
            "ok",
            server,
            f"{server} now runs a supported, patched build ({row['build']}); "
            "nothing is throttled or blocked.",
            "",
        )
    if not row.get("persistently_vulnerable"):
        return Banner(
            "ok", server, f"{server} ({row['build']}) is not enforced; no action needed.", ""
        )
    why = "; ".join(row.get("reasons") or []) or f"its build {row['build']} is {row['status']}"
    stage = row["stage"]
    paused = row.get("paused_until")
    throttle, block = row["throttle_minutes"], row["block_minutes"]
    prefix = f"{server} runs {row.get('update_name') or row['build']}: {why}. "
    reason = row.get("applied_reason")
    if reason and not paused:
        # nothing is applied now; say why, and what the schedule would do without it (SPEC §7)
        scheduled = row.get("scheduled_stage")
        rates = stage_rates(
            row.get("scheduled_throttle_minutes"), row.get("scheduled_block_minutes")
        )
        return Banner(
            "info",
            server,
            prefix + f"Nothing is throttled or blocked now: {reason}. "
            f"Without that it would be at stage {scheduled} of 8 ({rates}).",
            install,
        )
    if paused:
        scheduled = row.get("scheduled_stage")
        rates = stage_rates(
            row.get("scheduled_throttle_minutes"), row.get("scheduled_block_minutes")
        )
        nxt = f"; when the pause ends it continues at stage {scheduled} ({rates})"
        return Banner(
            "info",
            server,
            prefix + f"Throttling and blocking are paused until {paused}{nxt}.",
            install,
        )
    now_text = ""
    level = "warn"
    if block >= 60:
        now_text = "All mail from it is refused now (550, bounced to the sender)."
        level = "bad"
    elif block or throttle:
        now_text = f"Now: {stage_rates(throttle, block)} (stage {stage} of 8)."
        level = "bad" if block else "warn"
    else:
        level = "info"
    nxt_stage = row.get("next_stage")
    nxt_text = ""
    if nxt_stage and row.get("next_stage_start"):
        nxt_text = f" From {day_of(row['next_stage_start'])} {_refusal_short(row, server)}."
    return Banner(level, server, prefix + (now_text + nxt_text).strip(), install)


def _refusal_short(row: dict[str, Any], server: str) -> str:
    throttle = row.get("next_stage_throttle_minutes") or 0
    block = row.get("next_stage_block_minutes") or 0
    return _refusal(throttle, block).replace("mail from it", f"mail from {server}", 1)


@dataclass(frozen=True, slots=True)
class TimelineStage:
    number: int
    start: date | None
    end: date | None
    throttle: int
    block: int
    current: bool
    past: bool


def timeline(
    stored: StoredServer, policy: Policy, now: datetime, pauses: list[Pause]
) -> list[TimelineStage]:
    record = stored.record
    clock = record.clock
    if clock is None:
        return []
    mine = relevant_pauses(pauses, record.tenant, record.server)
    current = stage_at(policy, clock, now, mine).number if record.remediated_at is None else 0
    starts: list[date | None] = []
    for number in range(1, len(policy.stages) + 1):
        start = stage_start(policy, clock, number, now, mine)
        starts.append(start.date() if start else None)
    result = []
    for index, stage in enumerate(policy.stages):
        number = index + 1
        end = starts[index + 1] if index + 1 < len(starts) else None
        result.append(
            TimelineStage(
                number,
                starts[index],
                end,
                stage.throttle_minutes,
                stage.block_minutes,
                number == current,
                current > number,
            )
        )
    return result


_STAGE_COLOURS = {
    "report": "#cfe8cf",
    "throttle": "#f0a500",
    "block": "#d9534f",
    "full": "#7b1d12",
}


def _stage_colour(s: TimelineStage) -> str:
    if s.block >= 60:
        return _STAGE_COLOURS["full"]
    if s.block:
        return _STAGE_COLOURS["block"]
    if s.throttle:
        return _STAGE_COLOURS["throttle"]
    return _STAGE_COLOURS["report"]


def timeline_svg(
    stages: list[TimelineStage], today: date, pauses: list[Pause], width: int = 900
) -> str:
    """The 8 stages on a date axis, paused days hatched, a line at today."""
    dated = [s for s in stages if s.start is not None]
    if not dated:
        return ""
    first = min(s.start for s in dated if s.start)
    last_start = max(s.start for s in dated if s.start)
    last = max(last_start + timedelta(days=15), today + timedelta(days=5))
    span = max((last - first).days, 1)
    left, right, top, height = 10, 10, 24, 34
    inner = width - left - right

    def x(day: date) -> float:
        return left + inner * ((day - first).days / span)

    parts = [
        f'<svg class="timeline" viewBox="0 0 {width} 110" width="100%" role="img" '
        f'aria-label="Enforcement stages over time">'
    ]
    for s in dated:
        assert s.start is not None
        end = s.end or last
        x0, x1 = x(s.start), x(end)
        colour = _stage_colour(s)
        stroke = ' stroke="#222" stroke-width="2"' if s.current else ""
        parts.append(
            f'<rect x="{x0:.1f}" y="{top}" width="{max(x1 - x0, 1):.1f}" height="{height}" '
            f'fill="{colour}"{stroke}><title>Stage {s.number}: {s.start.isoformat()}'
            f" – {stage_rates(s.throttle, s.block)}</title></rect>"
        )
        if x1 - x0 > 16:
            text_colour = "#fff" if s.block >= 60 else "#222"
            parts.append(
                f'<text x="{(x0 + x1) / 2:.1f}" y="{top + 22}" text-anchor="middle" '
                f'font-size="13" fill="{text_colour}">{s.number}</text>'
            )
        parts.append(
            f'<text x="{x0 + 2:.1f}" y="{top + height + 16}" font-size="10" fill="#555">'
            f"{s.start.strftime('%d %b')}</text>"
        )
    for p in pauses:
        p0, p1 = max(p.start, first), min(p.end, last)
        if p1 <= p0:
            continue
        parts.append(
            f'<rect x="{x(p0):.1f}" y="{top - 6}" width="{max(x(p1) - x(p0), 2):.1f}" '
            f'height="{height + 12}" fill="url(#hatch)" stroke="#2b6cb0">'
            f"<title>paused {p.start.isoformat()} – {p.end.isoformat()}</title></rect>"
        )
    if first <= today <= last:
        tx = x(today)
        parts.append(
            f'<line x1="{tx:.1f}" x2="{tx:.1f}" y1="6" y2="{top + height + 4}" '
            'stroke="#000" stroke-width="2" stroke-dasharray="4 2"/>'
            f'<text x="{tx:.1f}" y="12" font-size="11" text-anchor="middle" '
            'font-weight="bold">today</text>'
        )
    parts.insert(
        1,
        '<defs><pattern id="hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
        'patternTransform="rotate(45)"><rect width="6" height="6" fill="rgba(43,108,176,0.15)"/>'
        '<line x1="0" y1="0" x2="0" y2="6" stroke="#2b6cb0" stroke-width="2"/></pattern></defs>',
    )
    parts.append("</svg>")
    return "".join(parts)


BAR_COLOURS = {"accept": "#4caf50", "throttle": "#f0a500", "block": "#d9534f"}


def daily_series(
    counts: dict[date, dict[str, int]], today: date, days: int = 90
) -> list[dict[str, Any]]:
    result = []
    for offset in range(days - 1, -1, -1):
        day = today - timedelta(days=offset)
        c = counts.get(day, {})
        result.append(
            {
                "day": day.isoformat(),
                "accept": int(c.get("accept", 0)),
                "throttle": int(c.get("throttle", 0)),
                "block": int(c.get("block", 0)),
            }
        )
    return result


def counts_svg(series: list[dict[str, Any]], width: int = 900, height: int = 220) -> str:
    """Stacked daily bars: accepted (green), throttled (amber), blocked (red)."""
    left, right, top, bottom = 44, 8, 10, 28
    inner_w, inner_h = width - left - right, height - top - bottom
    peak = max((d["accept"] + d["throttle"] + d["block"] for d in series), default=0)
    scale_max = _nice(peak)
    n = max(len(series), 1)
    bar_w = inner_w / n
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" '
        f'aria-label="Messages per day: accepted, throttled, blocked">'
    ]
    for i in range(5):
        value = scale_max * i / 4
        y = top + inner_h - inner_h * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#555">{int(value)}</text>'
        )
    for index, d in enumerate(series):
        x = left + index * bar_w
        y = top + inner_h
        for action in ("accept", "throttle", "block"):
            value = d[action]
            if not value:
                continue
            h = inner_h * value / scale_max
            y -= h
            parts.append(
                f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{BAR_COLOURS[action]}"><title>{d["day"]}: '
                f"{value} {_label(action)}</title></rect>"
            )
        if index % 15 == 0 or index == n - 1:
            parts.append(
                f'<text x="{x:.1f}" y="{height - 10}" font-size="10" fill="#555">'
                f"{d['day'][5:]}</text>"
            )
    parts.append("</svg>")
    return "".join(parts)


def _label(action: str) -> str:
    return {"accept": "accepted", "throttle": "throttled (450)", "block": "blocked (550)"}[action]


def _nice(value: int) -> int:
    if value <= 4:
        return 4
    magnitude = 1
    while magnitude * 10 < value:
        magnitude *= 10
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return (
                int(step * magnitude)
                if int(step * magnitude) % 4 == 0
                else int(-(-step * magnitude // 4) * 4)
            )
    return value


#: colours of stages 1 .. 8 of the default schedule: report only, then throttling, then blocking
STAGE_PALETTE = (
    "#cfe8cf",
    "#f7e08a",
    "#f5c45c",
    "#f0a500",
    "#e8743b",
    "#d9534f",
    "#b03a2e",
    "#7b1d12",
)
PAUSED_COLOUR = "#7fa7d6"


def stage_colour(number: int, stages: int) -> str:
    """The palette spread over however many stages the policy has."""
    last = len(STAGE_PALETTE) - 1
    return STAGE_PALETTE[round((number - 1) * last / max(stages - 1, 1))]


def stage_history_svg(history: StageHistory, width: int = 900, height: int = 250) -> str:
    """Stacked daily bars: servers at each stage (1 at the bottom), paused ones on top; the
    servers on no clock are only counted in each bar's tooltip.  Numbers and dates only."""
    left, right, top, bottom = 52, 8, 30, 28
    inner_w, inner_h = width - left - right, height - top - bottom
    keys = [str(n) for n in range(1, history.stages + 1)] + ["paused"]
    colours = {str(n): stage_colour(n, history.stages) for n in range(1, history.stages + 1)}
    colours["paused"] = PAUSED_COLOUR
    peak = max((sum(c.get(k, 0) for k in keys) for c in history.counts), default=0)
    scale_max = _nice(peak)
    n = max(len(history.days), 1)
    bar_w = inner_w / n
    parts = [
        f'<svg class="chart stages" viewBox="0 0 {width} {height}" width="100%" role="img" '
        'aria-label="Servers per enforcement stage and day">'
    ]
    x = float(left)
    for key in keys:  # legend
        label = "paused" if key == "paused" else f"stage {key}"
        parts.append(
            f'<rect x="{x:.0f}" y="6" width="12" height="12" fill="{colours[key]}"/>'
            f'<text x="{x + 16:.0f}" y="16" font-size="11" fill="#333">{label}</text>'
        )
        x += 16 + 7 * len(label) + 14
    for i in range(5):
        value = scale_max * i / 4
        y = top + inner_h - inner_h * i / 4
        parts.append(
            f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e5e5"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" font-size="10" text-anchor="end" '
            f'fill="#555">{int(value)}</text>'
        )
    for index, (day, counts) in enumerate(zip(history.days, history.counts, strict=True)):
        x = left + index * bar_w
        y = top + inner_h
        summary = ", ".join(
            f"{'paused' if k == 'paused' else 'stage ' + k}: {counts[k]}"
            for k in keys
            if counts.get(k)
        )
        none = counts.get("none", 0)
        title = f"{day.isoformat()}: {summary or 'no server on a clock'}; on no clock: {none}"
        parts.append(f"<g><title>{title}</title>")
        for key in keys:
            value = counts.get(key, 0)
            if not value:
                continue
            h = inner_h * value / scale_max
            y -= h
            parts.append(
                f'<rect x="{x + 0.5:.1f}" y="{y:.1f}" width="{max(bar_w - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{colours[key]}"/>'
            )
        parts.append("</g>")
        if index % 15 == 0 or index == n - 1:
            last = index == n - 1  # the last label ends at the right edge
            anchor = ' text-anchor="end"' if last else ""
            parts.append(
                f'<text x="{x + bar_w if last else x:.1f}" y="{height - 10}" font-size="10" '
                f'fill="#555"{anchor}>{day.isoformat()[5:]}</text>'
            )
    parts.append("</svg>")
    return "".join(parts)
