"""The shadow report (docs/shadow.md): agreement per field, pass and class, latency, fallbacks,
drops, and the promotion gate. Output as a terminal table, JSON and a self-contained HTML page.

Definitions (also in the README):

- A *record* is one shadow run that finished (``compared`` or ``fell_back``); drops have no record
  and are counted apart.
- Agreement rates are over every record of a pass, fell-back ones included: a shadow run that
  produced nothing disagrees on every field.
- Schema validity is over the records whose shadow engine produced a document.
- Each field is gated on the records of the pass that owns it: tool, intent, arg and slot on the
  ``extract`` records (on the ``render`` records when the extract pass is not shadowed),
  widget_type on the ``render`` records. Each target holds over all records and in every class,
  every class of a shadowed pass needs ``min_turns_per_class`` records, and the shadow p95 of every
  pass must be within the latency target.
- Percentiles are nearest-rank (p50 is an observed value), like ``travel-slm eval``.
"""

from __future__ import annotations

import html
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from dataclasses import field as dc_field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from contracts.vocab import PASSES
from core.stats import percentile  # the one nearest-rank percentile, shared with eval and the benches
from engines.agreement import EXTRACT_FIELDS, FIELDS, RENDER_FIELDS

if TYPE_CHECKING:
    from engines.shadow.store_base import StoreReader

#: gate targets of docs/shadow.md §9 (value >= target)
GATE_TARGETS: dict[str, float] = {
    "tool_match": 0.98,
    "render_intent_match": 0.98,
    "arg_match": 0.97,
    "slot_match": 0.97,
    "widget_type_match": 0.98,
}
SCHEMA_TARGET = 1.0
P95_TARGET_MS = 800.0
#: latency histogram edges (ms) of the HTML chart: log-spaced, 0.5 ms .. 30 s
LATENCY_EDGES_MS: tuple[float, ...] = (0.5, 1, 2, 5, 10, 20, 50, 100, 200, 400, 800, 1600, 5000, 30000)


class FieldRate(BaseModel):
    match: int
    total: int
    rate: float | None


class LatencySummary(BaseModel):
    count: int
    p50: float | None
    p95: float | None


class LatencyHistogram(BaseModel):
    edges_ms: list[float]
    live: list[int]
    shadow: list[int]


class PassSummary(BaseModel):
    records: int
    compared: int
    fell_back: int
    dropped: int
    lost: int = Field(default=0, description="records lost to store faults (a full disk, an unusable file)")
    fallback_reasons: dict[str, int]
    schema_valid: FieldRate
    agreement: dict[str, FieldRate]
    live_latency_ms: LatencySummary
    shadow_latency_ms: LatencySummary
    latency_histogram: LatencyHistogram


