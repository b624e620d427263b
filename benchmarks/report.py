"""Turns the raw per-run results into medians, same-round ratios, PASS/FAIL and Markdown.

- Every figure is the median over rounds, with the per-round range [min–max].
- Ratios are computed within a round (tracegate ÷ nginx measured minutes apart on the same
  machine state), then their median is taken: that cancels most of the noise of a shared VM.
- Every proxy has a reference: nginx (no access log), except tracegate-defaults, which writes an
  access log and is compared with nginx-log (nginx with its access log on); nginx-log itself is
  compared with nginx. Capture's own cost: tracegate-traced ÷ tracegate (capture off).
- Added latency at c=1 = proxied p50 − direct p50, same round.
- Percentiles: p50/p99 from wrk's --latency, p99.9 from latency.lua (same histogram).
- Streaming: time to first event per round = median of that round's tries; added = that
  minus direct's median in the same round.
"""

from __future__ import annotations

import statistics

# Targets from the issue.
MIN_RPS_RATIO = 0.9          # tracegate rps ÷ nginx rps at c=32
MAX_ADDED_P50_MS = 0.1       # at c=1, over direct
MAX_ADDED_TTFE_MS = 1.0      # first SSE event, over direct
MAX_RSS_MIB = 40.0           # tracegate VmRSS at the end of the c=32 run (largest round)
SSE_GAP_MS, SSE_GAP_TOL_MS = 50.0, 5.0
BUSY_BG_PCT = 25             # other work on the machine during a run, % of one core
MIN_EXPORT_RATIO = 0.9       # traces/s through tracegate ÷ direct OTLP batches (--mlflow)
MAX_TAIL_RATIO = 1.25        # capture on: p99 and p99.9 (c=1, c=32) ÷ the reference's, same round
MAX_CAPTURE_P99_RATIO = 1.10  # tracegate-traced p99 (c=1, c=32) ÷ tracegate's (capture off)

# The reference each proxy is compared with (any other proxy: nginx).
REFERENCE = {"tracegate-defaults": "nginx-log", "nginx-log": "nginx"}
# Targets with capture on whose tail is checked against their reference.
TAIL_CHECKED = ("tracegate-traced", "tracegate-defaults", "tracegate-mlflow")
CAPTURE_PAIR = ("tracegate-traced", "tracegate")  # capture on ÷ capture off, nothing else differs

LABELS = {
    "direct": "direct to origin",
    "nginx": "nginx proxy, 1 worker",
    "nginx-log": "nginx proxy + access log (`combined`, to a file)",
    "tracegate": "**tracegate** tuned (no access log, capture off)",
    "tracegate-traced": "tracegate, capture on (trace file), no access log",
    "tracegate-defaults": "tracegate, defaults (access log, trace file)",
    "tracegate-t1": "tracegate, `--threads 1`",
    "tracegate-mlflow": "tracegate + MLflow export",
    "tracegate-mlflow-down": "tracegate, MLflow unreachable (spooling)",
}


def label(name: str) -> str:
    return LABELS.get(name, name)


def reference(t: str, targets: list[str]) -> str | None:
    """The target `t` is compared with, if it was measured; None for direct and nginx."""
    if t in ("direct", "nginx"):
        return None
    ref = REFERENCE.get(t, "nginx")
    return ref if ref in targets else None


def _med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _agg(xs) -> dict | None:
    xs = [x for x in xs if x is not None]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _runs_by(results: dict) -> dict:
    """(round, load, target) -> run, for runs without an error."""
    out = {}
    for r in results["runs"]:
        if not r.get("error"):
            out[(r["round"], r["load"], r["target"])] = r
    return out


