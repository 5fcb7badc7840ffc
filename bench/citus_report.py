#!/usr/bin/env python3
"""Markdown for bench/citus.sh and bench/citus-worker-failure.sh from their raw.jsonl.

    python3 bench/citus_report.py RAW.jsonl "LOAD AVERAGE AFTER"
"""
import json
import statistics
import sys


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=0):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def per_s(record):
    if record is None or record.get("errors") == -1:
        return None
    return record.get("per_s")


def ratios(mine, base):
    """Per-round ratios mine/base over the rounds both have."""
    out = []
    for key in sorted(mine):
        a, b = per_s(mine[key]), per_s(base.get(key))
        if a is not None and b:
            out.append(a / b)
    return out


def by_round(records, **match):
    return {r["round"]: r for r in records if all(r.get(k) == v for k, v in match.items())}


def header(env, load_after):
    return [
        f"{env.get('date', '?')}, {env.get('nproc', '?')} cores, {env.get('postgres', '?')}"
        + (f", {env['citus']}" if env.get("citus") else "")
        + (f"; {env['rounds']} interleaved rounds of {env['run_seconds']:g} s" if "rounds" in env else "")
        + f"; load average {env.get('load_before', '?')} before, {load_after} after.",
        "",
    ]


def citus(records):
    out = [
        "Lifecycles/s (median of rounds); store = loadgen --mode store (PostgresStore, own "
        "pool), pgbench = -M prepared bench/lifecycle.sql; every node on this one machine.",
        "",
        "| N | Citus store | Citus pgbench | store/pgbench (rounds) | plain store | plain pgbench "
        "| Citus/plain store | Citus/plain pgbench |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for n in sorted({r["clients"] for r in records}):
        cs = by_round(records, clients=n, target="coordinator", mode="store")
        cp = by_round(records, clients=n, target="coordinator", mode="pgbench")
        ps = by_round(records, clients=n, target="plain", mode="store")
        pp = by_round(records, clients=n, target="plain", mode="pgbench")
        ratio = ratios(cs, cp)
        out.append(
            f"| {n} | {fmt(med(per_s(r) for r in cs.values()))} "
            f"| {fmt(med(per_s(r) for r in cp.values()))} "
            f"| **{fmt(med(ratio), 3)}** ({', '.join(fmt(x, 2) for x in ratio)}) "
            f"| {fmt(med(per_s(r) for r in ps.values()))} "
            f"| {fmt(med(per_s(r) for r in pp.values()))} "
            f"| {fmt(med(ratios(cs, ps)), 3)} | {fmt(med(ratios(cp, pp)), 3)} |"
        )
    others = sorted({r["mode"] for r in records} - {"store", "pgbench"})
    for mode in others:
        out += ["", f"{mode} / pgbench in the same round, median (rounds): " + "; ".join(
            f"N = {n} on {target}: {fmt(med(ratio), 3)} ({', '.join(fmt(x, 2) for x in ratio)})"
            for n in sorted({r["clients"] for r in records})
            for target in ("coordinator", "plain")
            for ratio in [ratios(by_round(records, clients=n, target=target, mode=mode),
                                 by_round(records, clients=n, target=target, mode="pgbench"))]
            if ratio
        )]
    errors = [r for r in records if r.get("errors")]
    if errors:
        out += ["", f"Runs with errors: {len(errors)} (see raw.jsonl)."]
    return out


def sql_forms(records):
    out = [
        "pgbench -M prepared on plain PostgreSQL, lifecycles (or inserts)/s, median of rounds; "
        "old = 0.2's `WITH inserted AS (INSERT ... SELECT ... WHERE $2 > now() ...)`, new = "
        "today's `INSERT ... VALUES ... ON CONFLICT DO NOTHING RETURNING 1`.",
        "",
        "| workload | N | old | new | new/old (rounds) |",
        "|---|---|---|---|---|",
    ]
    for workload in ("insert", "lifecycle"):
        for n in sorted({r["clients"] for r in records}):
            old = by_round(records, clients=n, workload=workload, form="old")
            new = by_round(records, clients=n, workload=workload, form="new")
            if not old and not new:
                continue
            ratio = ratios(new, old)
            out.append(
                f"| {workload} | {n} | {fmt(med(per_s(r) for r in old.values()))} "
                f"| {fmt(med(per_s(r) for r in new.values()))} "
                f"| **{fmt(med(ratio), 3)}** ({', '.join(fmt(x, 2) for x in ratio)}) |"
            )
    return out


def worker_failure(record):
    t0 = record["started_unix"]
    stopped = record.get("worker_stopped_unix")
    started = record.get("worker_started_unix")
    rel = lambda t: "-" if t is None else f"{t - t0:.1f} s"  # noqa: E731
    out = [
        f"{record['clients']} clients for {record['seconds']:.0f} s, each looping store, "
        "get_by_hash, and two consume racing for the request, through the coordinator; "
        f"worker {record.get('worker', '?')} stopped (pg_ctl stop -m immediate) at "
        f"{rel(stopped)} and started again at {rel(started)} "
        f"(up again, accepting connections, at {rel(record.get('worker_up_unix'))}).",
        "",
        f"- acknowledged stores: {record['acked_stores']:,}; **lost: {record['lost_acked_stores']}**"
        f" (every acknowledged store read back in the table afterwards or not)",
        f"- handed out twice (two `Consumed` for one request): **{record['consumed_twice']}**",
        f"- failed stores: {record['failed_stores']:,}, of which in the table anyway "
        f"(committed, answer lost): {record['stored_despite_error']}",
        f"- consumed but the caller got an error (burned, never handed out): "
        f"{record['consumed_without_answer']}",
        f"- acknowledged, never consumed by the run, consumed at the check: "
        f"{record['consumed_at_check']}; unreadable at the check: {record['unreadable_at_check']}",
        "",
        "| errors | count | first | last |",
        "|---|---|---|---|",
    ]
    for error in record["errors"]:
        kind = " ".join(error["kind"].split()).replace("|", "\\|")
        out.append(f"| {kind} | {error['count']:,} | {rel(error['first_unix'])} "
                   f"| {rel(error['last_unix'])} |")
    clean, failed = record["clean_per_second"], record["failed_per_second"]
    out += [
        "",
        "Lifecycles per second without / with an error, second by second:",
        "",
        "```",
        " ".join(f"{i}:{c}/{f}" for i, (c, f) in enumerate(zip(clean, failed))),
        "```",
    ]
    return out


def main():
    raw, load_after = sys.argv[1], sys.argv[2]
    records = [json.loads(line) for line in open(raw) if line.strip()]
    env = next((r for r in records if r.get("cmd") == "env"), {})
    out = [f"# {env.get('kind', 'citus')}", ""] + header(env, load_after)
    kind = env.get("kind")
    if kind == "citus":
        out += citus([r for r in records if r.get("section") == "citus"])
    elif kind == "sql-forms":
        out += sql_forms([r for r in records if r.get("section") == "sql-forms"])
    for record in records:
        if record.get("cmd") == "worker-failure":
            out += worker_failure(record)
    print("\n".join(out))


if __name__ == "__main__":
    main()