class ClassSummary(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    pass_: str = Field(alias="pass")
    class_: str = Field(alias="class")
    records: int
    agreement: dict[str, FieldRate]


class GateCheck(BaseModel):
    name: str
    scope: str
    value: float | None
    target: float
    passed: bool
    detail: str


class Gate(BaseModel):
    passed: bool
    reasons: list[str]
    checks: list[GateCheck]
    targets: dict[str, float]
    min_turns_per_class: int
    p95_target_ms: float


class ShadowReport(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    kind: str = "shadow_report"
    generated_at: str
    store: str | None = None
    since: str | None = None
    records: int
    drops: int
    lost: int = 0
    passes: dict[str, PassSummary]
    classes: list[ClassSummary]
    gate: Gate

    def as_json(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


# -- small statistics ------------------------------------------------------------------------------


def _rate(match: int, total: int) -> FieldRate:
    return FieldRate(match=match, total=total, rate=None if total == 0 else match / total)


def _latency(values: list[float]) -> LatencySummary:
    return LatencySummary(count=len(values), p50=percentile(values, 50), p95=percentile(values, 95))


def _histogram(values: list[float]) -> list[int]:
    counts = [0] * (len(LATENCY_EDGES_MS) + 1)  # last bin: above the last edge
    for v in values:
        i = 0
        while i < len(LATENCY_EDGES_MS) and v > LATENCY_EDGES_MS[i]:
            i += 1
        counts[i] += 1
    return counts


def parse_since(value: str | None, now: float | None = None) -> float | None:
    """``24h``, ``7d``, ``30m``, ``90s`` (ago) or an ISO date/time -> epoch seconds."""
    if value is None or value == "":
        return None
    now = time.time() if now is None else now
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", value)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[m.group(2)]
        ts = now - float(m.group(1)) * unit
    else:
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"--since: expected e.g. 24h, 7d, 30m or an ISO date, got {value[:64]!r}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        ts = parsed.timestamp()
    try:  # the report prints it back as a date: refuse what no date can be (e.g. 99999999d ago)
        datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        raise ValueError(f"--since: {value[:64]!r} is out of the range of dates") from None
    return ts


# -- the report ------------------------------------------------------------------------------------


@dataclass
class _Group:
    """Counts over the records of one pass, or of one class of a pass."""

    records: int = 0
    fell_back: int = 0
    with_doc: int = 0
    schema_ok: int = 0
    agree: dict[str, list[int]] = dc_field(default_factory=dict)  # field -> [match, total]

    def agreement(self, fields: Iterable[str]) -> dict[str, FieldRate]:
        return {f: _rate(*self.agree[f]) for f in fields if self.agree.get(f, [0, 0])[1]}


@dataclass
class _PassFigures:
    group: _Group
    reasons: dict[str, int]
    live: LatencySummary
    shadow: LatencySummary
    live_hist: list[int]
    shadow_hist: list[int]


def _assemble(
    figures: dict[str, _PassFigures], per_class: dict[str, dict[str, _Group]], drops: dict[str, int],
    lost: dict[str, int], *, min_turns_per_class: int, p95_target_ms: float, store: str | None, since: float | None,
) -> ShadowReport:
    passes: dict[str, PassSummary] = {}
    for p in PASSES:
        fig = figures.get(p)
        if (fig is None or not fig.group.records) and not drops.get(p) and not lost.get(p):
            continue
        fig = fig or _PassFigures(_Group(), {}, _latency([]), _latency([]), _histogram([]), _histogram([]))
        g = fig.group
        passes[p] = PassSummary(
            records=g.records, compared=g.records - g.fell_back, fell_back=g.fell_back, dropped=int(drops.get(p, 0)),
            lost=int(lost.get(p, 0)), fallback_reasons=dict(sorted(fig.reasons.items())),
            schema_valid=_rate(g.schema_ok, g.with_doc),
            agreement=g.agreement(EXTRACT_FIELDS if p == "extract" else FIELDS),
            live_latency_ms=fig.live, shadow_latency_ms=fig.shadow,
            latency_histogram=LatencyHistogram(edges_ms=list(LATENCY_EDGES_MS), live=fig.live_hist,
                                               shadow=fig.shadow_hist),
        )
    classes: list[ClassSummary] = []
    for p in PASSES:
        for cls, g in sorted(per_class.get(p, {}).items()):
            classes.append(ClassSummary(pass_=p, class_=cls, records=g.records,
                                        agreement=g.agreement(EXTRACT_FIELDS if p == "extract" else FIELDS)))
    gate = evaluate_gate(passes, classes, min_turns_per_class=min_turns_per_class, p95_target_ms=p95_target_ms)
    return ShadowReport(
        generated_at=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        store=store,
        since=None if since is None else datetime.fromtimestamp(since, UTC).isoformat(timespec="seconds")
        .replace("+00:00", "Z"),
        records=sum(s.records for s in passes.values()),
        drops=sum(s.dropped for s in passes.values()),
        lost=sum(s.lost for s in passes.values()),
        passes=passes,
        classes=classes,
        gate=gate,
    )


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def build_report(
    records: Iterable[dict[str, Any]],
    drops: dict[str, int] | None = None,
    *,
    lost: dict[str, int] | None = None,
    min_turns_per_class: int = 500,
    p95_target_ms: float = P95_TARGET_MS,
    store: str | None = None,
    since: float | None = None,
) -> ShadowReport:
    """The report over records in memory (tests, small sets); :func:`report_from_store` computes the same
    report with SQL aggregates, in memory that does not grow with the number of records."""
    groups: dict[str, _Group] = defaultdict(_Group)
    per_class: dict[str, dict[str, _Group]] = defaultdict(lambda: defaultdict(_Group))
    reasons: dict[str, Counter[str]] = defaultdict(Counter)
    live: dict[str, list[float]] = defaultdict(list)
    shadow: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if not isinstance(r, dict) or r.get("pass") not in PASSES:
            continue
        p = r["pass"]
        targets = (groups[p], per_class[p][str(r.get("class") or "unknown|none")])
        agreement = r.get("agreement") if isinstance(r.get("agreement"), dict) else {}
        for g in targets:
            g.records += 1
            if r.get("fell_back"):
                g.fell_back += 1
            if r.get("shadow_extract" if p == "extract" else "shadow_render") is not None:
                g.with_doc += 1
                g.schema_ok += r.get("schema_valid") is True
            for f in FIELDS:
                v = agreement.get(f)
                if isinstance(v, bool):
                    pair = g.agree.setdefault(f, [0, 0])
                    pair[0] += v
                    pair[1] += 1
        if r.get("fell_back"):
            reasons[p][str(r.get("fallback_reason") or "unknown")] += 1
        for series, key in ((live, "live_latency_ms"), (shadow, "shadow_latency_ms")):
            v = _number(r.get(key))
            if v is not None:
                series[p].append(v)
    figures = {p: _PassFigures(groups[p], dict(reasons[p]), _latency(live[p]), _latency(shadow[p]),
                               _histogram(live[p]), _histogram(shadow[p])) for p in groups}
    return _assemble(figures, per_class, drops or {}, lost or {}, min_turns_per_class=min_turns_per_class,
                     p95_target_ms=p95_target_ms, store=store, since=since)


def field_owner(field: str, passes: dict[str, PassSummary]) -> str | None:
    """The pass whose records gate ``field`` (None: no shadowed pass carries it)."""
    if field in RENDER_FIELDS:
        return "render" if passes.get("render") and passes["render"].records else None
    for p in PASSES:
        if passes.get(p) and passes[p].records:
            return p
    return None


def evaluate_gate(
    passes: dict[str, PassSummary],
    classes: list[ClassSummary],
    *,
    min_turns_per_class: int = 500,
    p95_target_ms: float = P95_TARGET_MS,
) -> Gate:
    checks: list[GateCheck] = []

    def check(name: str, scope: str, value: float | None, target: float, passed: bool, detail: str) -> None:
        checks.append(GateCheck(name=name, scope=scope, value=value, target=target, passed=passed, detail=detail))

    if not any(s.records for s in passes.values()):
        check("records", "all", 0.0, 1.0, False, "no shadow records")
    for p, summary in passes.items():
        if not summary.records:
            check("records", p, 0.0, 1.0, False, f"{p}: no shadow records ({summary.dropped} dropped)")
            continue
        sv = summary.schema_valid
        check("schema_validity", p, sv.rate, SCHEMA_TARGET, sv.rate is not None and sv.rate >= SCHEMA_TARGET,
              f"{p}: schema validity {_pct(sv.rate)} ({sv.match}/{sv.total} shadow outputs), target 100%")
        p95 = summary.shadow_latency_ms.p95
        check("shadow_p95_ms", p, p95, p95_target_ms, p95 is not None and p95 <= p95_target_ms,
              f"{p}: shadow p95 {_ms(p95)}, target <= {p95_target_ms:.0f} ms")
        for c in classes:
            if c.pass_ == p:
                check("turns_per_class", f"{p}:{c.class_}", float(c.records), float(min_turns_per_class),
                      c.records >= min_turns_per_class,
                      f"{p}: class {c.class_} has {c.records} turns, needs >= {min_turns_per_class}")
    for field, target in GATE_TARGETS.items():
        owner = field_owner(field, passes)
        if owner is None:
            continue
        overall = passes[owner].agreement.get(field)
        if overall is not None:
            check(field, owner, overall.rate, target, overall.rate is not None and overall.rate >= target,
                  f"{owner}: {field} {_pct(overall.rate)} ({overall.match}/{overall.total}), target >= {target:.2f}")
        for c in classes:
            fr = c.agreement.get(field) if c.pass_ == owner else None
            if fr is None:
                continue
            check(field, f"{owner}:{c.class_}", fr.rate, target, fr.rate is not None and fr.rate >= target,
                  f"{owner}: {field} in class {c.class_} {_pct(fr.rate)} ({fr.match}/{fr.total}), "
                  f"target >= {target:.2f}")
    reasons = [c.detail for c in checks if not c.passed]
    return Gate(passed=not reasons, reasons=reasons, checks=checks, targets=dict(GATE_TARGETS),
                min_turns_per_class=min_turns_per_class, p95_target_ms=p95_target_ms)


def _sql_figures(reader: StoreReader, since: float | None
                 ) -> tuple[dict[str, _PassFigures], dict[str, dict[str, _Group]]]:
    """The report's counts and percentiles with SQL aggregates: no record is loaded into Python.

    The SQL is the subset SQLite and PostgreSQL run the same way (CASE instead of boolean arithmetic, no
    output alias in WHERE), so both backends give the same report; nearest-rank percentiles are one
    ``ORDER BY ... LIMIT 1 OFFSET rank - 1`` each (the database sorts, in its own bounded memory)."""
    from engines.shadow.store import AGREE_COLUMNS

    col = reader.columns
    where = "pass IN ('extract', 'render')" + ("" if since is None else " AND ts >= ?")
    args: tuple[Any, ...] = () if since is None else (since,)
    agree_sql = ", ".join(f"SUM({col[c]}), COUNT({col[c]})" for c in AGREE_COLUMNS.values())
    per_class: dict[str, dict[str, _Group]] = defaultdict(dict)
    groups: dict[str, _Group] = {}
    sql = (f"SELECT pass, {col['class']} AS cls, COUNT(*), SUM({col['fell_back']}), SUM({col['has_doc']}), "
           f"SUM(CASE WHEN {col['has_doc']} = 1 AND {col['schema_ok']} = 1 THEN 1 ELSE 0 END), {agree_sql} "
           f"FROM shadow_records WHERE {where} GROUP BY pass, cls")
    for row in reader.query(sql, args):
        p, cls, n, fb, docs, ok = row[0], str(row[1]), int(row[2]), int(row[3] or 0), int(row[4] or 0), int(row[5] or 0)
        g = _Group(records=n, fell_back=fb, with_doc=docs, schema_ok=ok)
        for i, f in enumerate(AGREE_COLUMNS):
            match, total = row[6 + 2 * i], row[7 + 2 * i]
            if total:
                g.agree[f] = [int(match or 0), int(total)]
        per_class[p][cls] = g
        total_g = groups.setdefault(p, _Group())
        total_g.records += g.records
        total_g.fell_back += g.fell_back
        total_g.with_doc += g.with_doc
        total_g.schema_ok += g.schema_ok
        for f, (match, total) in g.agree.items():
            pair = total_g.agree.setdefault(f, [0, 0])
            pair[0] += match
            pair[1] += total
    reasons: dict[str, dict[str, int]] = defaultdict(dict)
    for p, reason, n in reader.query(f"SELECT pass, {col['reason']} AS r, COUNT(*) FROM shadow_records WHERE "
                                     f"{where} AND {col['fell_back']} = 1 GROUP BY pass, r", args):
        reasons[p][str(reason)] = int(n)

    def series(p: str, column: str) -> tuple[LatencySummary, list[int]]:
        expr = col[column]
        cum_sql = ", ".join(f"SUM(CASE WHEN {expr} <= ? THEN 1 ELSE 0 END)" for _ in LATENCY_EDGES_MS)
        (row,) = reader.query(f"SELECT COUNT({expr}), {cum_sql} FROM shadow_records WHERE {where} AND pass = ?",
                              (*LATENCY_EDGES_MS, *args, p))
        n = int(row[0] or 0)
        cumulative = [int(v or 0) for v in row[1:]]
        hist = [b - a for a, b in zip([0, *cumulative], cumulative, strict=False)] + [n - cumulative[-1]]

        def nearest_rank(q: float) -> float | None:  # the same rule as core.stats.percentile
            if n == 0:
                return None
            rank = max(1, math.ceil(q / 100.0 * n))
            got = reader.query(f"SELECT {expr} FROM shadow_records WHERE {where} AND pass = ? AND {expr} IS NOT "
                               f"NULL ORDER BY {expr} LIMIT 1 OFFSET ?", (*args, p, rank - 1))
            return float(got[0][0]) if got else None

        return LatencySummary(count=n, p50=nearest_rank(50), p95=nearest_rank(95)), hist

    figures: dict[str, _PassFigures] = {}
    for p, g in groups.items():
        live, live_hist = series(p, "live_ms")
        shadow, shadow_hist = series(p, "shadow_ms")
        figures[p] = _PassFigures(g, reasons.get(p, {}), live, shadow, live_hist, shadow_hist)
    return figures, per_class


def report_from_store(url: str, *, since: float | None = None, min_turns_per_class: int = 500,
                      p95_target_ms: float = P95_TARGET_MS, extra_lost: dict[str, int] | None = None) -> ShadowReport:
    """The report of a store, SQLite or PostgreSQL, computed in SQL (bounded memory whatever the number of
    records). With PostgreSQL every pod writes to the same database, so any pod's report is the fleet's.

    ``extra_lost``: losses the running server counted that are not in the store yet (it could not take them).
    Raises :class:`engines.shadow.store.StoreReadError` (a redacted message) when the store cannot be read.
    """
    from engines.shadow.store import parse_store_url, reading

    figures: dict[str, _PassFigures] = {}
    per_class: dict[str, dict[str, _Group]] = {}
    drops: dict[str, int] = {}
    lost: dict[str, int] = {}
    with reading(url) as reader:
        if reader is not None:
            figures, per_class = _sql_figures(reader, since)
            drops = reader.sum_by_pass("shadow_drops", since)
            lost = reader.sum_by_pass("shadow_losses", since)
    for p, n in (extra_lost or {}).items():
        lost[p] = lost.get(p, 0) + n
    return _assemble(figures, per_class, drops, lost, min_turns_per_class=min_turns_per_class,
                     p95_target_ms=p95_target_ms, store=parse_store_url(url).display, since=since)


# -- formatting ------------------------------------------------------------------------------------


def _pct(rate: float | None) -> str:
    return "n/a" if rate is None else f"{rate * 100:.1f}%"


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} ms"


def fmt_rate(fr: FieldRate | None) -> str:
    """``match/total (pct)``: the one rendering of a rate used by the table, the HTML and the tests."""
    return "-" if fr is None else f"{fr.match}/{fr.total} ({_pct(fr.rate)})"


def format_table(report: ShadowReport) -> str:
    lines: list[str] = []
    head = f"shadow report: {report.records} records, {report.drops} dropped, {report.lost} lost"
    if report.store:
        head += f", store {report.store}"
    if report.since:
        head += f", since {report.since}"
    lines += [head, ""]
    for p, s in report.passes.items():
        lines.append(f"[{p}] records {s.records}  compared {s.compared}  fell back {s.fell_back}  "
                     f"dropped {s.dropped}  lost {s.lost}  schema valid {fmt_rate(s.schema_valid)}")
        if s.fallback_reasons:
            lines.append("  fallbacks: " + ", ".join(f"{k} {v}" for k, v in s.fallback_reasons.items()))
        lines.append(f"  latency live   p50 {_ms(s.live_latency_ms.p50):>10}  p95 {_ms(s.live_latency_ms.p95):>10}")
        lines.append(f"  latency shadow p50 {_ms(s.shadow_latency_ms.p50):>10}  "
                     f"p95 {_ms(s.shadow_latency_ms.p95):>10}")
        for field, fr in s.agreement.items():
            lines.append(f"  {field:<22} {fmt_rate(fr)}")
        lines.append("")
    if report.classes:
        fields = [f for f in FIELDS if any(f in c.agreement for c in report.classes)]
        short = {f: f.removesuffix("_match") for f in fields}
        width = max(len(c.class_) for c in report.classes)
        lines.append("per class (agreement rate, records)")
        lines.append(f"  {'pass':<8}{'class':<{width + 2}}{'n':>7}" + "".join(f"{short[f]:>15}" for f in fields))
        for c in report.classes:
            cells = "".join(f"{_pct(c.agreement[f].rate) if f in c.agreement else '-':>15}" for f in fields)
            lines.append(f"  {c.pass_:<8}{c.class_:<{width + 2}}{c.records:>7}{cells}")
        lines.append("")
    lines.append(f"gate: {'PASS' if report.gate.passed else 'FAIL'}")
    for reason in report.gate.reasons[:50]:
        lines.append(f"  - {reason}")
    if len(report.gate.reasons) > 50:
        lines.append(f"  ... and {len(report.gate.reasons) - 50} more")
    return "\n".join(lines)


_COLORS = {"tool_match": "#4e79a7", "arg_match": "#f28e2b", "slot_match": "#e15759",
           "render_intent_match": "#76b7b2", "widget_type_match": "#59a14f", "bot_message_match": "#b07aa1"}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _class_chart(report: ShadowReport, pass_: str) -> str:
    """Grouped horizontal bars: one row per class, one bar per agreement field."""
    rows = [c for c in report.classes if c.pass_ == pass_]
    if not rows:
        return ""
    fields = [f for f in FIELDS if any(f in c.agreement for c in rows)]
    label_w, bar_w, bar_h = 330, 420, 7
    row_h = bar_h * len(fields) + 8
    height = row_h * len(rows) + 40
    parts = [f'<svg class="chart" role="img" aria-label="agreement per class, {pass_}" width="{label_w + bar_w + 70}" '
             f'height="{height}" viewBox="0 0 {label_w + bar_w + 70} {height}" xmlns="http://www.w3.org/2000/svg">']
    for pos in (0.0, 0.5, 0.9, 1.0):
        x = label_w + pos * bar_w
        parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height - 30}" stroke="#ccc"/>'
                     f'<text x="{x:.1f}" y="{height - 16}" font-size="10" text-anchor="middle">{pos * 100:.0f}%</text>')
    for i, c in enumerate(rows):
        y0 = i * row_h + 4
        parts.append(f'<text x="{label_w - 6}" y="{y0 + row_h / 2:.1f}" font-size="11" text-anchor="end" '
                     f'dominant-baseline="middle">{_e(c.class_)} (n={c.records})</text>')
        for j, f in enumerate(fields):
            fr = c.agreement.get(f)
            if fr is None or fr.rate is None:
                continue
            w = fr.rate * bar_w
            parts.append(f'<rect x="{label_w}" y="{y0 + j * bar_h}" width="{w:.1f}" height="{bar_h - 1}" '
                         f'fill="{_COLORS[f]}"><title>{_e(c.class_)} {f}: {_e(fmt_rate(fr))}</title></rect>')
    parts.append("</svg>")
    legend = "".join(f'<span class="key"><i style="background:{_COLORS[f]}"></i>{f}</span>' for f in fields)
    return f'<div class="legend">{legend}</div>' + "".join(parts)


