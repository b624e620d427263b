"""Figures, PASS/FAIL and Markdown for benchmarks/chat_streams (Python 3.11 stdlib only).

Every figure is taken per run (one target, one stream count, one round); a table cell is the
median over rounds with the per-round range in brackets. Ratios to nginx are taken within a
round (same stream count) and then the median over rounds is used, so a slow round for
everyone does not count against one target.
"""

from __future__ import annotations

import statistics

REFERENCE = "nginx"
# nginx with one worker per CPU (`--nginx-auto`): as many as tracegate's default event loops. Its
# ratios are reported beside the checks', which stay against REFERENCE.
SAME_THREADS = "nginx-auto"
NOISY_BG_PCT = 25  # a run during which other processes used more than this (% of one core)
TRACED_KINDS = ("tracegate", "tracegate-mlflow")
LIMITS = {"p50_ratio": 1.5, "p99_ratio": 2.0, "cpu_ratio": 1.5, "kib_per_stream": 24.0}


def _run_figures(r: dict) -> dict:
    """The per-run numbers the tables use (None where not measured)."""
    c = r["client"]
    n = r["streams"]
    ok = "error" not in c
    f = {
        "p50_ms": c["delay_us"]["p50"] / 1000 if ok and c["delay_us"]["count"] else None,
        "p99_ms": c["delay_us"]["p99"] / 1000 if ok and c["delay_us"]["count"] else None,
        "p999_ms": c["delay_us"]["p999"] / 1000 if ok and c["delay_us"]["count"] else None,
        "complete": c.get("complete", 0) if ok else 0,
        "traced": r.get("traced"),
        "delivered": r.get("traced_delivered", r.get("traced")),
        "cpu_s": r.get("cpu_s"),
        "cpu_us": r["cpu_s"] / n * 1e6 if "cpu_s" in r else None,
        "cpu_us_streams": r["cpu_s_streams"] / n * 1e6 if "cpu_s_streams" in r else None,
        "peak_mib": r["rss_peak_kib"] / 1024 if "rss_peak_kib" in r else None,
        "kib_per_stream": ((r["rss_peak_kib"] - r["rss_base_kib"]) / n
                           if "rss_peak_kib" in r else None),
        "client_cpu_s": c.get("cpu_s"),
        "lag_p99_ms": c["loop_lag_us"]["p99"] / 1000 if ok and c["loop_lag_us"]["count"] else None,
        "lag_max_ms": c["loop_lag_us"]["max"] / 1000 if ok and c["loop_lag_us"]["count"] else None,
        "origin_cpu_s": r.get("origin_cpu_s"),
        "origin_late_p99_ms": ((r["origin"]["timer_late_us"]["p99"] or 0) / 1000
                               if r.get("origin") else None),
        "first_p99_ms": (c["first_event_delay_us"]["p99"] / 1000
                         if ok and c["first_event_delay_us"]["count"] else None),
        "head_p99_ms": (c["response_head_us"]["p99"] / 1000
                        if ok and c["response_head_us"]["count"] else None),
        "bg_pct": r.get("bg_cpu_pct"),
        "trace_wait_s": r.get("trace_wait_s"),
        "dropped": (r.get("metrics") or {}).get("traces_dropped_total", 0),
        "mlflow_cpu_s": r.get("mlflow_cpu_s"),
    }
    return f


