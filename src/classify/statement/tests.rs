//! Unit tests for `crate::classify::statement`.

use super::*;
use crate::classify::lexer::canonicalize;

fn shape(sql: &str) -> Shape {
    let mut canon = Vec::new();
    let scan = canonicalize(sql.as_bytes(), true, &mut canon);
    assert_eq!(scan.result, Ok(()), "{sql}");
    classify(
        &canon,
        &Functions::new(&["app.bump"], &[]),
        &QualifiedNames::new(&["inventory"]),
    )
    .shape
}

fn class(sql: &str) -> Class {
    shape(sql).class
}

#[test]
fn keyword_and_parser_paths_agree_on_user_functions() {
    let functions = Functions::new(&["app.bump"], &[])
        .with_catalog(crate::classify::FunctionCatalog::from_rows([
            ("app", "add_order", "v"),
            ("app", "price", "s"),
        ]))
        .expect("a new catalog");
    let tables = QualifiedNames::default();
    for sql in [
        "SELECT add_order(0)",
        "SELECT app.add_order(0) FROM t",
        "SELECT price(0) FROM t",
        "SELECT * FROM t WHERE a IN (0) AND b = price(0)",
    ] {
        let mut canon = Vec::new();
        let _ = canonicalize(sql.as_bytes(), true, &mut canon);
        let toks = tokens(&canon);
        let rules = Rules {
            canon: &canon,
            functions: &functions,
            primary_tables: &tables,
            user_write: Cell::new(false),
            unknown_function: Cell::new(false),
        };
        let keyword = rules.calls(&toks).is_some();
        let sql = std::str::from_utf8(&canon).expect("ascii");
        let walked = walk::classify_query(sql, &functions, &tables).expect("parses");
        assert_eq!(keyword, walked.class == Class::Write, "{sql}");
        assert_eq!(rules.user_write.get(), walked.user_write, "{sql}");
    }
}

#[test]
fn statements_that_leave_untracked_state() {
    for sql in [
        "DO $$BEGIN EXECUTE 'SET ROLE app'; END$$",
        "do language plpgsql $$begin end$$",
        "CALL app.proc(1)",
        "LOAD 'auto_explain'",
        "RESET ALL",
        "reset role",
        "RESET SESSION AUTHORIZATION",
        "DISCARD ALL",
        "DISCARD TEMP",
        "SET ROLE app",
        "SET SESSION ROLE app",
        "SET LOCAL ROLE app",
        "SET SESSION AUTHORIZATION app",
        "SET SESSION SESSION AUTHORIZATION app",
        "SELECT 1; SET ROLE app",
        "SET search_path = a; DO $$ $$",
    ] {
        assert!(shape(sql).leaves_state, "{sql}");
    }
    for sql in [
        "SELECT 1",
        "SET search_path = a",
        "SET rolex = 1",
        "RESET search_path",
        "SELECT 'DO'",
        "SHOW role",
    ] {
        assert!(!shape(sql).leaves_state, "{sql}");
    }
}