def _latency_chart(summary: PassSummary, pass_: str) -> str:
    h = summary.latency_histogram
    bins = len(h.live)
    labels = [f"<={e:g}" for e in h.edges_ms] + [f">{h.edges_ms[-1]:g}"]
    peak = max([*h.live, *h.shadow, 1])
    col_w, plot_h, left, top = 46, 160, 40, 10
    width, height = left + col_w * bins + 10, top + plot_h + 50
    parts = [f'<svg class="chart" role="img" aria-label="latency distribution, {pass_}" width="{width}" '
             f'height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">',
             f'<line x1="{left}" y1="{top + plot_h}" x2="{width - 10}" y2="{top + plot_h}" stroke="#888"/>',
             f'<text x="4" y="{top + 8}" font-size="10">{peak}</text>']
    for i in range(bins):
        x = left + i * col_w
        for k, (series, color) in enumerate(((h.live, "#4e79a7"), (h.shadow, "#f28e2b"))):
            v = series[i]
            bh = plot_h * v / peak
            parts.append(f'<rect x="{x + 4 + k * 19}" y="{top + plot_h - bh:.1f}" width="18" height="{bh:.1f}" '
                         f'fill="{color}"><title>{"live" if k == 0 else "shadow"} {labels[i]} ms: {v}</title></rect>')
        parts.append(f'<text x="{x + col_w / 2:.1f}" y="{top + plot_h + 14}" font-size="9" '
                     f'text-anchor="middle">{_e(labels[i])}</text>')
    parts.append(f'<text x="{left}" y="{height - 8}" font-size="10">latency (ms): '
                 f'<tspan fill="#4e79a7">live</tspan> / <tspan fill="#f28e2b">shadow</tspan></text></svg>')
    return "".join(parts)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}table{border-collapse:collapse;margin:8px 0}
