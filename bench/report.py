#!/usr/bin/env python3
"""bench/report.py: turn the raw results of bench/run.sh into bench/results/RESULTS.md and charts.

Python 3 standard library only. Input:
  --raw FILE        TSV, one line per pgbench run (header: round workload target position
                    clients status tps lat_avg_ms p50_us p99_us failed errors first_error
                    reads_replica reads_primary cpu_us_per_tx); "-" marks a missing value,
                    status is
                    ok / errors / fail / timeout / n/a
  --meta FILE       TSV of key<TAB>value: machine facts, versions, parameters
  --import-md FILE  optional Markdown section written by bench/import.sh (bulk import)
  --cost FILE       optional table written by bench/cost.sh (system calls, context switches
                    and instructions per transaction)
Output:
  --out FILE        RESULTS.md
  --charts DIR      throughput.png and latency.png (gnuplot; skipped with a note if missing)
"""

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys

# Display order and descriptions.
TARGETS = {
    "direct": "the primary, no proxy",
    "haproxy": "HAProxy, mode tcp, to the primary (one proxy hop, no pooling)",
    "pgbouncer": "PgBouncer, transaction pooling to the primary",
    "pgpool": "Pgpool-II, streaming replication, reads balanced over the replicas",
    "pgsplit": "pgsplit, transaction pooling, reads routed to the replicas",
    "pgsplit-norouting": "pgsplit with routing off: transaction pooling only, every statement to the primary",
    "pgsplit-time": "pgsplit with `read_your_writes = \"time\"` (the mixed workload only)",
}
WORKLOADS = {
    "select-simple": "`pgbench -S -M simple -c CLIENTS`",
    "select-prepared": "`pgbench -S -M prepared -c CLIENTS`",
    "tpcb": "TPC-B-like (pgbench's default script), `-M simple -c CLIENTS`",
    "mixed": "90/10 read/write: `-f bench/mixed-read.sql@9 -f bench/mixed-write.sql@1 -M simple -c CLIENTS`",
    "c1": "latency of one client: `-S -M simple -c 1 -j 1`, every transaction logged",
    "c500": "`-S -M simple -c BIG_CLIENTS -T BIG_DURATION`: many clients over pools of POOL_SIZE",
    "c500-prepared": "`-S -M prepared -c BIG_CLIENTS -T BIG_DURATION`: many clients over pools of POOL_SIZE, prepared statements",
}


def num(s):
    """A float, or None for '-' and other non-numbers."""
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def median(xs):
    return statistics.median(xs) if xs else None


class Cell:
    """All runs of one (workload, target)."""

    def __init__(self, runs):
        self.runs = runs
        self.na = bool(runs) and all(r["status"] == "n/a" for r in runs)
        measured = [r for r in runs if r["status"] != "n/a"]
        self.n = len(measured)
        self.ok = sum(1 for r in measured if r["status"] == "ok")
        tps = [num(r["tps"]) for r in measured]
        self.tps_all = [t for t in tps if t is not None]
        self.tps = median(self.tps_all)
        self.p50 = median([x for x in (num(r["p50_us"]) for r in measured) if x is not None])
        self.p99 = median([x for x in (num(r["p99_us"]) for r in measured) if x is not None])
        self.errors = sum(int(num(r["errors"]) or 0) for r in measured)
        self.failed = sum(int(num(r["failed"]) or 0) for r in measured)
        self.first_error = next(
            (r["first_error"] for r in measured if r["first_error"] not in ("", "-")), ""
        )
        self.note = runs[0]["first_error"] if self.na else ""
        # Reads a pgsplit target sent to a replica / to the primary (from its /metrics),
        # summed over the runs that have both; None when no run has them.
        counted = [(num(r.get("reads_replica")), num(r.get("reads_primary"))) for r in measured]
        counted = [(a, b) for a, b in counted if a is not None and b is not None]
        self.reads_replica = sum(a for a, _ in counted) if counted else None
        self.reads_primary = sum(b for _, b in counted) if counted else None
        # The proxy's CPU time per transaction (µs), median over the runs; None for direct.
        self.cpu = median([x for x in (num(r.get("cpu_us_per_tx")) for r in measured)
                           if x is not None])

    @property
    def replica_share(self):
        """Share of the reads a replica served, over all rounds; None if not counted."""
        if self.reads_replica is None or self.reads_replica + self.reads_primary == 0:
            return None
        return self.reads_replica / (self.reads_replica + self.reads_primary)

    @property
    def clean(self):
        """Measured, and every run finished without errors."""
        return self.n > 0 and self.ok == self.n and self.tps is not None