def summarize(results: dict) -> dict:
    targets = results["targets"]
    rounds = sorted({r["round"] for r in results["runs"]})
    by = _runs_by(results)
    tg_names = [t for t in targets if t.startswith("tracegate")]
    proxies = [t for t in targets if t != "direct"]
    s: dict = {"figures": {}, "ratios": {}, "sse": {}, "targets": {}, "warnings": []}

    for t in targets:
        f = {}
        for load in ("c32", "c1"):
            runs = [by[(r, load, t)] for r in rounds if (r, load, t) in by]
            f[load] = {k: _agg([x.get(k) for x in runs]) for k in
                       ("rps", "p50_ms", "p99_ms", "p999_ms", "lat_max_ms", "cpu_pct",
                        "cpu_us_per_req", "rss_mib", "hwm_mib", "bg_cpu_pct", "mlflow_cpu_pct",
                        "traced_share")}
        for key in ("p50_ms", "p99_ms", "p999_ms"):
            f["c1"][f"added_{key}"] = _agg(
                [by[(r, "c1", t)][key] - by[(r, "c1", "direct")][key]
                 for r in rounds if (r, "c1", t) in by and (r, "c1", "direct") in by
                 and by[(r, "c1", t)].get(key) is not None
                 and by[(r, "c1", "direct")].get(key) is not None])
        f["bg_cpu_pct"] = _agg([x.get("bg_cpu_pct") for x in results["runs"]
                                if x["target"] == t and not x.get("error")])
        s["figures"][t] = f

    # Same-round ratios: every proxy vs nginx; every proxy vs its reference; capture on vs off.
    if "nginx" in targets:
        for t in proxies:
            if t != "nginx":
                s["ratios"][t] = _pair_ratios(by, rounds, t, "nginx")
    s["ratios_ref"] = {}
    for t in proxies:
        ref = reference(t, targets)
        if ref:
            s["ratios_ref"][t] = dict(_pair_ratios(by, rounds, t, ref), ref=ref)
    if all(x in targets for x in CAPTURE_PAIR):
        s["capture"] = dict(_pair_ratios(by, rounds, *CAPTURE_PAIR), ref=CAPTURE_PAIR[1])

    # Streaming.
    sse_by = {(x["round"], x["target"]): x for x in results.get("sse", [])}
    for t in targets:
        entries = [sse_by[(r, t)] for r in rounds if (r, t) in sse_by]
        passes = [p for e in entries for p in e["passes"]]
        gaps = [g for p in passes for g in p["gaps_ms"]]
        round_ttfe = [_med(e["tries_ttfe_ms"]) for e in entries]
        added = []
        for r in rounds:
            if (r, t) in sse_by and (r, "direct") in sse_by:
                a = _med(sse_by[(r, t)]["tries_ttfe_ms"])
                d = _med(sse_by[(r, "direct")]["tries_ttfe_ms"])
                if a is not None and d is not None:
                    added.append(a - d)
        expected = results["meta"]["sse_events"]
        separate = bool(passes) and all(
            p["events"] == expected and p["arrivals"] == expected and p["max_per_read"] == 1
            and p["status"] == 200 and not p["error"] for p in passes)
        gap_med = _med(gaps)
        s["sse"][t] = {
            "ttfe_ms": _agg(round_ttfe),
            "added_ttfe_ms": _agg(added),
            "passes": len(passes),
            "events_min": min((p["events"] for p in passes), default=0),
            "arrivals_min": min((p["arrivals"] for p in passes), default=0),
            "max_per_read": max((p["max_per_read"] for p in passes), default=0),
            "failed_passes": sum(1 for p in passes if p["error"] or p["status"] != 200),
            "failed_tries": sum(e.get("failed_tries", 0) for e in entries),
            "gap_ms": {"median": gap_med, "min": min(gaps, default=None),
                       "max": max(gaps, default=None)},
            "separate": separate,
            "gaps_ok": gap_med is not None and abs(gap_med - SSE_GAP_MS) <= SSE_GAP_TOL_MS,
        }

    # PASS/FAIL for every tracegate variant (the headline is "tracegate"). Ratio checks use the
    # median of the same-round ratios; "agg" keeps the per-round range for display.
    for t in tg_names:
        ref = reference(t, targets) or "nginx"
        rt = s["ratios_ref"].get(t) or s["ratios"].get(t, {})
        rps_agg = rt.get("rps_c32")
        rps = (rps_agg or {}).get("median")
        added = (s["figures"][t]["c1"]["added_p50_ms"] or {}).get("median")
        ttfe = (s["sse"][t]["added_ttfe_ms"] or {}).get("median")
        rss = (s["figures"][t]["c32"]["rss_mib"] or {}).get("max")
        sse = s["sse"][t]
        checks = {
            "throughput": {"value": rps, "agg": rps_agg, "ref": ref,
                           "ok": rps is not None and rps >= MIN_RPS_RATIO},
            "added_p50_c1": {"value": added, "ok": added is not None and added <= MAX_ADDED_P50_MS},
        }
        if t in TAIL_CHECKED:
            for key in TAIL_KEYS:
                a = rt.get(key)
                v = (a or {}).get("median")
                checks[f"tail_{key}"] = {"value": v, "agg": a, "ref": ref,
                                         "ok": v is not None and v <= MAX_TAIL_RATIO}
        if t == CAPTURE_PAIR[0] and s.get("capture"):
            for key in ("p99_c32", "p99_c1"):
                a = s["capture"].get(key)
                v = (a or {}).get("median")
                checks[f"capture_{key}"] = {"value": v, "agg": a, "ref": CAPTURE_PAIR[1],
                                            "ok": v is not None and v <= MAX_CAPTURE_P99_RATIO}
        checks["sse"] = {"value": ttfe, "ok": ttfe is not None and ttfe <= MAX_ADDED_TTFE_MS
                         and sse["separate"] and sse["gaps_ok"]}
        checks["rss"] = {"value": rss, "ok": rss is not None and rss <= MAX_RSS_MIB}
        s["targets"][t] = checks

    # Things a reader should know before trusting the figures.
    if results.get("aborted"):
        s["warnings"].append("RUN ABORTED: " + results["aborted"].splitlines()[0])
    busy = []
    for r in results["runs"]:
        where = f"round {r['round']} {r['load']} {r['target']}"
        if r.get("error"):
            s["warnings"].append(f"{where}: {r['error']}")
            continue
        errs = sum(r["socket_errors"].values())
        if r["non_2xx"] or errs:
            s["warnings"].append(f"{where}: {r['non_2xx']} non-2xx responses, "
                                 f"socket errors {r['socket_errors']}")
        if (r.get("bg_cpu_pct") or 0) > BUSY_BG_PCT:
            busy.append(f"r{r['round']} {r['load']} {r['target']} {r['bg_cpu_pct']:.0f}%")
    if busy:
        s["warnings"].append(
            f"{len(busy)} of {len(results['runs'])} wrk runs shared the machine with other work "
            f"using more than {BUSY_BG_PCT}% of a core (see *other work CPU %*; same-round "
            f"ratios are the figures to trust)"
            + (": " + ", ".join(busy) if len(busy) <= 8 else ""))
    for t, x in s["sse"].items():
        if x["failed_passes"] or x["failed_tries"]:
            s["warnings"].append(f"SSE {t}: {x['failed_passes']} failed passes, "
                                 f"{x['failed_tries']} failed tries")
    if results.get("mlflow"):
        s["mlflow"] = summarize_mlflow(results["mlflow"], s["warnings"])
    return s