def _stat(values: list) -> dict | None:
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def summarize(results: dict) -> dict:
    """{streams: {target: {figure: stat}}} plus same-round ratios and the checks."""
    runs = results.get("runs", [])
    by: dict = {}
    for r in runs:
        by.setdefault(r["streams"], {}).setdefault(r["target"], {})[r["round"]] = _run_figures(r)
    out: dict = {"per_streams": {}, "checks": []}
    for n, targets in sorted(by.items()):
        table: dict = {}
        ref = targets.get(REFERENCE, {})
        same_threads = targets.get(SAME_THREADS, {})
        for name, rounds in targets.items():
            figs = list(rounds.values())
            row = {k: _stat([f[k] for f in figs]) for k in figs[0]}
            row["rounds"] = len(figs)
            row["complete_all"] = all(f["complete"] == n for f in figs)
            row["complete_min"] = min(f["complete"] for f in figs)
            traced = [f["traced"] for f in figs if f["traced"] is not None]
            delivered = [f["delivered"] for f in figs if f["delivered"] is not None]
            row["traced_min"] = min(traced) if traced else None
            row["delivered_min"] = min(delivered) if delivered else None
            row["traced_all"] = bool(traced) and all(x >= n for x in traced + delivered)
            for key, fig in (("p50_ratio", "p50_ms"), ("p99_ratio", "p99_ms"),
                             ("cpu_ratio", "cpu_us"), ("cpu_streams_ratio", "cpu_us_streams")):
                row[key] = _stat([_ratio(f[fig], ref.get(rnd, {}).get(fig))
                                  for rnd, f in rounds.items()])
                row[key + "_same_threads"] = _stat(
                    [_ratio(f[fig], same_threads.get(rnd, {}).get(fig)) for rnd, f in rounds.items()])
            table[name] = row
        out["per_streams"][n] = table
        out["checks"] += _checks(n, table)
    return out


def _ratio(a, b):
    return a / b if a is not None and b else None


def _checks(n: int, table: dict) -> list[dict]:
    """The targets of the task, for tracegate with its defaults (and exporting to MLflow) at this
    stream count; `--tracegate-variant` rows are not checked."""
    checks = []
    for name, row in table.items():
        if name not in TRACED_KINDS:
            continue

        def add(what: str, ok: bool | None, value: str) -> None:
            checks.append({"streams": n, "target": name, "check": what,
                           "pass": ok, "value": value})

        for key, label in (("p50_ratio", "event delay p50"), ("p99_ratio", "event delay p99"),
                           ("cpu_ratio", "CPU per stream")):
            s = row[key]
            value = _x(s) if s else "no nginx figure"
            if key == "cpu_ratio" and name == "tracegate-mlflow":
                value += (f"; {_x(row['cpu_streams_ratio'])} until the client's exit, the rest "
                          "during the export drain")
            add(f"{label} ≤ {LIMITS[key]:g}× nginx", s and s["median"] <= LIMITS[key], value)
        s = row["kib_per_stream"]
        add(f"RSS ≤ {LIMITS['kib_per_stream']:g} KiB per open stream",
            s and s["median"] <= LIMITS["kib_per_stream"], _num(s, 1, " KiB"))
        add("every stream complete", row["complete_all"],
            f"{row['complete_min']}/{n} in the worst of {row['rounds']} rounds")
        if name == "tracegate":
            add("every exchange traced (trace file)", row["traced_all"],
                f"{row['traced_min']}/{n} in the worst round")
        else:
            wait = row["trace_wait_s"]
            add("every exchange traced (MLflow, after the drain)", row["traced_all"],
                f"{row['traced_min']}/{n} stored, {row['delivered_min']}/{n} with trace info in "
                f"the worst round; drain {_num(wait, 1, ' s')} after the last stream; dropped "
                f"{_num(row['dropped'], 0, '')}")
    return checks


# ---------- formatting ----------

def _fmt(x, digits: int) -> str:
    if x is None:
        return "–"
    return f"{x:,.{digits}f}"


def _num(s: dict | None, digits: int, unit: str = "") -> str:
    """median (min–max) of a stat, or the single value for one round."""
    if not s:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{_fmt(s['median'], digits)}{unit}"
    return (f"{_fmt(s['median'], digits)}{unit} ({_fmt(s['min'], digits)}–"
            f"{_fmt(s['max'], digits)})")


def _x(s: dict | None) -> str:
    if not s:
        return "–"
    if s["n"] == 1 or s["min"] == s["max"]:
        return f"{s['median']:.2f}×"
    return f"{s['median']:.2f}× ({s['min']:.2f}–{s['max']:.2f})"


def _count(row: dict, key_min: str, n: int) -> str:
    v = row[key_min]
    if v is None:
        return "–"
    return f"{v}/{n}" + ("" if v >= n else " !!")


