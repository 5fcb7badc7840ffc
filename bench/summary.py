#!/usr/bin/env python3
"""Reports of bench/markers.sh and bench/metrics.sh (standard library only).

  summary.py pgbench-rate OUT RATE SECONDS   pgbench -R -P output -> one JSON line: the rate
                                             kept, schedule lag, late and skipped transactions
  summary.py markdown RAW                    the Markdown report of a run: interleaved pairs
                                             (ratio per round, median) and the steady state
"""
import json
import re
import statistics
import sys

# The mode every other mode of a section is divided by.
BASE = {"pairs": "delete-0.2", "metrics": "off"}


def cmd_pgbench_rate(path, rate, seconds):
    text = open(path).read()

    def number(pattern, default=None):
        found = re.search(pattern, text)
        return float(found.group(1)) if found else default

    progress = [
        {"t": float(m.group(1)), "tps": float(m.group(2)), "lag_ms": float(m.group(3))}
        for m in re.finditer(r"progress: ([0-9.]+) s, ([0-9.]+) tps, .*?lag ([0-9.]+) ms", text)
    ]
    lag = re.search(r"rate limit schedule lag: avg ([0-9.]+) \(max ([0-9.]+)\) ms", text)
    print(json.dumps({
        "cmd": "rate",
        "target_per_s": float(rate),
        "seconds": float(seconds),
        "per_s": number(r"tps = ([0-9.]+) \(without initial connection time\)"),
        "lifecycles": number(r"number of transactions actually processed: (\d+)"),
        "failed": number(r"number of failed transactions: (\d+)", 0),
        "skipped": number(r"number of transactions skipped: (\d+)", 0),
        "late": number(r"number of transactions above the [0-9.]+ ms latency limit: (\d+)", 0),
        "latency_avg_ms": number(r"latency average = ([0-9.]+) ms"),
        "lag_avg_ms": float(lag.group(1)) if lag else None,
        "lag_max_ms": float(lag.group(2)) if lag else None,
        "progress": progress,
    }))


def load(raw):
    with open(raw) as lines:
        return [json.loads(line) for line in lines if line.strip()]


def pairs_section(records, section, out):
    rows = [r for r in records if r.get("section") == section and r.get("per_s")]
    if not rows:
        return
    base = BASE[section]
    modes = sorted({r["mode"] for r in rows} - {base})
    out.append(f"### {section}: lifecycles/s, interleaved rounds, ratio to `{base}`\n")
    out.append("| N | round | load avg (1 min) | " + " | ".join([base] + modes)
               + " | " + " | ".join(f"{m} / {base}" for m in modes) + " |")
    out.append("|---:|---:|---|" + "---:|" * (1 + 2 * len(modes)))
    for n in sorted({r["clients"] for r in rows}):
        ratios = {m: [] for m in modes}
        for rnd in sorted({r["round"] for r in rows if r["clients"] == n}):
            by_mode = {r["mode"]: r for r in rows if r["clients"] == n and r["round"] == rnd}
            if base not in by_mode:
                continue
            b = by_mode[base]["per_s"]
            cells, ratio_cells = [f"{b:,.0f}"], []
            for m in modes:
                if m in by_mode:
                    cells.append(f"{by_mode[m]['per_s']:,.0f}")
                    ratios[m].append(by_mode[m]["per_s"] / b)
                    ratio_cells.append(f"{ratios[m][-1]:.3f}")
                else:
                    cells.append("-")
                    ratio_cells.append("-")
            loads = sorted(str(r.get("load", "")).split(" ")[0] for r in by_mode.values())
            out.append(f"| {n} | {rnd} | {'-'.join(dict.fromkeys([loads[0], loads[-1]]))} | "
                       + " | ".join(cells + ratio_cells) + " |")
        medians = [f"{statistics.median(ratios[m]):.3f}" if ratios[m] else "-" for m in modes]
        out.append(f"| {n} | **median** | | " + " | ".join([""] * (1 + len(modes)))
                   + " | " + " | ".join(f"**{v}**" for v in medians) + " |")
    out.append("")