TAIL_KEYS = ("p99_c32", "p999_c32", "p99_c1", "p999_c1")


def _pair_ratios(by: dict, rounds: list[int], t: str, ref: str) -> dict:
    """Same-round ratios t ÷ ref (median, per-round range): rps, CPU per request, p99, p99.9."""
    rt = {}
    for load in ("c32", "c1"):
        pairs = [(by[(r, load, t)], by[(r, load, ref)]) for r in rounds
                 if (r, load, t) in by and (r, load, ref) in by]

        def ratio(key):
            return _agg([a[key] / b[key] for a, b in pairs if a.get(key) is not None and b.get(key)])

        rt[f"rps_{load}"] = ratio("rps")
        rt[f"cpu_per_req_{load}"] = ratio("cpu_us_per_req")
        rt[f"p99_{load}"] = ratio("p99_ms")
        rt[f"p999_{load}"] = ratio("p999_ms")
    return rt


def summarize_mlflow(m: dict, warnings: list[str]) -> dict:
    """Export throughput (medians, same-run ratios, PASS/FAIL) and the data-plane exporter."""
    out: dict = {"dataplane": m.get("dataplane"), "export": None}
    ex = m.get("export")
    if ex:
        runs = ex["runs"]
        d = {r["run"]: r for r in runs if r["kind"] == "direct"}
        tg = {r["run"]: r for r in runs if r["kind"] == "tracegate"}
        both = sorted(set(d) & set(tg))
        e = {
            "direct_posted": _agg([r.get("rate_posted") for r in d.values()]),
            "direct_present": _agg([r.get("rate_present") for r in d.values()]),
            "tg_present": _agg([r.get("rate_present") for r in tg.values()]),
            "tg_crid": _agg([r.get("rate_crid") for r in tg.values()]),
            "direct_posted_s": _agg([r.get("t_posted_s") for r in d.values()]),
            "direct_present_s": _agg([r.get("t_present_s") for r in d.values()]),
            "tg_present_s": _agg([r.get("t_present_s") for r in tg.values()]),
            "tg_crid_s": _agg([r.get("t_crid_s") for r in tg.values()]),
            "tg_sent_s": _agg([r.get("t_sent_s") for r in tg.values()]),
            "direct_mlflow_cpu": _agg([r.get("mlflow_cpu_pct") for r in d.values()]),
            "tg_mlflow_cpu": _agg([r.get("mlflow_cpu_pct") for r in tg.values()]),
            "tg_cpu": _agg([r.get("tracegate_cpu_pct") for r in tg.values()]),
            "direct_bg": _agg([r.get("bg_cpu_pct") for r in d.values()]),
            "tg_bg": _agg([r.get("bg_cpu_pct") for r in tg.values()]),
            # A run past the deadline counts as 0 traces/s, so it cannot hide.
            "ratio_present": _agg([(tg[k].get("rate_present") or 0) / d[k]["rate_present"]
                                   for k in both if d[k].get("rate_present")]),
            "ratio_crid": _agg([(tg[k].get("rate_crid") or 0) / d[k]["rate_present"]
                                for k in both if d[k].get("rate_present")]),
        }
        for key in ("present", "crid"):
            v = (e[f"ratio_{key}"] or {}).get("median")
            e[f"ok_{key}"] = v is not None and v >= MIN_EXPORT_RATIO
        out["export"] = e
        for r in runs:
            where = f"export run {r['run']} {r['kind']}"
            if r.get("t_present_s") is None or (r["kind"] == "tracegate"
                                                and r.get("t_crid_s") is None):
                warnings.append(f"{where}: not all {r['traces']} traces arrived within the "
                                f"deadline ({r['final_present']} present, {r['final_crid']} "
                                f"with client_request_id)")
            if r["kind"] == "direct" and r["statuses"] != {200: r["batches"]} \
                    and r["statuses"] != {"200": r["batches"]}:
                warnings.append(f"{where}: OTLP statuses {r['statuses']}")
            if r["kind"] == "tracegate":
                if r.get("requests_ok") != r["traces"]:
                    warnings.append(f"{where}: {r.get('requests_ok')}/{r['traces']} requests "
                                    f"answered 200 {r.get('request_errors')}")
                st = r.get("export") or {}
                bad = {k: v for k, v in st.items() if k != "exported" and v}
                if bad or st.get("exported") != r["traces"]:
                    warnings.append(f"{where}: exporter counters {st or 'not logged'}")
            if (r.get("search_present"), r.get("search_crid") if r["kind"] == "tracegate"
                    else 0) != (r["traces"], r["traces"] if r["kind"] == "tracegate" else 0):
                warnings.append(f"{where}: the search API finds {r.get('search_present')} "
                                f"traces, {r.get('search_crid')} with client_request_id")
            if (r.get("bg_cpu_pct") or 0) > BUSY_BG_PCT:
                warnings.append(f"{where}: other work on the machine used "
                                f"{r['bg_cpu_pct']:.0f}% of a core")
    dp = m.get("dataplane") or {}
    main = dp.get("main") or {}
    if main and not main.get("drain_finished"):
        warnings.append(f"export-on tracegate: the exporter had not drained "
                        f"{main.get('drain_limit_s', 0):g} s after SIGTERM and was killed; its "
                        f"counters are missing (MLflow's own counts are shown)")
    if main.get("overloaded_warnings"):
        warnings.append(f"export-on tracegate: {main['overloaded_warnings']} exchanges forwarded untraced "
                        f"(trace building or the tracking server could not keep up)")
    return out


