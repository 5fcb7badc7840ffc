#!/usr/bin/env python3
"""Helpers for bench/run.sh (standard library only).

  report.py append RAW key=value...       JSON lines on stdin -> RAW, with the keys added
  report.py pgbench LOGDIR STDOUT N [MODE]  pgbench's per-transaction log + output -> one JSON
                                          line (mode: MODE, default pgbench)
  report.py cpu -- CMD...                 run CMD; its last JSON line + client CPU (user, sys)
  report.py strace FILE LIFECYCLES        strace -c -f summary -> calls per lifecycle
  report.py markdown RAW                  the Markdown report of a run
"""
import glob
import json
import os
import re
import resource
import statistics
import subprocess
import sys


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, int(round(q * len(sorted_values) + 0.5)) - 1))
    return sorted_values[index]


def cmd_append(raw, pairs):
    extra = {}
    for pair in pairs:
        key, _, value = pair.partition("=")
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value
    with open(raw, "a") as out:
        for line in sys.stdin:
            line = line.strip()
            if not line.startswith("{"):
                if line:
                    print(line, file=sys.stderr)
                continue
            record = json.loads(line)
            record.update(extra)
            out.write(json.dumps(record, sort_keys=True) + "\n")
            brief = {k: record[k] for k in ("section", "cmd", "mode", "clients", "round", "per_s",
                                             "rows_per_s", "errors", "lifecycles_per_s",
                                             "table_bytes", "t") if k in record}
            lat = record.get("ops", {}).get("lifecycle") or record.get("ops", {}).get("get")
            if lat:
                brief["p99_us"] = lat["p99"]
            print("  " + json.dumps(brief), file=sys.stderr)


def cmd_pgbench(logdir, stdout_file, clients, mode="pgbench"):
    text = open(stdout_file).read()
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", text)
    failed = re.search(r"number of failed transactions: (\d+)", text)
    processed = re.search(r"number of transactions actually processed: (\d+)", text)
    latencies = []
    for path in glob.glob(os.path.join(logdir, "pgbench_log.*")):
        with open(path) as log:
            for line in log:
                fields = line.split()
                if len(fields) >= 3 and fields[2].isdigit():
                    latencies.append(int(fields[2]))
    latencies.sort()
    statements = {}
    for name, pattern in (("store", r"^\s*([0-9.]+)\s+\d+\s+(?:INSERT|WITH inserted)"),
                          ("get", r"^\s*([0-9.]+)\s+\d+\s+SELECT"),
                          ("consume", r"^\s*([0-9.]+)\s+\d+\s+(?:DELETE|WITH taken|WITH target)")):
        found = re.search(pattern, text, re.M)
        if found:
            statements[name] = {"mean": round(float(found.group(1)) * 1000, 1)}
    ops = dict(statements)
    if latencies:
        ops["lifecycle"] = {
            "n": len(latencies),
            "mean": round(sum(latencies) / len(latencies), 1),
            "p50": percentile(latencies, 0.50),
            "p99": percentile(latencies, 0.99),
            "p999": percentile(latencies, 0.999),
            "max": latencies[-1],
        }
    print(json.dumps({
        "cmd": "lifecycle",
        "mode": mode,
        "clients": int(clients),
        "per_s": float(tps.group(1)) if tps else None,
        "lifecycles": int(processed.group(1)) if processed else None,
        "errors": int(failed.group(1)) if failed else None,
        "ops": ops,
    }))


def cmd_cpu(argv):
    result = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    last = {}
    for line in result.stdout.splitlines():
        if line.startswith("{"):
            last = json.loads(line)
        elif "tps =" in line or "processed:" in line:
            last.setdefault("text", []).append(line)
    last["client_user_s"] = round(usage.ru_utime, 3)
    last["client_sys_s"] = round(usage.ru_stime, 3)
    print(json.dumps(last))
    sys.exit(result.returncode)


