-- bench/mixed-write.sql: the write half of the 90/10 read/write workload of bench/run.sh
-- (pgbench -f mixed-read.sql@9 -f mixed-write.sql@1). One autocommit update of a random
-- account, the first statement of pgbench's TPC-B-like script.
\set aid random(1, 100000 * :scale)
\set delta random(-5000, 5000)
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