# ---------- formatting ----------

def _us(ms):
    """ms -> whole µs, without a negative zero."""
    return None if ms is None else round(ms * 1000) + 0


def _n(x, fmt="{:,.0f}"):
    return "–" if x is None else fmt.format(x)


def _mr(a: dict | None, fmt: str, rng: bool = True) -> str:
    """'median [min–max]' of an aggregate."""
    if not a:
        return "–"
    if not rng or a["n"] < 2:
        return fmt.format(a["median"])
    return f"{fmt.format(a['median'])} [{fmt.format(a['min'])}–{fmt.format(a['max'])}]"


def _m(a: dict | None, fmt: str) -> str:
    return "–" if not a else fmt.format(a["median"])


def _pf(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def _check_rows() -> list[tuple[str, str]]:
    """(check key, Markdown row title), in display order."""
    t = f"≤ {MAX_TAIL_RATIO:g}× reference, capture on"
    c = f"≤ {MAX_CAPTURE_P99_RATIO:g}× tuned tracegate (capture cost)"
    return [
        ("throughput", f"throughput ≥ {MIN_RPS_RATIO:g}× reference (c=32)"),
        ("added_p50_c1", f"added p50 at c=1 ≤ {MAX_ADDED_P50_MS:g} ms over direct"),
        ("tail_p99_c32", f"p99 c=32 {t}"),
        ("tail_p999_c32", f"p99.9 c=32 {t}"),
        ("tail_p99_c1", f"p99 c=1 {t}"),
        ("tail_p999_c1", f"p99.9 c=1 {t}"),
        ("capture_p99_c32", f"p99 c=32 {c}"),
        ("capture_p99_c1", f"p99 c=1 {c}"),
        ("sse", f"first SSE event ≤ {MAX_ADDED_TTFE_MS:g} ms over direct, events separate"),
        ("rss", f"RSS ≤ {MAX_RSS_MIB:.0f} MiB (largest round, end of c=32)"),
    ]


def _check_value(key: str, x: dict) -> str:
    if key == "added_p50_c1":
        return _n(_us(x["value"]), "{:+.0f} µs")
    if key == "sse":
        return _n(x["value"], "{:+.2f} ms")
    if key == "rss":
        return _n(x["value"], "{:.1f} MiB")
    return _n(x["value"], "{:.2f}× " + x["ref"])


def _pct3(f: dict, fmt: str) -> str:
    """'p50 / p99 / p99.9' medians of one load's figures."""
    return " / ".join(_m(f[k], fmt) for k in ("p50_ms", "p99_ms", "p999_ms"))


def _added3(target: str, c1: dict) -> str:
    """Added p50 / p99 / p99.9 at c=1 over direct in µs (median [range]); '0' for direct."""
    if target == "direct":
        return "0"
    cells = []
    for key in ("added_p50_ms", "added_p99_ms", "added_p999_ms"):
        a = c1.get(key)
        a_us = a and {k: (_us(v) if k != "n" else v) for k, v in a.items()}
        cells.append(_mr(a_us, "{:+.0f}"))
    return " / ".join(cells)


def _ref_cell(t: str, targets: list[str], s: dict) -> str:
    if t == "nginx":
        return "1"
    ref = reference(t, targets)
    if not ref:
        return "–"
    cell = _mr(s["ratios_ref"][t]["rps_c32"], "{:.2f}")
    return cell if ref == "nginx" else f"{cell} (÷ {ref})"


def markdown(results: dict, s: dict) -> str:
    meta = results["meta"]
    targets = results["targets"]
    out = []
    out.append(f"### tracegate benchmark — {meta['started']}")
    out.append("")
    if meta.get("standin"):
        out.append(f"> **Not tracegate:** the proxy under test was `{meta['proxy_cmd']}`.")
        out.append("")
    out.append(
        f"{meta['rounds']} round{'s' if meta['rounds'] != 1 else ''} × {meta['duration_s']:g} s per wrk run, configurations "
        f"alternating in a rotating order; medians over rounds, per-round range in brackets. "
        f"{meta['machine']}; load generator, proxy and origin share the machine. "
        f"nginx {meta['nginx_version']}, wrk {meta['wrk_version']}, {meta['swift_version']}, "
        f"tracegate {meta['git']}. Origin: nginx `return 200`, {meta['body_bytes']}-byte JSON "
        f"body, 1 worker. c=32: `wrk -t2 -c32 -d{meta['duration_s']:g}s --latency`; "
        f"c=1: `wrk -t1 -c1 -d{meta['duration_s']:g}s --latency`; both with `-s latency.lua`, "
        f"which prints p99.9 from wrk's histogram.")
    if meta.get("cpu_load"):
        out.append("")
        out.append(f"Beside every measurement, a normal-priority process (`cpu_load.py`) kept "
                   f"{meta['cpu_load']:g} of one CPU busy (`--cpu-load`).")
    out.append("")

    tg = [t for t in targets if t.startswith("tracegate")]
    if tg:
        out.append("| target | " + " | ".join(label(t) for t in tg) + " |")
        out.append("|---|" + "---|" * len(tg))
        for key, title in _check_rows():
            if not any(key in s["targets"][t] for t in tg):
                continue
            cells = []
            for t in tg:
                x = s["targets"][t].get(key)
                if x is None:
                    cells.append("–")
                    continue
                extra = ""
                if key == "sse":
                    sse = s["sse"][t]
                    extra = (f", {sse['arrivals_min']}/{meta['sse_events']} separate"
                             if sse["separate"] else
                             f", events {sse['events_min']}, arrivals {sse['arrivals_min']}, "
                             f"≤{sse['max_per_read']}/read")
                cells.append(f"{_check_value(key, x)}{extra} {_pf(x['ok'])}")
            out.append(f"| {title} | " + " | ".join(cells) + " |")
        out.append("")
        out.append("Ratios are taken within each round, then their median. Reference: "
                   "*tracegate, defaults* is compared with *nginx + access log*, every other "
                   "tracegate row with nginx without an access log; *capture cost* is "
                   "tracegate-traced ÷ tuned tracegate (capture off, nothing else differs).")
        out.append("")

    # The main table: one row per configuration.
    out.append("| configuration | rps c=32 | vs reference (same round) | p50 / p99 / p99.9 ms c=32 "
               "| p50 / p99 / p99.9 ms c=1 | proxy CPU µs/req c=32 | RSS MiB |")
    out.append("|---|---:|---:|---|---|---:|---:|")
    for t in targets:
        f = s["figures"][t]
        c32, c1 = f["c32"], f["c1"]
        out.append(
            f"| {label(t)} | {_mr(c32['rps'], '{:,.0f}')} | {_ref_cell(t, targets, s)} "
            f"| {_pct3(c32, '{:.2f}')} | {_pct3(c1, '{:.3f}')} "
            f"| {_mr(c32['cpu_us_per_req'], '{:.1f}')} | {_mr(c32['rss_mib'], '{:.1f}')} |")
    out.append("")
    out.append("Reference of each row (rps ratio within each round, median [per-round range]): "
               "*nginx + access log* and every tracegate row → nginx without an access log, "
               "except *tracegate, defaults* → *nginx + access log* (both write an access log "
               "line per request). Latency percentiles are medians over rounds (p50/p99 from "
               "wrk's `--latency`, p99.9 from `latency.lua`). CPU is the proxy's own "
               "utime+stime over the wrk run (nginx: master + workers) per request; RSS is "
               "VmRSS at the end of the c=32 run.")
    out.append("")

    out.append("| configuration | rps c=1 | added p50 / p99 / p99.9 µs c=1 (over direct) "
               "| proxy CPU % c=32 | CPU µs/req c=1 | max latency ms c=32 | other work CPU % "
               "| traced c=32 · c=1 |")
    out.append("|---|---:|---|---:|---:|---:|---:|---:|")
    for t in targets:
        f = s["figures"][t]
        c32, c1 = f["c32"], f["c1"]
        out.append(
            f"| {label(t)} | {_mr(c1['rps'], '{:,.0f}')} | {_added3(t, c1)} "
            f"| {_m(c32['cpu_pct'], '{:.0f}')} | {_mr(c1['cpu_us_per_req'], '{:.0f}')} "
            f"| {_m(c32['lat_max_ms'], '{:.1f}')} | {_mr(f['bg_cpu_pct'], '{:.0f}')} "
            f"| {_traced(c32, c1)} |")
    out.append("")
    out.append("Added latency is proxied − direct in the same round (median [range]). *Proxy CPU "
               "%* is % of one core. *Other work CPU %* is the machine's busy time not spent by "
               "wrk, the origins, the proxies or this script (median over the target's runs, % "
               "of one core): a measure of interference. *Traced* is the share of the run's "
               "exchanges not counted as untraced (1 − `tracegate_traces_dropped_total` ÷ "
               "`tracegate_requests_total`, the instance's counters over the run: exchanges "
               "forwarded uncaptured, and traces an exporter dropped; nothing is sampled out "
               "here; median [range] over rounds). Trace building runs only on CPU time "
               "forwarding leaves, so a saturating load goes mostly untraced; – where capture "
               "is off.")
    out.append("")

    ratio_rows = [(t, "nginx", rt) for t, rt in s["ratios"].items()]
    ratio_rows += [(t, rt["ref"], rt) for t, rt in s.get("ratios_ref", {}).items()
                   if rt["ref"] != "nginx"]
    if s.get("capture"):
        ratio_rows.append((CAPTURE_PAIR[0], CAPTURE_PAIR[1] + " (capture cost)", s["capture"]))
    if ratio_rows:
        out.append("| same-round ratio | ÷ | rps c=32 | rps c=1 | CPU/req c=32 | CPU/req c=1 "
                   "| p99 c=32 | p99.9 c=32 | p99 c=1 | p99.9 c=1 |")
        out.append("|---|---|---|---|---|---|---|---|---|---|")
        for t, ref, rt in ratio_rows:
            out.append(f"| {label(t)} | {ref} | "
                       + " | ".join(_mr(rt.get(k), '{:.2f}') for k in
                                    ("rps_c32", "rps_c1", "cpu_per_req_c32", "cpu_per_req_c1",
                                     "p99_c32", "p999_c32", "p99_c1", "p999_c1")) + " |")
        out.append("")

    out.append(f"Streaming: {meta['sse_events']} events {meta['sse_gap_ms']:g} ms apart; "
               f"time to first event = new connection + request → first `data:` bytes on a raw "
               f"socket, {meta['sse_tries']} tries per round; events and gaps from "
               f"{meta['sse_passes']} full stream{'s' if meta['sse_passes'] != 1 else ''} per round.")
    out.append("")
    out.append("| SSE | first event ms | added ms | events separate | gap ms median [min–max] |")
    out.append("|---|---|---|---|---|")
    for t in targets:
        x = s["sse"][t]
        g = x["gap_ms"]
        sep = (f"yes ({x['passes']} streams)" if x["separate"] else
               f"NO: ≥{x['events_min']} events, ≥{x['arrivals_min']} arrivals, "
               f"≤{x['max_per_read']}/read")
        added = "–" if t == "direct" else _mr(x["added_ttfe_ms"], "{:+.3f}")
        gaps = "–" if g["median"] is None else \
            f"{g['median']:.1f} [{g['min']:.1f}–{g['max']:.1f}]"
        out.append(f"| {label(t)} | {_mr(x['ttfe_ms'], '{:.3f}')} | {added} | {sep} | {gaps} |")
    out.append("")
    if s.get("mlflow"):
        out.extend(markdown_mlflow(results, s))
    if s["warnings"]:
        out.append("Warnings:")
        out.extend(f"- {w}" for w in s["warnings"])
        out.append("")
    return "\n".join(out)


def _exp_counters(x: dict) -> str:
    st = x.get("stats")
    if x.get("drain_finished") and st:
        return (", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}"
                          for k, v in st.items())
                + f" (drain after SIGTERM {x['drain_s']:.1f} s)")
    return (f"not logged: the exporter had not drained {x.get('drain_limit_s', 0):g} s after "
            f"SIGTERM and was killed")