#[test]
fn writes_to_relations_with_triggers_leave_state() {
    let functions = Functions::new::<&str>(&[], &[])
        .with_catalog(
            crate::classify::FunctionCatalog::from_rows([("app", "price", "s")])
                .with_firing_relations(["with_trigger", "Audit", "v_orders"]),
        )
        .expect("a new catalog");
    let tables = QualifiedNames::default();
    let shape = |sql: &str| {
        let mut canon = Vec::new();
        let _ = canonicalize(sql.as_bytes(), true, &mut canon);
        classify(&canon, &functions, &tables).shape
    };
    for sql in [
        "INSERT INTO with_trigger VALUES (1)",
        "insert into app.WITH_TRIGGER (a) values (1) returning *",
        "UPDATE \"with_trigger\" SET a = 1",
        "DELETE FROM t USING with_trigger WHERE t.a = with_trigger.a",
        "MERGE INTO with_trigger w USING s ON w.a = s.a WHEN MATCHED THEN DELETE",
        "COPY with_trigger FROM STDIN",
        "TRUNCATE \"Audit\"",
        "UPDATE v_orders SET a = 1",
        "WITH x AS (INSERT INTO with_trigger VALUES (1) RETURNING *) SELECT * FROM x",
        "EXPLAIN ANALYZE INSERT INTO with_trigger VALUES (1)",
        "SELECT 1; INSERT INTO with_trigger VALUES (1)",
        "INSERT INTO with_trigger VALUES (1); LISTEN x",
        "INSERT INTO U&\"w\\0069th_trigger\" VALUES (1)",
        // Conservative: a locking read is a write, and fires nothing.
        "SELECT a FROM with_trigger FOR UPDATE",
    ] {
        assert!(shape(sql).leaves_state, "{sql}");
    }
    for sql in [
        "SELECT * FROM with_trigger",
        "EXPLAIN INSERT INTO with_trigger VALUES (1)",
        "COPY with_trigger TO STDOUT",
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET role = 'x'",
        "TRUNCATE audit",
        "UPDATE pgbench_accounts SET abalance = abalance + 0 WHERE aid = 0",
        "INSERT INTO t VALUES ('with_trigger')",
    ] {
        assert!(!shape(sql).leaves_state, "{sql}");
    }
    // Before the catalog is loaded, any relation may fire something, and any function
    // may be a user function; reads stay reads.
    let plain = Functions::new::<&str>(&[], &[]);
    for (sql, leaves_state) in [
        ("INSERT INTO pgbench_history VALUES (1)", true),
        ("SELECT add_order(1)", true),
        (
            "SELECT * FROM t WHERE a IN (SELECT app.price(b) FROM u)",
            true,
        ),
        ("SELECT * FROM with_trigger", false),
        ("SELECT abalance FROM pgbench_accounts WHERE aid = 1", false),
    ] {
        let mut canon = Vec::new();
        let _ = canonicalize(sql.as_bytes(), true, &mut canon);
        let shape = classify(&canon, &plain, &tables).shape;
        assert_eq!(shape.leaves_state, leaves_state, "{sql}");
    }
}

const READ_PRIMARY: Class = Class::Read {
    primary_table: true,
};

#[test]
fn transactions() {
    assert_eq!(class("BEGIN"), Class::Begin { read_only: false });
    assert_eq!(class("begin work"), Class::Begin { read_only: false });
    assert_eq!(class("BEGIN READ ONLY"), Class::Begin { read_only: true });
    assert_eq!(
        class("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"),
        Class::Begin { read_only: true }
    );
    // A hot standby refuses serializable transactions.
    assert_eq!(
        class("START TRANSACTION ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE"),
        Class::Begin { read_only: false }
    );
    assert_eq!(
        class("START TRANSACTION READ ONLY, READ WRITE"),
        Class::Begin { read_only: false }
    );
    assert_eq!(class("BEGIN ISOLATION LEVEL CHAOS"), Class::Write);
    assert_eq!(class("START"), Class::Write);
    for end in [
        "COMMIT",
        "commit work",
        "END",
        "END TRANSACTION",
        "ABORT",
        "ROLLBACK",
        "ROLLBACK AND NO CHAIN",
        "PREPARE TRANSACTION 'x'",
    ] {
        assert_eq!(class(end), Class::End, "{end}");
    }
    for control in [
        "SAVEPOINT a",
        "RELEASE a",
        "RELEASE SAVEPOINT a",
        "ROLLBACK TO a",
        "ROLLBACK TO SAVEPOINT a",
        "ROLLBACK WORK TO SAVEPOINT a",
        "COMMIT AND CHAIN",
        "FETCH 10 FROM c",
        "CLOSE c",
    ] {
        assert_eq!(class(control), Class::TransactionControl, "{control}");
    }
    assert_eq!(class("COMMIT PREPARED 'x'"), Class::Write);
    assert_eq!(class("ROLLBACK PREPARED 'x'"), Class::Write);
    assert_eq!(class("COMMIT nonsense"), Class::Write);
}

