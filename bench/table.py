#!/usr/bin/env python3
"""BENCHMARKS.md's table, from the raw.jsonl files of bench/run.sh runs:

    python3 bench/table.py bench/results/<run>/raw.jsonl [more raw.jsonl ...]

For every lifecycle measurement (sections lifecycle, overload, pooler, citus) and every
client mode, one row: its median lifecycles/s, the median of the same rounds' pgbench, the
median of the per-round ratios mode / pgbench, and mode / pgbench-least where the run had
pgbench-least. Rounds are paired by section, clients (or connections and callers), the
PgBouncer, the Citus target and the round number, so a ratio only ever divides figures
measured minutes apart on the same machine. The pgbench baseline of `markers-off` is
`pgbench-markers-off` (the same lifecycle with consumed markers off); of every other mode,
`pgbench` (the store's SQL). In the pooler section the pgbench runs through the same
PgBouncer as the mode (1.25 prepared, 1.18 extended)."""
import json
import statistics
import sys

BASELINES = ("pgbench", "pgbench-least", "pgbench-markers-off")


def group_of(record):
    section = record.get("section")
    if section == "overload":
        where = f"{record['callers']} callers / {record['connections']} connections"
    else:
        where = f"N = {record['clients']}"
    if section == "pooler":
        where = f"PgBouncer {record.get('bouncer')} ({record.get('protocol')}), {where}"
    if section == "citus":
        where = f"{record.get('target')}, {where}"
    return section, where


def main(paths):
    groups = {}
    for path in paths:
        for line in open(path):
            record = json.loads(line)
            if record.get("cmd") != "lifecycle" or record.get("section") not in (
                    "lifecycle", "overload", "pooler", "citus"):
                continue
            key = group_of(record)
            rounds = groups.setdefault(key, {})
            rounds.setdefault(record.get("round", 1), {})[record.get("mode", "pgbench")] = record
    print("| section | where | mode | mode /s | baseline | baseline /s | mode / baseline "
          "| pgbench-least /s | mode / least | rounds | errors |")
    print("|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|")
    for (section, where), rounds in groups.items():
        modes = list(dict.fromkeys(m for r in rounds.values() for m in r if m not in BASELINES))
        for mode in modes:
            base = "pgbench-markers-off" if mode == "markers-off" else "pgbench"
            mine, bases, ratios, leasts, least_ratios, errors = [], [], [], [], [], 0
            for by_mode in rounds.values():
                record = by_mode.get(mode)
                if not record or not record.get("per_s"):
                    continue
                errors += record.get("errors") or 0
                mine.append(record["per_s"])
                if by_mode.get(base, {}).get("per_s"):
                    bases.append(by_mode[base]["per_s"])
                    ratios.append(record["per_s"] / by_mode[base]["per_s"])
                if by_mode.get("pgbench-least", {}).get("per_s"):
                    leasts.append(by_mode["pgbench-least"]["per_s"])
                    least_ratios.append(record["per_s"] / by_mode["pgbench-least"]["per_s"])

            def med(values, digits=0):
                return f"{statistics.median(values):,.{digits}f}" if values else "–"

            print(f"| {section} | {where} | {mode} | {med(mine)} | {base} | {med(bases)} "
                  f"| {med(ratios, 2)} | {med(leasts)} | {med(least_ratios, 2)} "
                  f"| {len(mine)} | {errors} |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