def cpu_section(records, out, cores):
    """The metrics feature's cost as the load generator's CPU per lifecycle, on against off."""
    rows = [r for r in records if r.get("section") == "metrics" and r.get("per_s")
            and r.get("client_cpu_s") not in (None, "")]
    if not rows:
        return
    out.append("### metrics: the load generator's CPU time per lifecycle (user + system)\n")
    out.append("cost share = (on - off) CPU per lifecycle / the time a lifecycle takes "
               f"(min(N, {cores} cores) / lifecycles/s of `off`); "
               "derived ratio = 1 / (1 + cost share).\n")
    out.append("| N | round | off µs | on µs | on - off µs |")
    out.append("|---:|---:|---:|---:|---:|")
    for n in sorted({r["clients"] for r in rows}):
        diffs, offs = [], []
        for rnd in sorted({r["round"] for r in rows if r["clients"] == n}):
            by = {r["mode"]: r for r in rows if r["clients"] == n and r["round"] == rnd}
            if not {"on", "off"} <= by.keys():
                continue
            us = {m: float(by[m]["client_cpu_s"]) * 1e6
                  / (by[m]["per_s"] * float(by[m]["run_seconds"])) for m in ("on", "off")}
            diffs.append(us["on"] - us["off"])
            offs.append(by["off"]["per_s"])
            out.append(f"| {n} | {rnd} | {us['off']:.1f} | {us['on']:.1f} | {diffs[-1]:+.1f} |")
        if diffs:
            diff = statistics.median(diffs)
            # One client waits a whole lifecycle (1 / rate); many share the cores.
            lifecycle_us = 1e6 * min(int(n), cores) / statistics.median(offs)
            share = diff / lifecycle_us
            out.append(f"| {n} | **median** | | | **{diff:+.1f}** (cost share {share:.2%}, "
                       f"derived ratio **{1 / (1 + share):.3f}**) |")
    out.append("")


def steady_section(records, out):
    samples = [r for r in records if r.get("section") == "steady" and r.get("cmd") == "sample"]
    if not samples:
        return
    rate = next((r for r in records if r.get("cmd") == "rate"), {})
    hot = next((r for r in records if r.get("cmd") == "hot"), {})
    settings = next((r for r in records if r.get("cmd") == "settings"), {}).get("settings", {})
    out.append("### steady state\n")
    out.append(f"Target {rate.get('target_per_s', 0):.0f} lifecycles/s for "
               f"{rate.get('seconds', 0):.0f} s, lifetime {rate.get('lifetime')} s, "
               f"{rate.get('abandon_pct')} % abandoned, {rate.get('clients')} pgbench clients; "
               f"server settings: {json.dumps(settings, sort_keys=True)}.\n")
    out.append("| t (s) | live | markers | expired | table + indexes (MB) | cleaned/s (last 60 s) "
               "| cleaned (total) | dead tuples | autovacuums | load avg |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for s in samples:
        # Over the last cleanup interval (60 s): a pass runs once per interval.
        since = [p for p in samples if p["t"] <= s["t"] - 59]
        t0, c0 = (since[-1]["t"], since[-1]["cleaned_total"]) if since else (0, 0)
        per_s = (s["cleaned_total"] - c0) / (s["t"] - t0) if s["t"] > t0 else 0
        out.append(f"| {s['t']} | {s['live']:,} | {s['markers']:,} | {s['expired']:,} | "
                   f"{s['table_bytes'] / 1e6:.1f} | {per_s:,.0f} | {s['cleaned_total']:,} | "
                   f"{s['dead_tuples']:,} | {s['autovacuums']} | {s.get('load', '')} |")
    out.append("")
    if rate:
        out.append(f"pgbench kept {rate.get('per_s')} lifecycles/s of {rate['target_per_s']:.0f} "
                   f"({rate.get('lifecycles'):.0f} in all, {rate.get('failed'):.0f} failed); "
                   f"schedule lag avg {rate.get('lag_avg_ms')} ms, max {rate.get('lag_max_ms')} ms; "
                   f"{rate.get('late'):.0f} above the latency limit, {rate.get('skipped'):.0f} "
                   f"skipped; average latency {rate.get('latency_avg_ms')} ms; "
                   f"{rate.get('batches')} cleanup batches.")
        worst = max(rate.get("progress", []), key=lambda p: p["lag_ms"], default=None)
        if worst:
            out.append(f"Worst progress interval: {worst['tps']} tps, lag {worst['lag_ms']} ms "
                       f"(ending at t = {worst['t']} s).")
    if hot:
        share = hot["n_tup_hot_upd"] / hot["n_tup_upd"] if hot["n_tup_upd"] else 0
        out.append(f"HOT updates: {hot['n_tup_hot_upd']:,} of {hot['n_tup_upd']:,} "
                   f"({share:.1%}); inserts {hot['n_tup_ins']:,}, deletes {hot['n_tup_del']:,}.")
    out.append("")


def cmd_markdown(raw):
    records = load(raw)
    env = next((r for r in records if r.get("cmd") == "env"), {})
    out = [f"## {env.get('kind', 'run')} {env.get('date', '')}\n",
           f"{env.get('nproc')} CPUs, PostgreSQL {env.get('postgres')}, {env.get('pgbench', '')}; "
           f"load average before: {' '.join(env.get('load_before', []))}.\n"]
    for section in BASE:
        pairs_section(records, section, out)
    cpu_section(records, out, int(env.get("nproc") or 1))
    steady_section(records, out)
    print("\n".join(out))


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    if args[0] == "pgbench-rate":
        cmd_pgbench_rate(*args[1:4])
    elif args[0] == "markdown":
        cmd_markdown(args[1])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