def markdown_mlflow(results: dict, s: dict) -> list[str]:
    meta = results["meta"]
    m, ms = results["mlflow"], s["mlflow"]
    targets = results["targets"]
    out = []
    srv = m["server"]
    out.append("#### Trace export to MLflow (`--mlflow`)")
    out.append("")
    out.append(f"MLflow {srv['version']} `mlflow server`, SQLite backend, `--workers 1`, job "
               f"execution off, on the same machine (it competes for the same "
               f"{meta['machine'].split(' ')[0]} vCPUs). *tracegate + MLflow export* is tracegate "
               f"with `--mlflow-tracking-uri` (capture on, every export setting at its default: "
               f"batch 100, delay 1 s, 4 StartTraceV3 at a time), in the same rounds as the "
               f"others. Under wrk it sees far more exchanges than MLflow can store; it traces what "
               f"idle CPU and MLflow's pace allow and forwards the rest untraced (counted), so the "
               f"server is busy for the whole run, including the other targets' runs (*MLflow CPU "
               f"%*). Its exporter runs only on idle CPU: while wrk saturates the export-on "
               f"instance, MLflow gets less from it, so MLflow's share is smaller in those runs.")
    out.append("")
    out.append("| configuration | rps c=32 | vs nginx (same round) | p50 / p99 / p99.9 ms c=32 "
               "| p50 / p99 / p99.9 ms c=1 | CPU µs/req c=32 | RSS MiB | MLflow CPU % c=32 "
               "| MLflow CPU % c=1 | other work CPU % |")
    out.append("|---|---:|---:|---|---|---:|---:|---:|---:|---:|")
    for t in targets:
        f = s["figures"][t]
        c32, c1 = f["c32"], f["c1"]
        ratio = "1" if t == "nginx" else (
            "–" if t not in s["ratios"] else _mr(s["ratios"][t]["rps_c32"], "{:.2f}"))
        out.append(
            f"| {label(t)} | {_mr(c32['rps'], '{:,.0f}')} | {ratio} "
            f"| {_pct3(c32, '{:.2f}')} | {_pct3(c1, '{:.3f}')} "
            f"| {_mr(c32['cpu_us_per_req'], '{:.1f}')} "
            f"| {_mr(c32['rss_mib'], '{:.1f}')} | {_mr(c32['mlflow_cpu_pct'], '{:.0f}')} "
            f"| {_mr(c1['mlflow_cpu_pct'], '{:.0f}')} | {_mr(f['bg_cpu_pct'], '{:.0f}')} |")
    out.append("")
    tg = s["targets"].get("tracegate-mlflow")
    if tg:
        out.append(f"Export on: throughput {_n(tg['throughput']['value'], '{:.2f}×')} nginx "
                   f"{_pf(tg['throughput']['ok'])} (target ≥ {MIN_RPS_RATIO}×); added p50 at c=1 "
                   f"{_n(_us(tg['added_p50_c1']['value']), '{:+.0f} µs')} "
                   f"{_pf(tg['added_p50_c1']['ok'])} (target ≤ {MAX_ADDED_P50_MS * 1000:.0f} µs); "
                   f"p99 / p99.9 ÷ nginx's at c=32 "
                   f"{_n(tg.get('tail_p99_c32', {}).get('value'), '{:.2f}×')} / "
                   f"{_n(tg.get('tail_p999_c32', {}).get('value'), '{:.2f}×')}, at c=1 "
                   f"{_n(tg.get('tail_p99_c1', {}).get('value'), '{:.2f}×')} / "
                   f"{_n(tg.get('tail_p999_c1', {}).get('value'), '{:.2f}×')} "
                   f"{_pf(all(tg.get(k, {}).get('ok') for k in ('tail_' + x for x in TAIL_KEYS)))} "
                   f"(target ≤ {MAX_TAIL_RATIO:g}× each).")
        out.append("")
    dp = ms.get("dataplane") or {}
    main = dp.get("main")
    if main:
        rc = dp.get("mlflow_rounds_cpu") or {}
        out.append(
            f"Exporter of *tracegate + MLflow export* (the instance wrk loads): "
            f"≈{dp['requests_main']:,} requests proxied (warm-up + rounds); "
            f"{_n(main.get('stored_at_sigterm'))} traces stored in MLflow by the end of the rounds "
            f"({_n(main.get('with_crid_at_sigterm'))} with `client_request_id`), "
            f"{_n(main.get('stored_after_drain'))} ({_n(main.get('with_crid_after_drain'))}) "
            f"after the drain, i.e. {_n(_share(main.get('stored_after_drain'), dp['requests_main']), '{:.0%}')} "
            f"of the requests have a trace in MLflow. {_n(main.get('overloaded_warnings'))} "
            f"exchanges were forwarded untraced (not captured while trace building, which runs only on idle CPU, "
            f"or the tracking server could not keep up). "
            f"tracegate's own counters: {_exp_counters(main)}. "
            f"MLflow server CPU over the warm-up and rounds: {_n(rc.get('cpu_pct'))}% of one "
            f"core for {_n(rc.get('wall_s'))} s.")
        sse = dp.get("sse")
        if sse:
            out.append("")
            out.append(f"SSE instance of the same target: {_exp_counters(sse)}; "
                       f"{_n(sse.get('stored_after_drain'))} traces stored.")
        out.append("")

    e = ms.get("export")
    ex = m.get("export")
    if e and ex:
        out.append(
            f"Export throughput: {ex['runs_per_kind']} runs of each kind, alternating, after "
            f"an uncounted direct run that warms the server up; "
            f"{ex['traces']:,} traces per run, a fresh experiment each run; medians, range in "
            f"brackets. *Direct*: {ex['traces'] // ex['batch']} OTLP/JSON requests of "
            f"{ex['batch']} traces ({ex['captured_body_bytes']:,} bytes, one body captured from "
            f"tracegate, trace ids renewed), posted one after another on one keep-alive "
            f"connection. *Through tracegate*: {ex['traces']:,} POST {_CHAT} requests, "
            f"{ex['concurrency']} clients, tracegate `--export-batch-size {ex['batch']}`, other "
            f"export settings default; the clock starts at the first request. Arrival is polled "
            + ("every 50 ms from MLflow's SQLite file (read-only)" if ex["count_via"] == "db"
               else "every 0.5 s with the REST search API")
            + "; the final counts were checked with the search API.")
        out.append("")
        out.append("| path | timed until | traces/s | seconds | vs direct (same run) "
                   "| MLflow CPU % | other work CPU % |")
        out.append("|---|---|---:|---:|---:|---:|---:|")
        out.append(f"| direct OTLP | all POSTs answered 200 | {_mr(e['direct_posted'], '{:,.0f}')} "
                   f"| {_mr(e['direct_posted_s'], '{:.2f}')} | – "
                   f"| {_mr(e['direct_mlflow_cpu'], '{:.0f}')} | {_mr(e['direct_bg'], '{:.0f}')} |")
        out.append(f"| direct OTLP (reference) | all {ex['traces']:,} in MLflow "
                   f"| {_mr(e['direct_present'], '{:,.0f}')} "
                   f"| {_mr(e['direct_present_s'], '{:.2f}')} | 1 | | |")
        out.append(f"| through tracegate | all {ex['traces']:,} in MLflow "
                   f"| {_mr(e['tg_present'], '{:,.0f}')} | {_mr(e['tg_present_s'], '{:.2f}')} "
                   f"| {_mr(e['ratio_present'], '{:.2f}')} {_pf(e['ok_present'])} "
                   f"| {_mr(e['tg_mlflow_cpu'], '{:.0f}')} | {_mr(e['tg_bg'], '{:.0f}')} |")
        out.append(f"| through tracegate, StartTraceV3 counted | all {ex['traces']:,} with "
                   f"`client_request_id` | {_mr(e['tg_crid'], '{:,.0f}')} "
                   f"| {_mr(e['tg_crid_s'], '{:.2f}')} "
                   f"| {_mr(e['ratio_crid'], '{:.2f}')} {_pf(e['ok_crid'])} | | |")
        out.append("")
        out.append(f"Target: ≥ {MIN_EXPORT_RATIO}× direct (median of same-run ratios). The "
                   f"requests themselves took {_mr(e['tg_sent_s'], '{:.2f}')} s; tracegate used "
                   f"{_mr(e['tg_cpu'], '{:.0f}')}% of a core over a run. StartTraceV3 (one call "
                   f"per trace, for `client_request_id`) shares the 1-worker server with the "
                   f"OTLP posts while it runs.")
        out.append("")
    return out


