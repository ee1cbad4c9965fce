-- tests/psql/basic.sql: a psql session run both through pgsplit and straight against the
-- primary (tests/psql_script.rs); the two outputs (stdout and stderr) must be identical.
-- Run with: psql -X -v ON_ERROR_STOP=0 -f tests/psql/basic.sql
-- The test drops psql_basic_t and psql_basic_u before each run.

\set ECHO all
\pset pager off

-- DDL and data
create table psql_basic_t (id int primary key, name text not null, note text, amount numeric(12,2));
\d psql_basic_t
insert into psql_basic_t values (1, 'one', null, 1.50), (2, 'two', 'zwei', 2.25), (3, 'drei', 'ünïcödé ✓', 3);
insert into psql_basic_t select g, 'gen ' || g, null, g * 0.01 from generate_series(4, 100) g;
select count(*), sum(amount), min(name), max(id) from psql_basic_t;
select * from psql_basic_t where id <= 3 order by id;
update psql_basic_t set note = 'updated' where id between 10 and 19;
delete from psql_basic_t where id > 90 returning id;

-- errors outside a transaction
select 1/0;
insert into psql_basic_t values (1, 'duplicate');
select no_such_column from psql_basic_t;
selec 1;
select 'still fine' as after_errors;

-- a transaction with an error, then ROLLBACK
begin;
insert into psql_basic_t values (200, 'in tx');
select 1/0;
insert into psql_basic_t values (201, 'after error');
select count(*) from psql_basic_t where id >= 200;
rollback;
select count(*) as after_rollback from psql_basic_t where id >= 200;

-- savepoints
begin;
insert into psql_basic_t values (300, 'kept');
savepoint s1;
insert into psql_basic_t values (301, 'undone');
insert into psql_basic_t values (300, 'duplicate');
rollback to savepoint s1;
insert into psql_basic_t values (302, 'after savepoint');
savepoint s2;
release savepoint s2;
commit;
select id, name from psql_basic_t where id >= 300 order by id;

-- psql's ON_ERROR_ROLLBACK uses savepoints behind each statement
\set ON_ERROR_ROLLBACK on
begin;
insert into psql_basic_t values (400, 'on_error_rollback 1');
insert into psql_basic_t values (400, 'duplicate');
insert into psql_basic_t values (401, 'on_error_rollback 2');
commit;
\set ON_ERROR_ROLLBACK off
select id, name from psql_basic_t where id >= 400 order by id;

-- a transaction committed, one rolled back explicitly, COMMIT of an aborted one
begin;
update psql_basic_t set amount = amount + 1 where id = 1;
commit;
begin;
update psql_basic_t set amount = amount + 100 where id = 1;
rollback;
begin;
select 1/0;
commit;
select amount from psql_basic_t where id = 1;

-- \copy from stdin, with data inline
create table psql_basic_u (k int, v text, d date);
\copy psql_basic_u from stdin
1	alpha	2024-01-01
2	beta with spaces	2024-02-29
3	\N	\N
4	tab\there	1999-12-31
\.
\copy psql_basic_u (k, v) from stdin with (format csv, header true)
k,v
5,"quoted, with comma"
6,"multi
line"
\.
-- server-side COPY FROM STDIN, with a bad row (the whole COPY fails)
copy psql_basic_u from stdin;
7	good	2020-01-01
oops	bad	2020-01-01
\.
copy psql_basic_u from stdin;
8	fine	2021-06-30
\.
select * from psql_basic_u order by k;
\copy psql_basic_u to stdout
\copy (select k, v from psql_basic_u where k < 3 order by k) to stdout with (format csv, header true)
copy (select id, name, amount from psql_basic_t where id < 6 order by id) to stdout;
copy (select id, note from psql_basic_t where id < 4 order by id) to stdout with (format csv, header true, force_quote *);
copy psql_basic_t (id, name) to stdout with (format binary);
copy no_such_table to stdout;

-- notices and warnings
do $$ begin raise notice 'hi'; end $$;
do $$ begin raise warning 'careful: %', 42; raise notice 'two %', 'notices'; end $$;
do $$ begin raise exception 'custom failure' using errcode = '22012', hint = 'a hint', detail = 'some detail'; end $$;
drop table if exists psql_basic_never_existed;
begin;
do $$ begin raise notice 'inside a transaction'; end $$;
select 1/0;
do $$ begin raise notice 'not reached'; end $$;
rollback;

-- settings
show search_path;
set search_path to pg_catalog, public;
show search_path;
set statement_timeout = '5min';
show statement_timeout;
set datestyle = 'German';
select '2024-03-01'::date as german_date;
reset datestyle;
select '2024-03-01'::date as iso_date;
reset all;
show search_path;
show statement_timeout;
set timezone = 'America/New_York';
select '2024-07-01 12:00:00+00'::timestamptz as new_york_time;
reset timezone;

-- multi-statement queries (one Query message)
select 1 as a \; select 2 as b \; select 'three' as c;
insert into psql_basic_t values (500, 'multi') \; select count(*) from psql_basic_t where id = 500 \; delete from psql_basic_t where id = 500;
select 1 \; select 1/0 \; select 3;

-- psql's own features
select 42 as answer \gset
\echo answer is :answer
select 'a' as x, 'b' as y \gx
select name from psql_basic_t where id = 2 \g
\pset format unaligned
select id, name from psql_basic_t where id < 4 order by id;
\pset format aligned

-- large results, through a pipe
select g, md5(g::text) from generate_series(1, 200000) g \g | tail -n 4
select g, md5(g::text) from generate_series(1, 200000) g \g | md5sum
select count(*), sum(length(m)) from (select md5(g::text) m from generate_series(1, 200000) g) s;
select repeat('x', 100000) = repeat('x', 100000) as big_value, length(repeat('é', 300000)) as big_length;

-- an error in the middle of a transaction, and the state after it
begin;
select count(*) from psql_basic_t;
select * from no_such_table;
select 1;
end;
select 'after end of failed transaction' as status;

-- cleanup
drop table psql_basic_u;
drop table psql_basic_t;
select 'done' as status;
