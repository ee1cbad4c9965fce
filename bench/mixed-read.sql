-- bench/mixed-read.sql: the read half of the 90/10 read/write workload of bench/run.sh
-- (pgbench -f mixed-read.sql@9 -f mixed-write.sql@1). One autocommit point read, as in
-- pgbench's built-in select-only script.
\set aid random(1, 100000 * :scale)
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