def markdown(results: dict, summary: dict) -> str:
    m = results["meta"]
    lines = [
        f"## Chat streams: {m['events']} SSE events {m['gap_ms']:g} ms apart per stream",
        "",
        f"{m['started']}; {m['machine']}; nginx {m['nginx_version']}; Node.js "
        f"{m['node_version']} (origin and client); tracegate {m['proxy_bin']}, git {m['git']}"
        + (f"; MLflow {m['mlflow_version']} (SQLite, 1 worker)" if m.get("mlflow_version") else "")
        + f". Other load on the machine just before the start: {m['busy_before_pct']:.0f}% of "
        "one core.",
        f"{m['rounds']} round(s), targets in an order rotated each round; connections opened at "
        f"{m['ramp']} (" + ", ".join(f"{int(k):,} in {v:g} s" for k, v in m["ramp_s"].items())
        + f"); warm-up {m['warmup_streams']} streams per target"
        + ("" if m.get("reuse_proxies") else
           f"; every measured run on a new proxy process, warmed by {m['run_warmup']} short streams")
        + ". Cells: median over rounds (range). Ratios: to nginx in the same round, median over "
        "rounds.",
        "",
    ]
    variants = m.get("variants") or {}
    if variants:
        lines += [f"- {name}: tracegate's defaults and `{' '.join(flags)}` (not checked)"
                  for name, flags in variants.items()] + [""]
    if results.get("aborted"):
        lines += [f"**Aborted:** {results['aborted'].splitlines()[0]} (figures are partial)", ""]
    noisy = noisy_runs(results)
    if noisy:
        lines += [f"**Other load:** {len(noisy)} of {len(results.get('runs', []))} runs had other "
                  f"processes on the machine using more than {NOISY_BG_PCT}% of one core "
                  "(bg column): " + ", ".join(noisy) + ". Their delays (and the ratios of their "
                  "rounds) are not the proxy's alone.", ""]
    for n, table in summary["per_streams"].items():
        lines += _main_table(n, table, m)
        same_threads = same_threads_lines(n, table)
        lines += [f"- {line}" for line in same_threads] + ([""] if same_threads else [])
        lines += _loadgen_table(n, table)
    lines += ["### Checks", "", "| streams | target | check | result | value |", "|---|---|---|---|---|"]
    for c in summary["checks"]:
        lines.append(f"| {c['streams']:,} | {c['target']} | {c['check']} | "
                     f"{'PASS' if c['pass'] else 'FAIL'} | {c['value']} |")
    return "\n".join(lines)