_CHAT = "`/v1/chat/completions`"


def _traced(c32: dict, c1: dict) -> str:
    """The traced share at each load (median [range] over rounds), or – where capture is off."""
    shares = [x["traced_share"] for x in (c32, c1)]
    if all(x is None for x in shares):
        return "–"
    return " · ".join(_mr(x, "{:.1%}") for x in shares)


def _share(part, whole):
    return None if part is None or not whole else part / whole


def text_summary(results: dict, s: dict) -> str:
    """A few plain lines for the terminal, before the Markdown."""
    lines = []
    meta = results["meta"]
    if results.get("aborted"):
        lines.append("RUN ABORTED, figures are partial: " + results["aborted"].splitlines()[0])
    if meta.get("standin"):
        lines.append(f"NOTE: the proxy under test was NOT tracegate but: {meta['proxy_cmd']}")
    targets = results["targets"]
    lines.append("figures (medians over rounds; ratio = same-round median [range] vs reference):")
    w = max(len(t) for t in targets)
    lines.append(f"  {'':<{w}}  {'rps c=32':>9}  {'x ref':<27}  {'p50/p99/p99.9 ms c=32':<22}  "
                 f"{'p50/p99/p99.9 ms c=1':<22}  CPU us/req c=32 (x ref)")
    for t in targets:
        f = s["figures"][t]
        ref = reference(t, targets)
        rr = s.get("ratios_ref", {}).get(t, {})
        rps_ratio = (f"{_mr(rr.get('rps_c32'), '{:.2f}')} {ref}" if ref else
                     "reference" if t == "nginx" else "")
        cpu = _m(f["c32"]["cpu_us_per_req"], "{:.1f}")
        if ref and f["c32"]["cpu_us_per_req"]:
            cpu += f" ({_mr(rr.get('cpu_per_req_c32'), '{:.2f}')}x {ref}"
            if ref != "nginx" and t in s["ratios"]:
                cpu += f"; {_m(s['ratios'][t]['cpu_per_req_c32'], '{:.2f}')}x nginx"
            cpu += ")"
        lines.append(f"  {t:<{w}}  {_m(f['c32']['rps'], '{:,.0f}'):>9}  {rps_ratio:<27}  "
                     f"{_pct3(f['c32'], '{:.2f}'):<22}  {_pct3(f['c1'], '{:.3f}'):<22}  {cpu}")
    for t, tg in s["targets"].items():
        lines.append(f"{t}:")
        for key, _title in _check_rows():
            x = tg.get(key)
            if x is None:
                continue
            pf = "PASS" if x["ok"] else "FAIL"
            if key == "throughput":
                line = (f"throughput {_mr(x.get('agg'), '{:.2f}')}x {x['ref']} "
                        f"(c=32, target >= {MIN_RPS_RATIO:g})")
            elif key == "added_p50_c1":
                line = (f"added p50 at c=1 {_n(_us(x['value']), '{:+.0f}')} us "
                        f"(target <= {MAX_ADDED_P50_MS * 1000:.0f} us)")
            elif key.startswith(("tail_", "capture_")):
                kind, pct, load = key.split("_")
                what = f"{'p99.9' if pct == 'p999' else pct} c={load[1:]}"
                limit = MAX_TAIL_RATIO if kind == "tail" else MAX_CAPTURE_P99_RATIO
                line = (f"{what} {_mr(x.get('agg'), '{:.2f}')}x {x['ref']}"
                        f"{' (capture cost)' if kind == 'capture' else ''} (target <= {limit:g})")
            elif key == "sse":
                sse = s["sse"][t]
                line = (f"first SSE event {_n(x['value'], '{:+.3f}')} ms over direct (target <= "
                        f"{MAX_ADDED_TTFE_MS:g} ms); events separate: "
                        f"{'yes' if sse['separate'] else 'NO'}; median gap "
                        f"{_n(sse['gap_ms']['median'], '{:.1f}')} ms")
            elif key == "rss":
                line = f"RSS {_n(x['value'], '{:.1f}')} MiB (target <= {MAX_RSS_MIB:.0f} MiB)"
            else:
                line = f"{key} {x['value']}"
            lines.append(f"  {pf}  {line}")
    ms = s.get("mlflow") or {}
    e = ms.get("export")
    if e:
        lines.append("export to MLflow (traces/s, through tracegate vs direct OTLP batches):")
        for key, what in (("present", "all traces in MLflow"),
                          ("crid", "all with client_request_id (StartTraceV3 counted)")):
            v = (e[f"ratio_{key}"] or {}).get("median")
            lines.append(f"  {'PASS' if e[f'ok_{key}'] else 'FAIL'}  {what}: "
                         f"{_m(e[f'tg_{key}'], '{:,.0f}')}/s vs direct "
                         f"{_m(e['direct_present'], '{:,.0f}')}/s = {_n(v, '{:.2f}')}x "
                         f"(target >= {MIN_EXPORT_RATIO})")
    main = (ms.get("dataplane") or {}).get("main")
    if main:
        lines.append(f"  data-plane exporter: {_exp_counters(main)}; "
                     f"{_n(main.get('stored_after_drain'))} traces stored in MLflow")
    return "\n".join(lines)
