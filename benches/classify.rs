//! Cost of classification per statement (issue 3, item 2).
//!
//! - `warm/*`: the statement's shape is already cached (the steady state of pgbench and of
//!   any application): target <= 2 us median.
//! - `cold/*`: a fresh classifier for every call, so every call misses: target <= 1.5x
//!   `parse/*`.
//! - `parse/*`: the baseline, a bare `sqlparser` parse of the same text.
//!
//! The pgbench statements are TPC-B's and `-S`'s as `-M simple` sends them (literals inlined).
//! The `orm_*` statements take the full parse path on a miss, so their cold figures show the
//! classifier's overhead over the parser itself.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use pgsplit::classify::{Classifier, ClassifierOptions};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

const STATEMENTS: &[(&str, &str)] = &[
    ("pgbench_begin", "BEGIN;"),
    (
        "pgbench_update_accounts",
        "UPDATE pgbench_accounts SET abalance = abalance + -4201 WHERE aid = 73512;",
    ),
    (
        "pgbench_select",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 73512;",
    ),
    (
        "pgbench_update_tellers",
        "UPDATE pgbench_tellers SET tbalance = tbalance + -4201 WHERE tid = 7;",
    ),
    (
        "pgbench_update_branches",
        "UPDATE pgbench_branches SET bbalance = bbalance + -4201 WHERE bid = 1;",
    ),
    (
        "pgbench_insert_history",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (7, 1, 73512, -4201, CURRENT_TIMESTAMP);",
    ),
    ("pgbench_end", "END;"),
    (
        "orm_django_session",
        "SELECT \"django_session\".\"session_key\", \"django_session\".\"session_data\", \"django_session\".\"expire_date\" FROM \"django_session\" WHERE (\"django_session\".\"expire_date\" > '2024-05-01T10:00:00+00:00'::timestamptz AND \"django_session\".\"session_key\" = 'q0x9d8f7g6h5j4k3') LIMIT 21",
    ),
    (
        "orm_rails_count",
        "SELECT COUNT(*) FROM \"posts\" WHERE \"posts\".\"user_id\" = $1",
    ),
    (
        "orm_hibernate_join",
        "select u1_0.id,p1_0.id,p1_0.title from users u1_0 left join posts p1_0 on u1_0.id=p1_0.user_id where u1_0.id=$1 and lower(p1_0.title) like $2",
    ),
    (
        "orm_cte",
        "WITH recent AS (SELECT * FROM orders WHERE created > now() - interval '1 day') SELECT count(*) FROM recent",
    ),
];

fn options() -> ClassifierOptions {
    ClassifierOptions {
        primary_tables: vec!["inventory".into()],
        ..ClassifierOptions::default()
    }
}

fn warm(c: &mut Criterion) {
    let classifier = Classifier::new(options());
    let mut group = c.benchmark_group("warm");
    for (name, sql) in STATEMENTS {
        classifier.classify(sql.as_bytes());
        group.bench_function(*name, |b| {
            b.iter(|| classifier.classify(black_box(sql.as_bytes())))
        });
    }
    group.finish();
}

fn cold(c: &mut Criterion) {
    let mut group = c.benchmark_group("cold");
    for (name, sql) in STATEMENTS {
        group.bench_function(*name, |b| {
            b.iter_batched(
                || Classifier::new(options()),
                |classifier| {
                    let class = classifier.classify(black_box(sql.as_bytes()));
                    // returned, so that dropping the classifier is not timed
                    (classifier, class)
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for (name, sql) in STATEMENTS {
        group.bench_function(*name, |b| {
            b.iter(|| Parser::parse_sql(&PostgreSqlDialect {}, black_box(sql)))
        });
    }
    group.finish();
}

criterion_group!(benches, warm, cold, parse);
criterion_main!(benches);