def fmt_tps(x):
    return "—" if x is None else f"{x:,.0f}"


def fmt_ms(us):
    return "—" if us is None else f"{us / 1000:.3f}"


def fmt_cpu(x):
    return "—" if x is None else f"{x:.1f}"


def cpu_ratio(cell, base):
    """Ratio of median CPU per transaction, between clean cells that both have it."""
    if (cell is None or base is None or not cell.clean or not base.clean
            or cell.cpu is None or base.cpu is None):
        return "—"
    return f"{cell.cpu / base.cpu:.2f}x"


def ratio(cell, base):
    """Ratio of median TPS, only between cells whose runs were all clean (a run that hit errors
    has clients that stopped early, so its TPS is not comparable)."""
    if cell is None or base is None or not cell.clean or not base.clean:
        return "—"
    return f"{cell.tps / base.tps:.2f}x"


def why(target, error):
    """The known reason behind an error, for the reader of RESULTS.md."""
    if target == "pgbouncer" and "prepared statement" in error:
        return (". PgBouncer 1.18 does not carry protocol-level prepared statements across "
                "server connections in transaction pooling (1.21 added that).")
    if target == "pgpool" and "too many clients" in error:
        return (". Pgpool-II serves one client per child process and has num_init_children "
                "of them (one pool's worth, see Configurations); it refuses the rest.")
    return ""