def cmd_strace(path, lifecycles):
    calls = {}
    total = 0
    for line in open(path):
        fields = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(fields) >= 5 and fields[3].isdigit() and not line.startswith("100.00"):
            name = fields[-1]
            calls[name] = int(fields[3])
        if fields and fields[-1] == "total":
            total = int(fields[3])
    n = float(lifecycles)
    per = {name: round(count / n, 2) for name, count in calls.items()}
    print(json.dumps({
        "cmd": "strace",
        "lifecycles": int(lifecycles),
        "per_lifecycle": {k: per.get(k, 0) for k in ("sendto", "recvfrom", "epoll_wait",
                                                      "futex", "write", "read", "sched_yield")},
        "total_per_lifecycle": round(total / n, 2),
    }))


def load(raw):
    with open(raw) as f:
        return [json.loads(line) for line in f if line.strip()]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def lat(record, op, q):
    return record.get("ops", {}).get(op, {}).get(q)


def pooler_row(bouncer, n, mode, protocol, base, mine):
    """One row of the pooler table: `mine` (round -> record of one client mode) against
    `base` (round -> pgbench's record) through the same PgBouncer."""
    ratio = med([mine[k]["per_s"] / base[k]["per_s"] for k in mine
                 if k in base and base[k].get("per_s") and mine[k].get("per_s")])
    sp = " / ".join(fmt(med([lat(r, "lifecycle", q) for r in mine.values()]))
                    for q in ("p50", "p99"))
    bp = " / ".join(fmt(med([lat(r, "lifecycle", q) for r in base.values()]))
                    for q in ("p50", "p99"))
    recs = list(mine.values()) + list(base.values())
    errors = sum(max(r.get("errors") or 0, 0) for r in recs)
    failed = sum(1 for r in recs if r.get("errors") == -1)
    per_round = ", ".join(fmt(mine[k]["per_s"] / base[k]["per_s"], 2) for k in sorted(mine)
                          if k in base and base[k].get("per_s") and mine[k].get("per_s"))
    return (f"| {bouncer} | {n} | {mode} "
            f"| {fmt(med([r.get('per_s') for r in mine.values()]))} "
            f"| -M {protocol} | {fmt(med([r.get('per_s') for r in base.values()]))} "
            f"| **{fmt(ratio, 2)}** ({per_round}) | {sp} | {bp} "
            f"| {errors}{f' ({failed} runs failed)' if failed else ''} |")


def round_ratios(mine, base):
    """Per-round ratios mine/base (round -> record each), in round order, and their median."""
    values = [mine[k]["per_s"] / base[k]["per_s"] for k in sorted(mine)
              if k in base and base[k].get("per_s") and mine[k].get("per_s") is not None]
    return med(values), values


