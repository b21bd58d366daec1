"""A cost projection (costplan.py's projection.json) as plain text: for the terminal, a log and the report.

Reads the projection's dict; writes nothing.
"""

from __future__ import annotations

from typing import Any


def num(x: float | None) -> str:
    if x is None:
        return "-"
    if abs(x) >= 1e9:
        return f"{x / 1e9:.2f}G"
    if abs(x) >= 1e6:
        return f"{x / 1e6:.2f}M"
    if abs(x) >= 1e4:
        return f"{x / 1e3:.1f}k"
    return f"{x:.0f}" if abs(x - round(x)) < 1e-9 or abs(x) >= 100 else f"{x:.1f}"


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def money(x: float | None) -> str:
    if x is None:
        return "-"
    return f"${x:,.2f}" if x >= 1 else f"${x:.4f}" if x >= 0.0001 else f"${x:.2e}"


def table(p: dict[str, Any]) -> str:
    """The projection as plain text: one line per stage (pilot yield, projected rows, requests, tokens, time),
    then the totals, time and cost."""
    reused = "reused" if p.get("pilot_reused") else "run now"
    lines = [f"distill plan: {num(p['target_rows'])} rows, projected from a pilot of {p['pilot_rows']} rows "
             f"({reused}: {p['pilot_dir']})",
             f"teacher: {p['backend']} {p['model'] or '(default model)'}"]
    if p.get("pilot_ended"):
        lines.append(f"note: {p['pilot_ended']}; the stages after it are projected to get no rows")
    lines.append("")
    head = ("stage", "yield", "rows in", "kept", "requests", "prompt tok", "compl tok", "time")
    rows = [head]
    for s in p["stages"]:
        rows.append((s["stage"], "-" if s["yield"] is None else f"{100 * s['yield']:.1f}%", num(s["rows_in"]),
                     num(s["rows_out"]), num(s["requests"]), num(s["prompt_tokens"]), num(s["completion_tokens"]),
                     duration(s["seconds"])))
    rows.append(("total", "-" if not p["target_rows"] else f"{100 * p['kept_rows'] / p['target_rows']:.1f}%",
                 num(p["target_rows"]), num(p["kept_rows"]), num(p["requests"]), num(p["prompt_tokens"]),
                 num(p["completion_tokens"]), duration(p["wall_seconds"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for i, r in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("  ".join("-" * w for w in widths))
        lines.append("  ".join(c.ljust(w) if j == 0 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))))
    lines.append("")
    rpk = p["requests_per_kept_row"]
    lines.append(f"teacher tokens: {num(p['tokens'])} ({num(p['prompt_tokens'])} prompt + "
                 f"{num(p['completion_tokens'])} completion); {rpk:.2f} requests per kept row" if rpk is not None
                 else f"teacher tokens: {num(p['tokens'])}; no row kept in the pilot")
    floor = f"; rpm/tpm allow no less than {duration(p['rate_limit_floor_seconds'])}" \
        if p["rate_limit_floor_seconds"] else ""
    lines.append(f"wall time: about {duration(p['wall_seconds'])} online, at the pilot's throughput with "
                 f"teacher.concurrency = {p['concurrency']} requests in flight{floor}; "
                 "batch: each submission returns within the provider's window (24 h)")
    nv = p.get("novelty")  # marginal.projection: the pilot's novelty trend
    if nv:
        lines.append(f"novelty: the pilot's last rows added {nv['pilot_novel_per_1k']:g} novel rows per 1k generated; "
                     "its trend expects " + ", ".join(f"{v:g} at {'the target' if k == 'target' else k}"
                                                      for k, v in nv["novel_per_1k_at"].items()))
    c = p["cost"]
    if c is None:
        lines.append("cost: set [teacher] price_prompt_per_mtok and price_completion_per_mtok to price it")
    else:
        pr = c["prices"]
        lines.append(f"cost at {money(pr['prompt_per_mtok'])} / {money(pr['completion_per_mtok'])} per million "
                     f"prompt / completion tokens:")
        lines.append(f"  online  {money(c['online']):>12}   {money(c['online_per_kept_row'])} per kept row")
        lines.append(f"  batch   {money(c['batch']):>12}   {money(c['batch_per_kept_row'])} per kept row "
                     f"({100 * pr['batch_discount']:.0f}% off)")
    return "\n".join(lines)