def load(args):
    with open(args.meta) as f:
        meta = dict(line.rstrip("\n").split("\t", 1) for line in f if "\t" in line)
    with open(args.raw, newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return meta, rows


def build_cells(meta, rows):
    targets = [t for t in meta["targets"].split() if t in TARGETS]
    workloads = [w for w in meta["workloads"].split() if w in WORKLOADS]
    cells = {}
    for w in workloads:
        for t in targets:
            cells[w, t] = Cell([r for r in rows if r["workload"] == w and r["target"] == t])
    return targets, workloads, cells


def check_targets(cells):
    """The pgsplit targets of issue 5: (what, measured, PASS/MISS/not measured)."""
    out = []

    def get(w, t):
        c = cells.get((w, t))
        return c if c is not None and c.n > 0 else None

    def ratio_check(w, base, need, label):
        c, b = get(w, "pgsplit"), get(w, base)
        if c is None or b is None or c.tps is None:
            out.append((label, "not measured", "n/a"))
        elif not b.clean:
            out.append((label, f"{base} had errors in every comparison run; no ratio", "n/a"))
        else:
            r = c.tps / b.tps
            verdict = "PASS" if r >= need and c.clean else "MISS"
            extra = "" if c.clean else f" (pgsplit had {c.errors} error lines)"
            out.append((label, f"{r:.2f}x{extra}", verdict))

    def zero_errors_check(workload, label):
        c = get(workload, "pgsplit")
        if c is None:
            out.append((label, "not measured", "n/a"))
        else:
            out.append((label, f"{c.errors} error lines, {c.failed} failed, {c.ok}/{c.n} runs ok",
                        "PASS" if c.clean else "MISS"))

    ratio_check("select-simple", "pgbouncer", 1.0, "`-S` simple: at least 1.0x PgBouncer")
    ratio_check("select-simple", "pgpool", 1.8, "`-S` simple: at least 1.8x Pgpool-II")
    ratio_check("select-prepared", "direct", 0.55, "`-S` prepared: at least 0.55x direct")
    zero_errors_check("c500-prepared", "`-S` prepared works with many clients over few server "
                      "connections (c500-prepared: zero errors)")
    ratio_check("tpcb", "pgbouncer", 1.0, "TPC-B-like: at least 1.0x PgBouncer")
    c, d = get("c1", "pgsplit"), get("c1", "direct")
    label = "`-c 1`: at most 35 µs added to the median latency against direct"
    if c is None or d is None or c.p50 is None or d.p50 is None:
        out.append((label, "not measured", "n/a"))
    else:
        added = c.p50 - d.p50
        out.append((label, f"{added:+.0f} µs (p50 {c.p50:.0f} against {d.p50:.0f} µs)",
                    "PASS" if added <= 35 and c.clean else "MISS"))
    zero_errors_check("c500", "500 clients (c500): zero errors")
    return out


def check_cpu_targets(cells):
    """The targets of issue 12 (CPU per transaction and throughput against PgBouncer):
    (what, measured, PASS/MISS/n/a)."""
    out = []

    def measured(w, t):
        c = cells.get((w, t))
        return c if c is not None and c.n > 0 else None

    def check(w, t, base, need, label, cpu):
        c, b = measured(w, t), measured(w, base)
        if c is None or b is None:
            out.append((label, "not measured", "n/a"))
            return
        if not c.clean or not b.clean:
            out.append((label, "runs with errors; no ratio", "MISS" if not c.clean else "n/a"))
            return
        if cpu:
            if c.cpu is None or b.cpu is None:
                out.append((label, "no CPU figure", "n/a"))
                return
            r = c.cpu / b.cpu
            out.append((label, f"{r:.2f}x ({c.cpu:.1f} against {b.cpu:.1f} µs)",
                        "PASS" if r <= need else "MISS"))
        else:
            r = c.tps / b.tps
            out.append((label, f"{r:.2f}x", "PASS" if r >= need else "MISS"))

    for t, what in (("pgsplit-norouting", "routing off"), ("pgsplit", "routing on")):
        check("select-simple", t, "pgbouncer", 0.9, f"`-S` simple, {what}: CPU per "
              "transaction at most 0.9x PgBouncer's", cpu=True)
    check("tpcb", "pgsplit", "pgbouncer", 1.0, "TPC-B: CPU per transaction at most "
          "PgBouncer's", cpu=True)
    for w, what in (("select-simple", "`-S` simple"), ("tpcb", "TPC-B"), ("mixed", "90/10 mix"),
                    ("c500", "500 clients")):
        check(w, "pgsplit", "pgbouncer", 1.0, f"{what}: throughput at least 1.0x PgBouncer",
              cpu=False)
    check("select-prepared", "pgsplit", "direct", 0.65, "`-S` prepared: at least 0.65x direct",
          cpu=False)
    return out


def write_markdown(args, meta, rows, targets, workloads, cells, charts_ok):
    rounds, duration = int(meta["rounds"]), int(meta["duration"])
    smoke = rounds < 3 or duration < 10
    subst = lambda s: (s.replace("BIG_CLIENTS", meta["big_clients"])
                        .replace("BIG_DURATION", meta["big_duration"])
                        .replace("POOL_SIZE", meta["pool_size"])
                        .replace("CLIENTS", meta["clients"]))
    L = []
    L.append("# pgsplit benchmark results\n")
    L.append("Generated by `bench/run.sh` (do not edit by hand; rerun the script). Raw runs: "
             "[results.tsv](results.tsv).\n")
    if smoke:
        L.append(f"> **Smoke run, not a measurement.** {rounds} round(s) of {duration} s on a "
                 "shared machine: these figures only show that every target and workload runs "
                 "end to end. The full run (`bench/run.sh`, 3 rounds of 15 s) is to be done on "
                 "a quiet machine.\n")
    L.append("## Machine and versions\n")
    facts = [
        ("date", meta.get("date")), ("CPU", f"{meta.get('nproc')} cores, {meta.get('cpu')}"),
        ("memory", meta.get("memory")), ("kernel", meta.get("kernel")), ("OS", meta.get("os")),
        ("load average (1/5/15 min) at start / end",
         f"{meta.get('loadavg_start', '?')} / {meta.get('loadavg_end', '?')}"),
        ("PostgreSQL", meta.get("postgresql")), ("pgbench", meta.get("pgbench")),
        ("PgBouncer", meta.get("pgbouncer")), ("Pgpool-II", meta.get("pgpool")),
        ("HAProxy", meta.get("haproxy")), ("pgsplit", meta.get("pgsplit")),
    ]
    L.append("| | |\n|---|---|")
    L += [f"| {k} | {v} |" for k, v in facts if v]
    L.append("")
    L.append("Everything runs on this one machine: the primary, both replicas, the proxy and "
             "pgbench share its cores.\n")

    L.append("## Parameters\n")
    L.append(f"- {rounds} round(s); each run `pgbench -n -T {duration} -j {meta['threads']}`, "
             f"scale {meta['scale']}, as user `app` (SCRAM) on database `bench`. The order of "
             "the targets rotates by one every round.")
    L.append(f"- The 500-client workloads run `-T {meta['big_duration']}` (at least "
             "`BIG_MIN_DURATION`, because pgbench's clock includes connecting its clients).")
    L.append(f"- `CLIENTS={meta['clients']}`, `BIG_CLIENTS={meta['big_clients']}`, pools of "
             f"`POOL_SIZE={meta['pool_size']}` server connections; the primary's max_connections "
             f"is {meta['max_connections']}.")
    L.append(f"- Latency percentiles come from pgbench's per-transaction log (`-l`), sampled at "
             f"{meta['log_sampling']} except `c1`, which logs every transaction; p50/p99 below "
             "are medians over the rounds. TPS is pgbench's figure without connection time.")
    L.append("- Targets:")
    L += [f"  - `{t}`: {TARGETS[t]}" for t in targets]
    L.append("- Workloads:")
    L += [f"  - `{w}`: {subst(WORKLOADS[w])}" for w in workloads]
    L.append("- How each target is configured: see [Configurations](#configurations).\n")

    L.append("## Summary: pgsplit targets (issue 5)\n")
    L.append("Ratios of median TPS from this run.\n")
    L.append("| target | measured | verdict |\n|---|---|---|")
    for what, measured, verdict in check_targets(cells):
        v = {"PASS": "**PASS**", "MISS": "**MISS**"}.get(verdict, verdict)
        L.append(f"| {what} | {measured} | {v} |")
    L.append("")
    L.append("## Summary: CPU per transaction (issue 12)\n")
    L.append("Medians of this run; the proxy's CPU per transaction is its processes' CPU time "
             "(user + system, all threads and children, from `/proc`) over the run divided by "
             "the transactions pgbench counted.\n")
    L.append("| target | measured | verdict |\n|---|---|---|")
    for what, measured, verdict in check_cpu_targets(cells):
        v = {"PASS": "**PASS**", "MISS": "**MISS**"}.get(verdict, verdict)
        L.append(f"| {what} | {measured} | {v} |")
    L.append("")
    if smoke:
        L.append("Verdicts from a smoke run say nothing about performance.\n")

    if charts_ok:
        L.append("## Charts\n")
        L.append("![median TPS by workload and target](charts/throughput.png)\n")
        L.append("![c1 latency by target](charts/latency.png)\n")

    L.append("## Results by workload\n")
    L.append("TPS: median over the rounds, spread is min–max. Latency in ms. CPU: the proxy's "
             "CPU time per transaction in µs (median over the rounds; none for direct). Errors: pgbench "
             "error lines plus failed transactions over all rounds. Ratios are of median TPS, "
             "shown only when both sides ran without errors. A TPS figure in *italics* comes from "
             "runs with errors (pgbench's aborted clients stop early) and is not comparable.\n")
    notes = []
    for w in workloads:
        L.append(f"### {w}\n")
        L.append(subst(WORKLOADS[w]) + "\n")
        L.append("| target | median TPS | spread | p50 ms | p99 ms | CPU µs/tx | runs ok | errors | "
                 "vs direct | vs PgBouncer | CPU vs PgBouncer |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for t in targets:
            c = cells[w, t]
            if not c.runs:  # pgsplit-time outside the mixed workload
                continue
            if c.na:
                L.append(f"| {t} | n/a | | | | | | | | | |")
                notes.append(f"`{w}` / `{t}`: {c.note}")
                continue
            spread = "—" if not c.tps_all else f"{min(c.tps_all):,.0f}–{max(c.tps_all):,.0f}"
            tps = fmt_tps(c.tps) if c.clean or c.tps is None else f"*{fmt_tps(c.tps)}*"
            bouncer = cells.get((w, 'pgbouncer'))
            L.append(f"| {t} | {tps} | {spread} | {fmt_ms(c.p50)} | {fmt_ms(c.p99)} | "
                     f"{fmt_cpu(c.cpu)} | {c.ok}/{c.n} | {c.errors + c.failed} | "
                     f"{ratio(c, cells.get((w, 'direct')))} | {ratio(c, bouncer)} | "
                     f"{cpu_ratio(c, bouncer)} |")
            if not c.clean and c.n:
                notes.append(f"`{w}` / `{t}`: {c.n - c.ok} of {c.n} run(s) not clean; first error: "
                             f"`{c.first_error or 'pgbench printed no TPS'}`{why(t, c.first_error)}")
        L.append("")
    if notes:
        L.append("## Errors and runs that could not be made\n")
        L += [f"- {n}" for n in notes]
        L.append("")

    L += read_your_writes_section(cells)
    L += cost_section(args.cost)

    if meta.get("pgsplit_routing"):
        L.append("pgsplit's `routing totals` over all its runs (where it sent transactions, "
                 f"by node and by reason): `{meta['pgsplit_routing']}`\n")

    L.append("## Bulk import\n")
    if args.import_md and os.path.exists(args.import_md):
        L.append("A read load through the proxy (a writer, clients reading their own writes, "
                 "plain readers; `examples/import_probe.rs`) while `pgbench -i` imports on the "
                 "primary, through pgsplit and through Pgpool-II with the same lag threshold "
                 "(`bench/import.sh`).\n")
        with open(args.import_md) as f:
            L.append(f.read().rstrip() + "\n")
    else:
        L.append("Not run (IMPORT_KINDS empty, or bench/import.sh failed: see its output).\n")

    L.append("## Configurations\n")
    L.append(CONFIG_NOTES.replace("POOL_SIZE", meta["pool_size"]).strip() + "\n")

    L.append("## All runs\n")
    L.append("<details><summary>every pgbench run, in the order it ran</summary>\n")
    L.append("| round | workload | pos | target | clients | status | TPS | p50 ms | p99 ms | CPU µs/tx | errors |")
    L.append("|---:|---|---:|---|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        L.append(f"| {r['round']} | {r['workload']} | {r['position']} | {r['target']} | "
                 f"{r['clients']} | {r['status']} | {fmt_tps(num(r['tps']))} | "
                 f"{fmt_ms(num(r['p50_us']))} | {fmt_ms(num(r['p99_us']))} | "
                 f"{fmt_cpu(num(r.get('cpu_us_per_tx')))} | {r['errors']} |")
    L.append("\n</details>\n")
    with open(args.out, "w") as f:
        f.write("\n".join(L))


def cost_section(path):
    """bench/cost.sh's table, as it wrote it: what one `-S` transaction costs inside pgsplit
    and PgBouncer, counted (system calls, switches, instructions) rather than timed."""
    if not path or not os.path.exists(path):
        return []
    with open(path) as f:
        text = f.read().rstrip()
    return ["## System calls and instructions per transaction (bench/cost.sh)\n",
            "Counted in the same session, after the matrix, by `bench/cost.sh` (pgsplit with "
            "routing off and on, PgBouncer; all in clear): system calls from `strace -c -f`, "
            "context switches and CPU time from `/proc`, user-space instructions (Ir) from "
            "callgrind. See [docs/benchmarks.md](../../docs/benchmarks.md) for what they mean.\n",
            "```", text, "```", ""]


def read_your_writes_section(cells):
    """The mixed workload through pgsplit with read_your_writes = "lsn" and = "time": TPS
    and the share of reads served by replicas (issue 10). Empty unless both ran."""
    lsn, time = cells.get(("mixed", "pgsplit")), cells.get(("mixed", "pgsplit-time"))
    if lsn is None or time is None or not lsn.n or not time.n:
        return []
    L = ['## Read-your-writes in the mixed workload: `"lsn"` against `"time"` (issue 10)\n']
    L.append("The `mixed` workload through two pgsplit instances of the same run, alike but for "
             "`routing.read_your_writes`. Reads counted from each one's `/metrics` before and "
             "after every run (`pgsplit_routed_by_reason_total`): *on replicas* are those with "
             "reason `read` or `read_only_transaction`; *on the primary* those a replica could "
             "have served but did not, with reason `pinned`, `awaiting_replay`, "
             "`awaiting_token`, `bad_token` or `no_replica`. Writes count in neither. Summed "
             "over the rounds.\n")
    L.append("| read_your_writes | median TPS | reads on replicas | reads on the primary | share on replicas |")
    L.append("|---|---:|---:|---:|---:|")
    for mode, c in (("lsn", lsn), ("time", time)):
        tps = fmt_tps(c.tps) if c.clean or c.tps is None else f"*{fmt_tps(c.tps)}*"
        if c.replica_share is None:
            L.append(f"| `{mode}` | {tps} | — | — | — |")
        else:
            L.append(f"| `{mode}` | {tps} | {c.reads_replica:,.0f} | {c.reads_primary:,.0f} | "
                     f"{100 * c.replica_share:.1f}% |")
    if lsn.replica_share is not None and time.replica_share is not None:
        verdict = "**PASS**" if lsn.replica_share > time.replica_share else "**MISS**"
        L.append(f"\n`\"lsn\"` serves a higher share of reads from replicas than `\"time\"`: "
                 f"{verdict}\n")
    else:
        L.append("")
    return L


CONFIG_NOTES = """
All configs are generated by `bench/run.sh` under `$PGSPLIT_CLUSTER_DIR/bench/<target>/`,
each target on its own loopback port, all as user `app` / `secret`.

- **direct**: 127.0.0.1:15432, the primary. Every client has its own backend, so the
  500-client workloads exceed max_connections and are not run (n/a).
- **haproxy**: `mode tcp`, one `server` line to the primary, client/server timeouts 1 h. A
  byte relay: authentication is the primary's own, every client has its own backend, so it
  is n/a for 500 clients like direct.
- **pgbouncer**: `pool_mode = transaction`, `default_pool_size = POOL_SIZE`,
  `max_client_conn = 600`, `auth_type = scram-sha-256` with a plaintext userlist
  (`"app" "secret"`), so it logs in to the primary with SCRAM itself; runs as the postgres
  OS user (`-u postgres`). PgBouncer 1.18 does not carry protocol-level prepared statements
  across server connections in transaction pooling (that came in 1.21), so `-M prepared`
  through it fails as soon as a client lands on a server connection that has not seen its
  statement.
- **pgpool**: `backend_clustering_mode = 'streaming_replication'`, backends primary
  (`backend_weight0 = 0`) and the two replicas (weight 1), `load_balance_mode = on` (session
  level: each client is given one replica when it connects), `sr_check_period = 1` as
  `app`, `delay_threshold = 16777216` (16MB, the same as pgsplit's `max_replica_lag`),
  health check every 5 s, no failover (`DISALLOW_TO_FAILOVER` on every backend,
  `failover_on_backend_error = off`, no `failover_command`). Authentication:
  `enable_pool_hba = on` with `host all all 127.0.0.1/32 scram-sha-256` in pool_hba.conf and
  `app:TEXTsecret` in pool_passwd (clear text, "TEXT" prefix), from which Pgpool answers the
  client's SCRAM login and does SCRAM to each node. Pgpool-II is process-per-client:
  `num_init_children` = max(POOL_SIZE, CLIENTS) + 1 with `reserved_connections = 1` and
  `max_pool = 1`, so at most POOL_SIZE-ish connections per node and no more than that many
  clients at once. Clients beyond that are refused ("Sorry, too many clients already")
  rather than left waiting in the listen backlog, so the 500-client workloads cannot run
  through it: 500 children would need 500 connections to each node, more than the nodes'
  max_connections.
- **pgsplit**: `config.toml` as shipped (routing on, `read_your_writes = "lsn"`,
  `max_replica_lag = 16MB`, `worker_threads = 1`, `max_client_conn = 1000`) with
  `pool.max_size = POOL_SIZE` per (node, database, user) pool, and its own listen and
  metrics ports. Reads go to the replicas, so it may use up to POOL_SIZE server connections
  on each of them. After a client writes, its reads go to the primary until a replica has
  replayed the write (read-your-writes by LSN).
- **pgsplit-norouting**: the same as pgsplit with `routing.enabled = false`: every
  statement goes to the primary, so it does what PgBouncer does (transaction pooling, one
  node) and the two compare like for like.
- **pgsplit-time**: the same with `read_your_writes = "time"` (`pin_after_write = 5s`):
  after a client writes, its reads go to the primary for 5 s, which in the `mixed`
  workload keeps nearly every client on the primary. Run in the `mixed` workload only.
"""


def write_charts(args, targets, workloads, cells):
    """throughput.png (grouped bars, median TPS with min-max error bars) and latency.png
    (c1 p50 and p99 per target). Returns False when gnuplot is missing."""
    if shutil.which("gnuplot") is None:
        print("report.py: gnuplot not found; no charts", file=sys.stderr)
        return False
    os.makedirs(args.charts, exist_ok=True)
    data = os.path.join(args.charts, "throughput.dat")
    with open(data, "w") as f:
        f.write("workload " + " ".join(f"{t} {t}_min {t}_max" for t in targets) + "\n")
        for w in workloads:
            vals = []
            for t in targets:
                c = cells[w, t]
                if not c.clean:  # errors or not run: no bar
                    vals += ["?", "?", "?"]
                else:
                    vals += [f"{c.tps:.0f}", f"{min(c.tps_all):.0f}", f"{max(c.tps_all):.0f}"]
            f.write(w + " " + " ".join(vals) + "\n")
    lat = os.path.join(args.charts, "latency.dat")
    with open(lat, "w") as f:
        f.write("target p50 p99\n")
        for t in targets:
            c = cells.get(("c1", t))
            p50 = "?" if c is None or c.p50 is None else f"{c.p50:.0f}"
            p99 = "?" if c is None or c.p99 is None else f"{c.p99:.0f}"
            f.write(f"{t} {p50} {p99}\n")
    plots = ", ".join(
        f"'{data}' using {2 + 3 * i}:{3 + 3 * i}:{4 + 3 * i}{':xtic(1)' if i == 0 else ''} title '{t}'"
        for i, t in enumerate(targets))
    has_latency = any(cells.get(("c1", t)) is not None and cells[("c1", t)].p50 is not None
                      for t in targets)
    script = f"""
set terminal pngcairo size 1200,600 font ',10'
set datafile missing '?'
set key autotitle columnheader outside top center horizontal
set style data histogram
set style histogram errorbars gap 1 lw 1
set style fill solid 0.85 border -1
set ylabel 'median TPS (error bars: min-max over rounds)'
set yrange [0:*]
set grid ytics
set title "Throughput by workload and target (bench/run.sh)\\nno bar: not applicable, or the runs had errors (see RESULTS.md)"
set output '{os.path.join(args.charts, 'throughput.png')}'
plot {plots}
"""
    if has_latency:  # only when the c1 workload ran
        script += f"""
set output '{os.path.join(args.charts, 'latency.png')}'
set terminal pngcairo size 800,500 font ',10'
set style histogram clustered gap 1
set logscale y
set yrange [10:*]
set ylabel 'latency, microseconds, log scale (median over rounds)'
set title 'c1: one client, -S simple, per-transaction latency'
plot '{lat}' using 2:xtic(1) title 'p50', '' using 3 title 'p99'
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=True)
    os.remove(data)
    os.remove(lat)
    return True


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raw", required=True)
    p.add_argument("--meta", required=True)
    p.add_argument("--import-md")
    p.add_argument("--cost")
    p.add_argument("--out", required=True)
    p.add_argument("--charts", required=True)
    args = p.parse_args()
    meta, rows = load(args)
    targets, workloads, cells = build_cells(meta, rows)
    charts_ok = write_charts(args, targets, workloads, cells)
    write_markdown(args, meta, rows, targets, workloads, cells, charts_ok)


if __name__ == "__main__":
    main()