def _main_table(n: int, table: dict, meta: dict) -> list[str]:
    out = [f"### {n:,} concurrent streams", "",
           "| target | event delay p50 ms | p99 ms | p99.9 ms | p50 × nginx | p99 × nginx | "
           "CPU s | CPU µs/stream | CPU × nginx | peak RSS MiB | KiB/stream | complete | traced |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name in meta["targets"]:
        row = table.get(name)
        if not row:
            continue
        ref = name == REFERENCE or name == "direct"
        traced = _count(row, "traced_min", n)
        if name == "tracegate-mlflow" and row["trace_wait_s"]:
            traced += f" (drain {_num(row['trace_wait_s'], 1, ' s')})"
        out.append(" | ".join([
            f"| {name}", _num(row["p50_ms"], 2), _num(row["p99_ms"], 2), _num(row["p999_ms"], 2),
            "–" if ref else _x(row["p50_ratio"]), "–" if ref else _x(row["p99_ratio"]),
            _num(row["cpu_s"], 2), _num(row["cpu_us"], 0),
            "–" if ref else _x(row["cpu_ratio"]),
            _num(row["peak_mib"], 1), _num(row["kib_per_stream"], 1),
            _count(row, "complete_min", n), traced]) + " |")
    return out + [""]


def same_threads_lines(n: int, table: dict) -> list[str]:
    """Each tracegate target against nginx-auto (same round), when it was measured."""
    if SAME_THREADS not in table:
        return []
    return [f"{n:,} streams, {name} ÷ {SAME_THREADS} (one nginx worker per CPU): event delay p50 "
            f"{_x(row['p50_ratio_same_threads'])}, p99 {_x(row['p99_ratio_same_threads'])}, CPU "
            f"per stream {_x(row['cpu_ratio_same_threads'])}"
            for name, row in table.items() if name.startswith("tracegate")]


def variant_lines(n: int, table: dict) -> list[str]:
    """Each `--tracegate-variant` row against nginx (same round): shown, not checked."""
    return [f"{n:,} streams, {name} ÷ {REFERENCE} (not checked): event delay p50 "
            f"{_x(row['p50_ratio'])}, p99 {_x(row['p99_ratio'])}, CPU per stream "
            f"{_x(row['cpu_ratio'])}"
            for name, row in table.items()
            if name.startswith("tracegate-") and name not in TRACED_KINDS]


def _loadgen_table(n: int, table: dict) -> list[str]:
    """Figures of the load generator itself, to tell its artefacts from the proxy's."""
    mlflow = any(row["mlflow_cpu_s"] for row in table.values())
    out = [f"Load generator and machine, {n:,} streams (client = chat_client.js, origin = "
           "chat_origin.js; bg = CPU of every other process on the machine, % of one core):", "",
           "| target | first event p99 ms | response head p99 ms | client CPU s | client loop lag "
           "p99 / max ms | origin CPU s | origin timer late p99 ms | bg CPU % |"
           + (" MLflow CPU s |" if mlflow else ""),
           "|---|---:|---:|---:|---:|---:|---:|---:|" + ("---:|" if mlflow else "")]
    for name, row in table.items():
        cells = [f"| {name}", _num(row["first_p99_ms"], 1), _num(row["head_p99_ms"], 1),
                 _num(row["client_cpu_s"], 2),
                 f"{_num(row['lag_p99_ms'], 1)} / {_num(row['lag_max_ms'], 0)}",
                 _num(row["origin_cpu_s"], 2), _num(row["origin_late_p99_ms"], 1),
                 _num(row["bg_pct"], 0)] + ([_num(row["mlflow_cpu_s"], 2)] if mlflow else [])
        out.append(" | ".join(cells) + " |")
    return out + [""]


def noisy_runs(results: dict) -> list[str]:
    """`round r, N n target (bg %)` for every run with more than NOISY_BG_PCT of other load."""
    return [f"round {r['round']} {r['streams']:,} {r['target']} ({r['bg_cpu_pct']:.0f}%)"
            for r in results.get("runs", []) if r.get("bg_cpu_pct", 0) > NOISY_BG_PCT]


def text_summary(results: dict, summary: dict) -> str:
    out = ["chat streams: PASS/FAIL (tracegate vs nginx, same round; median over rounds)"]
    for c in summary["checks"]:
        out.append(f"  {'PASS' if c['pass'] else 'FAIL'}  n={c['streams']:<5} {c['target']:<17} "
                   f"{c['check']}: {c['value']}")
    for n, table in summary["per_streams"].items():
        out += [f"  info  {line}" for line in variant_lines(n, table)]
        out += [f"  info  {line}" for line in same_threads_lines(n, table)]
        for name, row in table.items():
            if not row["complete_all"]:
                out.append(f"  !! n={n} {name}: only {row['complete_min']}/{n} streams complete "
                           f"in the worst round")
    noisy = noisy_runs(results)
    if noisy:
        out.append(f"  note: {len(noisy)} runs had other load above {NOISY_BG_PCT}% of one core: "
                   + ", ".join(noisy))
    if results.get("aborted"):
        out.append(f"  ABORTED: {results['aborted'].splitlines()[0]}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    """Print the summary and Markdown again from a chat-<stamp>.json (figures recomputed)."""
    import json
    if len(argv) != 1:
        print("usage: python3 benchmarks/chat_report.py bench-results/chat-<stamp>.json")
        return 2
    with open(argv[0]) as f:
        results = json.load(f)
    results.pop("summary", None)
    summary = summarize(results)
    print(text_summary(results, summary))
    print()
    print(markdown(results, summary))
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main(sys.argv[1:]))