#[test]
fn multi_statements() {
    assert_eq!(
        class("SELECT 1; SELECT 2;"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(class("SELECT 1; SELECT * FROM inventory"), READ_PRIMARY);
    assert_eq!(class("SELECT 1; DELETE FROM t"), Class::Write);
    assert_eq!(class("SELECT 1; BEGIN"), Class::Write);
    assert_eq!(class("BEGIN; SELECT 1; COMMIT"), Class::Write);
    assert_eq!(class("SELECT 1; LISTEN x"), Class::SessionBound);
    assert_eq!(class("SET search_path = a; SELECT 1"), Class::Write);
    assert_eq!(
        class("SHOW search_path; SELECT 1"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(
        class(";;"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(class("SELECT (1; 2)"), Class::Write);
    assert_eq!(class("SELECT 1)"), Class::Write);
}

#[test]
fn wrappers() {
    assert_eq!(
        class("EXPLAIN SELECT 1"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(class("EXPLAIN SELECT * FROM inventory"), READ_PRIMARY);
    assert_eq!(
        class("EXPLAIN INSERT INTO t VALUES (1)"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(
        class("EXPLAIN ANALYZE INSERT INTO t VALUES (1)"),
        Class::Write
    );
    assert_eq!(
        class("EXPLAIN ANALYZE VERBOSE SELECT 1"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(
        class("EXPLAIN (ANALYZE, BUFFERS) DELETE FROM t"),
        Class::Write
    );
    assert_eq!(
        class("EXPLAIN (FORMAT JSON) DELETE FROM t"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(class("EXPLAIN ANALYZE SELECT nextval('s')"), Class::Write);
    assert_eq!(class("EXPLAIN BEGIN"), Class::Write);
    assert_eq!(class("EXPLAIN"), Class::Write);
    assert_eq!(
        class("COPY (SELECT 1) TO STDOUT"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(
        class("COPY (SELECT * FROM t FOR UPDATE) TO STDOUT"),
        Class::Write
    );
    assert_eq!(
        class("COPY (DELETE FROM t RETURNING *) TO STDOUT"),
        Class::Write
    );
    assert_eq!(
        class("COPY t TO STDOUT"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(
        class("COPY public.inventory (a, b) TO stdout WITH (FORMAT csv)"),
        READ_PRIMARY
    );
    assert_eq!(class("COPY t FROM STDIN"), Class::Write);
    assert_eq!(class("COPY t TO '/tmp/x'"), Class::Write);
    assert_eq!(class("COPY t TO PROGRAM 'gzip'"), Class::Write);
    assert_eq!(
        class("DECLARE c CURSOR FOR SELECT 1"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(
        class("DECLARE c NO SCROLL CURSOR WITHOUT HOLD FOR SELECT 1"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(
        class("DECLARE c CURSOR WITH HOLD FOR SELECT 1"),
        Class::SessionBound
    );
    assert_eq!(
        class("DECLARE c CURSOR FOR SELECT * FROM t FOR UPDATE"),
        Class::Write
    );
    assert_eq!(
        class("TABLE t"),
        Class::Read {
            primary_table: false
        }
    );
    assert_eq!(class("TABLE ONLY public.inventory *"), READ_PRIMARY);
    assert_eq!(class("TABLE t FOR UPDATE"), Class::Write);
    assert_eq!(class("EXPLAIN TABLE inventory"), READ_PRIMARY);
    assert_eq!(
        class("EXPLAIN EXPLAIN EXPLAIN EXPLAIN EXPLAIN EXPLAIN SELECT 1"),
        Class::Write
    );
}

#[test]
fn session_statements() {
    for s in [
        "SET search_path TO a",
        "RESET ALL",
        "SHOW work_mem",
        "DISCARD ALL",
        "SET LOCAL x = 1",
    ] {
        assert_eq!(class(s), Class::Session, "{s}");
    }
    for s in [
        "LISTEN ch",
        "UNLISTEN *",
        "PREPARE p AS SELECT 1",
        "EXECUTE p(1)",
        "DEALLOCATE ALL",
        "CREATE TEMP TABLE t (a int)",
        "CREATE GLOBAL TEMPORARY TABLE t (a int)",
        "CREATE OR REPLACE TEMP VIEW v AS SELECT 1",
        "CREATE TEMPORARY SEQUENCE s",
        "CREATE TABLE pg_temp.t (a int)",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_lock(1, 2)",
        "INSERT INTO t VALUES (pg_advisory_lock(1))",
    ] {
        assert_eq!(class(s), Class::SessionBound, "{s}");
    }
}

#[test]
fn writes() {
    for s in [
        "INSERT INTO t VALUES (1)",
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "TRUNCATE t",
        "CREATE TABLE t (a int)",
        "CREATE UNLOGGED TABLE t (a int)",
        "DO $$ BEGIN END $$",
        "CALL p(1)",
        "VACUUM ANALYZE t",
        "CHECKPOINT",
        "NOTIFY ch",
        "LOCK TABLE t",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT * FROM t FOR KEY SHARE OF t",
        "SELECT app.bump(1)",
        "SELECT t.bump FROM t",
        "SELECT t.\"bump\" FROM t",
        "SELECT bump(1)",
        "SELECT pg_advisory_xact_lock(1)",
        "SELECT U&\"\\006Eextval\"('s')",
        "WITH x AS (INSERT INTO t DEFAULT VALUES RETURNING *) SELECT * FROM x",
        "a_very_long_unknown_keyword_here",
        "42",
    ] {
        assert_eq!(class(s), Class::Write, "{s}");
    }
}