def both_ratios(records):
    """The store against pgbench running its SQL and pgbench running the least SQL
    (bench/lifecycle-least.sql), at every point of the lifecycle and overload sections that
    ran pgbench-least: rows of Markdown."""
    points = []
    for r in records:
        if r.get("mode") != "pgbench-least":
            continue
        if r.get("section") == "lifecycle":
            key = ("lifecycle", r["clients"], r["clients"])
        elif r.get("section") == "overload":
            key = ("overload", r["callers"], r["connections"])
        else:
            continue
        if key not in points:
            points.append(key)
    if not points:
        return []
    out = ["### The store against both pgbench scripts (interleaved rounds)", "",
           "store / pgbench of the same round: \"same SQL\" runs bench/lifecycle.sql (the "
           "store's statements), \"least SQL\" bench/lifecycle-least.sql (insert, read, "
           "`DELETE ... RETURNING`). Medians, then every round's value in round order.", "",
           "| N (callers / connections) | store /s | pgbench same SQL /s | pgbench least SQL /s "
           "| store / same SQL | store / least SQL | same SQL / least SQL |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for section, callers, connections in sorted(points, key=lambda p: (p[0], p[2], p[1])):
        def of(mode):
            return {r.get("round", 1): r for r in records
                    if r.get("section") == section and r.get("mode") == mode
                    and (r.get("clients") if section == "lifecycle" else r.get("callers")) == callers
                    and (section == "lifecycle" or r.get("connections") == connections)}
        store, same, least = of("store"), of("pgbench"), of("pgbench-least")
        cells = []
        for mine, base in ((store, same), (store, least), (same, least)):
            ratio, values = round_ratios(mine, base)
            cells.append(f"**{fmt(ratio, 2)}** ({', '.join(fmt(v, 2) for v in values)})")
        label = str(callers) if section == "lifecycle" else f"{callers} / {connections}"
        out.append(f"| {label} | {fmt(med([r.get('per_s') for r in store.values()]))} "
                   f"| {fmt(med([r.get('per_s') for r in same.values()]))} "
                   f"| {fmt(med([r.get('per_s') for r in least.values()]))} "
                   f"| {' | '.join(cells)} |")
    out.append("")
    return out


def cmd_markdown(raw):
    records = load(raw)
    out = []
    env = [r for r in records if r.get("cmd") == "env"]
    if env:
        e = env[0]
        out.append(f"Run {e.get('date')} on {e.get('cpu')} ({e.get('nproc')} cores, "
                   f"{e.get('mem')}), {e.get('postgres')}; load average before: "
                   f"{e.get('load_before')}, after: {e.get('load_after', '?')}.")
        out.append("")
        out.append(f"Server settings: {e.get('settings')}.")
        out.append("")

    out.extend(both_ratios(records))

    life = [r for r in records if r.get("section") == "lifecycle"]
    if life:
        ns = sorted({r["clients"] for r in life})
        rounds = max(r.get("round", 1) for r in life)
        seconds = life[0].get("run_seconds")
        out.append(f"### Lifecycles: store vs pgbench ({rounds} interleaved rounds of {seconds} s, medians)")
        out.append("")
        out.append("Ratio = median over rounds of store/pgbench in the same round. "
                   "Latencies in µs; pgbench's from its per-transaction log (whole lifecycle).")
        out.append("")
        out.append("| N | store /s | pgbench /s | ratio | "
                   "lifecycle p50 / p99 / p99.9 store | same, pgbench | p99 store/pgbench |")
        out.append("|---:|---:|---:|---:|---|---|---:|")
        for n in ns:
            by_mode = {}
            for r in life:
                if r["clients"] == n:
                    by_mode.setdefault(r["mode"], {})[r.get("round", 1)] = r

            def ratios(mode):
                values = []
                for rnd, rec in by_mode.get(mode, {}).items():
                    base = by_mode.get("pgbench", {}).get(rnd)
                    if base and base.get("per_s") and rec.get("per_s") is not None:
                        values.append(rec["per_s"] / base["per_s"])
                return med(values)

            def m(mode, f):
                return med([f(r) for r in by_mode.get(mode, {}).values()])

            s_p = [m("store", lambda r, q=q: lat(r, "lifecycle", q)) for q in ("p50", "p99", "p999")]
            b_p = [m("pgbench", lambda r, q=q: lat(r, "lifecycle", q)) for q in ("p50", "p99", "p999")]
            p99_ratio = med([lat(by_mode["store"][rnd], "lifecycle", "p99") /
                             lat(by_mode["pgbench"][rnd], "lifecycle", "p99")
                             for rnd in by_mode.get("store", {})
                             if rnd in by_mode.get("pgbench", {})
                             and lat(by_mode["pgbench"][rnd], "lifecycle", "p99")])
            out.append(
                f"| {n} | {fmt(m('store', lambda r: r.get('per_s')))} "
                f"| {fmt(m('pgbench', lambda r: r.get('per_s')))} "
                f"| **{fmt(ratios('store'), 2)}** "
                f"| {' / '.join(fmt(v) for v in s_p)} | {' / '.join(fmt(v) for v in b_p)} "
                f"| {fmt(p99_ratio, 2)} |")
        out.append("")
        out.append("Per operation (store; pgbench: mean per statement from `-r`), µs, medians:")
        out.append("")
        out.append("| N | store p50 / p99 / p99.9 | get_by_hash p50 / p99 / p99.9 | "
                   "consume_by_hash p50 / p99 / p99.9 | pgbench mean INSERT / SELECT / consume |")
        out.append("|---:|---|---|---|---|")
        for n in ns:
            recs = [r for r in life if r["clients"] == n and r["mode"] == "store"]
            bench = [r for r in life if r["clients"] == n and r["mode"] == "pgbench"]
            cells = []
            for op in ("store", "get", "consume"):
                cells.append(" / ".join(fmt(med([lat(r, op, q) for r in recs]))
                                        for q in ("p50", "p99", "p999")))
            pg = " / ".join(fmt(med([lat(r, op, "mean") for r in bench]))
                            for op in ("store", "get", "consume"))
            out.append(f"| {n} | {' | '.join(cells)} | {pg} |")
        errors = sum((r.get("errors") or 0) for r in life if (r.get("errors") or 0) > 0)
        failed = [f"{r['mode']} N={r['clients']} round {r.get('round')}" for r in life
                  if r.get("errors") == -1]
        out.append("")
        out.append(f"Failed operations over all lifecycle runs: {errors}. "
                   f"Runs that did not complete: {', '.join(failed) or 'none'}.")
        out.append("")
        out.append("Where the time goes, lifecycles/s by client (medians; ratio to pgbench of the same round):")
        out.append("")
        modes = [m for m in ("pgbench", "pgbench-least", "conn", "lite", "pool", "shared",
                             "store", "protected")
                 if any(r["mode"] == m for r in life)]
        out.append("| N | " + " | ".join(modes) + " |")
        out.append("|---:|" + "---:|" * len(modes))
        for n in ns:
            cells = []
            for mode in modes:
                recs = {r.get("round", 1): r for r in life if r["clients"] == n and r["mode"] == mode}
                base = {r.get("round", 1): r for r in life if r["clients"] == n and r["mode"] == "pgbench"}
                if not recs:
                    cells.append("–")
                    continue
                value = med([r.get("per_s") for r in recs.values()])
                ratio = med([recs[k]["per_s"] / base[k]["per_s"] for k in recs
                             if k in base and base[k].get("per_s") and recs[k].get("per_s") is not None])
                cells.append(fmt(value) if mode == "pgbench" else f"{fmt(value)} ({fmt(ratio, 2)})")
            out.append(f"| {n} | " + " | ".join(cells) + " |")
        prot = [r for r in life if r["mode"] == "protected"]
        if prot:
            out.append("")
            out.append("### ProtectedStore over PostgresStore (same rounds)")
            out.append("")
            out.append("| N | protected /s | store /s | protected/store | protected lifecycle p99 | store lifecycle p99 |")
            out.append("|---:|---:|---:|---:|---:|---:|")
            for n in sorted({r["clients"] for r in prot}):
                pr = {r.get("round", 1): r for r in prot if r["clients"] == n}
                st = {r.get("round", 1): r for r in life if r["clients"] == n and r["mode"] == "store"}
                ratio = med([pr[k]["per_s"] / st[k]["per_s"] for k in pr if k in st and st[k]["per_s"]])
                out.append(f"| {n} | {fmt(med([r['per_s'] for r in pr.values()]))} "
                           f"| {fmt(med([r['per_s'] for r in st.values()]))} | **{fmt(ratio, 3)}** "
                           f"| {fmt(med([lat(r, 'lifecycle', 'p99') for r in pr.values()]))} "
                           f"| {fmt(med([lat(r, 'lifecycle', 'p99') for r in st.values()]))} |")
        out.append("")

    over = [r for r in records if r.get("section") == "overload"]
    if over:
        out.append("### Overload: more callers than connections (medians over rounds)")
        out.append("")
        out.append("pgbench runs with as many clients as the store has connections; ratio = "
                   "store/pgbench of the same round. Fairness = slowest caller / mean caller "
                   "is checked by tests/connections.rs, not here.")
        out.append("")
        out.append("| connections | callers | mode | lifecycles/s | ratio to pgbench | lifecycle p50 / p99 µs | errors |")
        out.append("|---:|---:|---|---:|---:|---|---:|")
        for pair in sorted({(r["connections"], r["callers"]) for r in over}):
            recs = [r for r in over if (r["connections"], r["callers"]) == pair]
            base = {r.get("round", 1): r for r in recs if r["mode"] == "pgbench"}
            for mode in ("pgbench", "pgbench-least", "store", "shared", "lite"):
                mine = {r.get("round", 1): r for r in recs if r["mode"] == mode}
                if not mine:
                    continue
                ratio = med([mine[k]["per_s"] / base[k]["per_s"] for k in mine
                             if k in base and base[k].get("per_s") and mine[k].get("per_s")])
                p = " / ".join(fmt(med([lat(r, "lifecycle", q) for r in mine.values()]))
                               for q in ("p50", "p99"))
                errors = sum(max(r.get("errors") or 0, 0) for r in mine.values())
                pg = mode.startswith("pgbench")
                out.append(f"| {pair[0]} | {pair[0] if pg else pair[1]} | {mode} "
                           f"| {fmt(med([r.get('per_s') for r in mine.values()]))} "
                           f"| {'–' if mode == 'pgbench' else '**' + fmt(ratio, 2) + '**'} | {p} | {errors} |")
        out.append("")

    pool = [r for r in records if r.get("section") == "pooler"]
    if pool:
        rounds = max(r.get("round", 1) for r in pool)
        seconds = pool[0].get("run_seconds")
        out.append(f"### Behind a pooler: PgBouncer in transaction mode ({rounds} interleaved rounds "
                   f"of {seconds} s, medians)")
        out.append("")
        out.append("Each row: the store and pgbench through the same PgBouncer (N server connections), "
                   "ratio = store/pgbench of the same round. Round trips per operation: default mode 1 "
                   "(pgbench -M prepared: 1); pooler mode 4 (`BEGIN; SET LOCAL`, Parse + Describe, "
                   "Bind + Execute, `COMMIT`; pgbench -M extended: 1, autocommitted). Counted by "
                   "tests/statements.rs.")
        out.append("")
        out.append("| PgBouncer | N | store mode | store /s | pgbench | pgbench /s | ratio | "
                   "lifecycle p50 / p99 µs store | same, pgbench | errors |")
        out.append("|---|---:|---|---:|---|---:|---:|---|---|---:|")
        for bouncer in sorted({str(r.get("bouncer")) for r in pool}, reverse=True):
            for n in sorted({r["clients"] for r in pool if str(r.get("bouncer")) == bouncer}):
                recs = [r for r in pool if str(r.get("bouncer")) == bouncer and r["clients"] == n]
                base = {r.get("round", 1): r for r in recs if r["mode"] == "pgbench"}
                protocol = next(iter(recs)).get("protocol")
                # One row per client mode (store, pooler, conn, lite, ...), in the order run.
                modes = list(dict.fromkeys(r["mode"] for r in recs if r["mode"] != "pgbench"))
                for mode in modes:
                    out.append(pooler_row(bouncer, n, mode, protocol, base,
                                          {r.get("round", 1): r for r in recs if r["mode"] == mode}))
        out.append("")

    strace = [r for r in records if r.get("section") == "strace"]
    if strace:
        out.append("### System calls and client CPU per lifecycle (N = 4)")
        out.append("")
        out.append("| client | sendto | recvfrom | epoll_wait | futex | all syscalls | client CPU µs (user + sys) |")
        out.append("|---|---:|---:|---:|---:|---:|---:|")
        for r in strace:
            p = r["per_lifecycle"]
            cpu = next((c for c in records if c.get("section") == "cpu" and c.get("who") == r.get("who")), None)
            cpu_text = "–"
            if cpu and cpu.get("count"):
                us = (cpu["client_user_s"] + cpu["client_sys_s"]) * 1e6 / cpu["count"]
                cpu_text = (f"{us:.0f} ({cpu['client_user_s'] * 1e6 / cpu['count']:.0f} + "
                            f"{cpu['client_sys_s'] * 1e6 / cpu['count']:.0f})")
            out.append(f"| {r.get('who')} | {p['sendto']} | {p['recvfrom']} | {p['epoll_wait']} "
                       f"| {p['futex']} | {r['total_per_lifecycle']} | {cpu_text} |")
        out.append("")

    cleanup = [r for r in records if r.get("section") == "cleanup"]
    if cleanup:
        rows = cleanup[0].get("rows_removed")
        out.append(f"### Cleanup: one pass over {fmt(rows)} expired rows, beside lifecycle traffic "
                   f"({cleanup[0].get('clients')} clients, paced at {cleanup[0].get('rate', '?')}/s)")
        out.append("")
        out.append("| batch size | rows/s | pass s | ms/batch | lifecycle p50 / p99 without | "
                   "with | store p99 without / with | consume p99 without / with | failed passes |")
        out.append("|---:|---:|---:|---:|---|---|---|---|---:|")
        for r in cleanup:
            wo, wi = r["without"], r["with"]
            out.append(
                f"| {r['batch_size']} | {fmt(r['rows_per_s'])} | {r['pass_seconds']} | {r['ms_per_batch']} "
                f"| {fmt(lat(wo, 'lifecycle', 'p50'))} / {fmt(lat(wo, 'lifecycle', 'p99'))} "
                f"| {fmt(lat(wi, 'lifecycle', 'p50'))} / {fmt(lat(wi, 'lifecycle', 'p99'))} "
                f"| {fmt(lat(wo, 'store', 'p99'))} / {fmt(lat(wi, 'store', 'p99'))} "
                f"| {fmt(lat(wo, 'consume', 'p99'))} / {fmt(lat(wi, 'consume', 'p99'))} "
                f"| {r['failed_passes']} |")
        out.append("")

    soak = [r for r in records if r.get("section") == "soak" and "t" in r]
    if soak:
        out.append("### Soak")
        out.append("")
        out.append("| minute | lifecycles/s | table + indexes (MB) | live tuples | dead tuples | autovacuums | cleanup rows (cumulative) |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|")
        for r in soak:
            out.append(f"| {r['t'] / 60:.0f} | {fmt(r.get('lifecycles_per_s'))} "
                       f"| {r['table_bytes'] / 1e6:.1f} | {fmt(r.get('n_live_tup'))} "
                       f"| {fmt(r.get('n_dead_tup'))} | {r.get('autovacuum_count')} "
                       f"| {fmt(r.get('cleanup_rows'))} |")
        first, last = soak[0].get("lifecycles_per_s"), soak[-1].get("lifecycles_per_s")
        if first:
            out.append("")
            out.append(f"Last minute / first minute: {last / first:.3f}.")
        out.append("")

    scale = [r for r in records if r.get("section") == "scale" and r.get("cmd") == "get-only"]
    if scale:
        out.append("### get_by_hash with few and many live rows (medians)")
        out.append("")
        out.append("| N | rows | lookups/s | p50 | p99 | p99.9 | p99 vs 1,000 rows |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|")
        for n in sorted({r["clients"] for r in scale}):
            small = None
            for rows in sorted({r["rows"] for r in scale}):
                recs = [r for r in scale if r["clients"] == n and r["rows"] == rows]
                p99 = med([lat(r, "get", "p99") for r in recs])
                if small is None:
                    small = p99
                out.append(f"| {n} | {fmt(rows)} | {fmt(med([r['per_s'] for r in recs]))} "
                           f"| {fmt(med([lat(r, 'get', 'p50') for r in recs]))} | {fmt(p99)} "
                           f"| {fmt(med([lat(r, 'get', 'p999') for r in recs]))} "
                           f"| {fmt(p99 / small if small else None, 2)} |")
        out.append("")
    print("\n".join(out))


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    command, rest = args[0], args[1:]
    if command == "append":
        cmd_append(rest[0], rest[1:])
    elif command == "pgbench":
        cmd_pgbench(*rest)
    elif command == "cpu":
        cmd_cpu(rest[1:] if rest and rest[0] == "--" else rest)
    elif command == "strace":
        cmd_strace(*rest)
    elif command == "markdown":
        cmd_markdown(rest[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