td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;text-align:right}th{background:#f4f4f4}
td.l,th.l{text-align:left}.pass{color:#1a7f37;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.legend{font-size:12px;margin:4px 0}.key{margin-right:12px}.key i{display:inline-block;width:10px;height:10px;
margin-right:4px}ul.reasons li{font-size:13px}.chart{display:block;margin:8px 0}
"""


def format_html(report: ShadowReport) -> str:
    """A self-contained page (inline CSS and SVG, no script, no external asset)."""
    r = report
    out: list[str] = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
                      "<title>travel-slm shadow report</title>", f"<style>{_CSS}</style></head><body>",
                      "<h1>travel-slm shadow report</h1>",
                      f'<p>Generated {_e(r.generated_at)}; store {_e(r.store or "-")}; since {_e(r.since or "the start")}. '
                      f'Records <b data-key="records">{r.records}</b>, dropped <b data-key="drops">{r.drops}</b>, '
                      f'lost to store faults <b data-key="lost">{r.lost}</b>.</p>']
    verdict = "PASS" if r.gate.passed else "FAIL"
    out.append(f'<h2>Gate: <span data-key="gate.passed" class="{verdict.lower()}">{verdict}</span></h2>')
    if r.gate.reasons:
        shown = r.gate.reasons[:100]
        out.append('<ul class="reasons">' + "".join(f"<li>{_e(x)}</li>" for x in shown) + "</ul>")
        if len(r.gate.reasons) > len(shown):
            out.append(f"<p>... and {len(r.gate.reasons) - len(shown)} more failing checks.</p>")
    out.append("<h2>Per pass</h2><table><tr><th class=l>pass</th><th>records</th><th>compared</th><th>fell back</th>"
               "<th>dropped</th><th>schema valid</th><th>live p50</th><th>live p95</th><th>shadow p50</th>"
               "<th>shadow p95</th><th class=l>fallbacks</th></tr>")
    for p, s in r.passes.items():
        fb = ", ".join(f"{k} {v}" for k, v in s.fallback_reasons.items()) or "-"
        out.append(
            f'<tr><td class=l>{p}</td><td data-key="passes.{p}.records">{s.records}</td>'
            f'<td data-key="passes.{p}.compared">{s.compared}</td><td data-key="passes.{p}.fell_back">{s.fell_back}</td>'
            f'<td data-key="passes.{p}.dropped">{s.dropped}</td>'
            f'<td data-key="passes.{p}.schema_valid">{_e(fmt_rate(s.schema_valid))}</td>'
            f'<td data-key="passes.{p}.live_latency_ms.p50">{_ms(s.live_latency_ms.p50)}</td>'
            f'<td data-key="passes.{p}.live_latency_ms.p95">{_ms(s.live_latency_ms.p95)}</td>'
            f'<td data-key="passes.{p}.shadow_latency_ms.p50">{_ms(s.shadow_latency_ms.p50)}</td>'
            f'<td data-key="passes.{p}.shadow_latency_ms.p95">{_ms(s.shadow_latency_ms.p95)}</td>'
            f"<td class=l>{_e(fb)}</td></tr>")
    out.append("</table><h2>Agreement per field</h2><table><tr><th class=l>field</th>"
               + "".join(f"<th>{p}</th>" for p in r.passes) + "</tr>")
    for f in FIELDS:
        if not any(f in s.agreement for s in r.passes.values()):
            continue
        cells = "".join(f'<td data-key="passes.{p}.agreement.{f}">{_e(fmt_rate(s.agreement.get(f)))}</td>'
                        for p, s in r.passes.items())
        out.append(f"<tr><td class=l>{f}</td>{cells}</tr>")
    out.append("</table>")
    for p, s in r.passes.items():
        out.append(f"<h2>Latency distribution: {p}</h2>" + _latency_chart(s, p))
    for p in r.passes:
        rows = [c for c in r.classes if c.pass_ == p]
        if not rows:
            continue
        fields = [f for f in FIELDS if any(f in c.agreement for c in rows)]
        out.append(f"<h2>Agreement per class: {p}</h2>" + _class_chart(r, p))
        out.append("<table><tr><th class=l>class</th><th>records</th>" + "".join(f"<th>{f}</th>" for f in fields)
                   + "</tr>")
        for c in rows:
            cells = "".join(f'<td data-key="classes.{p}.{_e(c.class_)}.{f}">{_e(fmt_rate(c.agreement.get(f)))}</td>'
                            for f in fields)
            out.append(f'<tr><td class=l>{_e(c.class_)}</td><td data-key="classes.{p}.{_e(c.class_)}.records">'
                       f"{c.records}</td>{cells}</tr>")
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)
