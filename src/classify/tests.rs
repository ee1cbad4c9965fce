//! Unit tests for `crate::classify`.

use super::*;

const READ: Class = Class::Read {
    primary_table: false,
};

fn classifier() -> Classifier {
    Classifier::new(ClassifierOptions {
        primary_tables: vec!["inventory".into()],
        write_functions: vec!["app.bump".into()],
        ..ClassifierOptions::default()
    })
}

#[test]
fn reads_of_the_nodes_own_state_go_to_the_primary() {
    let c = Classifier::new(ClassifierOptions::default());
    let primary = Class::Read {
        primary_table: true,
    };
    for sql in [
        "select gid from pg_prepared_xacts where database = $1",
        "SELECT count(*) FROM pg_catalog.pg_prepared_xacts",
        "select * from pg_locks l join pg_class c on c.oid = l.relation",
    ] {
        assert_eq!(c.classify(sql.as_bytes()).class, primary, "{sql}");
    }
    assert_eq!(c.classify(b"select * from pg_class").class, READ);
    assert_eq!(c.classify(b"select * from pg_stat_activity").class, READ);
}

#[test]
fn is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<Classifier>();
}

#[test]
fn text_over_the_bound_is_not_read_and_runs_on_the_primary() {
    let c = classifier();
    let pad = "x".repeat(MAX_CLASSIFIED);
    let big = format!("SELECT length('{pad}')");
    assert_eq!(c.classify(big.as_bytes()), Classification::UNKNOWN);
    let fits = format!("SELECT length('{}')", &pad[..MAX_CLASSIFIED - 100]);
    assert_eq!(c.classify(fits.as_bytes()).class, READ);
}

#[test]
fn only_cached_shapes_are_classified_without_parsing() {
    let c = classifier();
    let sql = b"SELECT abalance FROM pgbench_accounts WHERE aid = 1";
    assert_eq!(c.classify_cached(sql), None);
    assert_eq!(c.classify(sql).class, READ);
    let other_literal = b"SELECT abalance FROM pgbench_accounts WHERE aid = 2";
    assert_eq!(
        c.classify_cached(other_literal).map(|c| c.class),
        Some(READ)
    );
    let deep = format!("select {}1", "a+".repeat(MAX_NESTING + 1));
    assert_eq!(
        c.classify_cached(deep.as_bytes()),
        Some(Classification::UNKNOWN),
        "refusing takes no parsing"
    );
}

#[test]
fn text_that_may_nest_deeper_than_the_bound_is_not_parsed() {
    let c = classifier();
    // Each of these nests a level per term: parsed, 50,000 overflow a thread's stack.
    for term in ["a+", "a=1 or ", "not ", "("] {
        let deep = format!("select {}1", term.repeat(MAX_NESTING + 1));
        assert_eq!(
            c.classify(deep.as_bytes()),
            Classification::UNKNOWN,
            "{term}"
        );
    }
    let list = format!("select 1 where 1 in ({}1)", "1,".repeat(MAX_NESTING * 2));
    assert_eq!(
        c.classify(list.as_bytes()).class,
        READ,
        "a long list is flat"
    );
    let shallow = format!("select {}1", "a+".repeat(1000));
    assert_eq!(c.classify(shallow.as_bytes()).class, READ);
}

#[test]
fn literals_share_a_cache_entry() {
    let c = classifier();
    for aid in [1, 42, 99_999, 7] {
        let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {aid};");
        assert_eq!(c.classify(sql.as_bytes()).class, READ);
    }
    assert_eq!(
        c.stats(),
        CacheStats {
            hits: 3,
            misses: 1,
            entries: 1
        }
    );
}

#[test]
fn hint_is_per_call_not_cached() {
    let c = classifier();
    let hinted = c.classify(b"/* pgsplit:primary */ SELECT 1");
    assert_eq!(
        hinted,
        Classification {
            class: READ,
            hint_primary: true,
            leaves_state: false
        }
    );
    let plain = c.classify(b"SELECT 1");
    assert_eq!(plain, Classification::of(READ));
    assert_eq!(c.stats().hits, 1);
    let broken = c.classify(b"/* pgsplit:primary */ SELECT 'unterminated");
    assert_eq!(
        broken,
        Classification {
            class: Class::Write,
            hint_primary: true,
            leaves_state: true
        }
    );
}

#[test]
fn empty_and_comment_only_are_reads() {
    let c = classifier();
    assert_eq!(c.classify(b"").class, READ);
    assert_eq!(c.classify(b"  -- nothing\n").class, READ);
    assert_eq!(c.classify(b";").class, READ);
}

#[test]
fn backslash_ambiguity_is_a_write() {
    let c = classifier();
    // standard_conforming_strings on: a read of two strings; off: a string, then DELETE.
    let sql = b"SELECT '\\' , '; DELETE FROM t; --'";
    assert_eq!(c.classify(sql).class, Class::Write);
    // A backslash that means the same either way (LIKE escapes) is fine, and so is one
    // that makes the other reading invalid.
    assert_eq!(
        c.classify(b"SELECT * FROM t WHERE a LIKE '50\\%' ESCAPE '\\'")
            .class,
        READ
    );
    assert_eq!(
        c.classify(b"SELECT * FROM t WHERE a LIKE 'x\\_y%'").class,
        READ
    );
    assert_eq!(c.classify(b"SELECT E'\\''").class, READ);
}

#[test]
fn literal_contents_never_change_the_class() {
    let c = classifier();
    assert_eq!(c.classify(b"SELECT 'nextval(1)'").class, READ);
    assert_eq!(c.classify(b"SELECT $$; DELETE FROM t$$").class, READ);
    assert_eq!(c.classify(b"SELECT '; DELETE FROM t'").class, READ);
    assert_eq!(c.classify(b"SELECT nextval('s')").class, Class::Write);
    assert_eq!(c.classify(b"SELECT \"a;b\" FROM t").class, READ);
    assert_eq!(c.classify(b"SELECT 1 /* ; DELETE FROM t */").class, READ);
}

#[test]
fn set_config_pins_wherever_it_is_called() {
    let c = classifier();
    let class = |sql: &str| c.classify(sql.as_bytes()).class;
    for sql in [
        "SELECT set_config('a.b', '1', false)",
        "select PG_CATALOG.Set_Config /* x */ ('a.b', '1', false)",
        r#"select 1; select "set_config"('a.b', '1', true)"#,
        "SELECT * FROM t WHERE set_config('a.b', '1', true) IS NOT NULL",
    ] {
        assert_eq!(class(sql), Class::SessionBound, "{sql}");
    }
    for sql in [
        "SELECT 'set_config(1)'",
        "SELECT 1 /* set_config( */ -- set_config(\n",
        "SELECT set_config FROM t",
        "SELECT $$set_config($$",
        "SELECT my_set_config(1)",
    ] {
        assert_ne!(class(sql), Class::SessionBound, "{sql}");
    }
}

#[test]
fn configured_names() {
    let c = classifier();
    assert_eq!(c.classify(b"SELECT app.bump(1)").class, Class::Write);
    assert_eq!(c.classify(b"SELECT other.bump(1)").class, READ);
    assert_eq!(
        c.classify(b"SELECT qty FROM inventory WHERE id = 1").class,
        Class::Read {
            primary_table: true
        }
    );
    assert_eq!(
        c.classify(b"SELECT inventory FROM t WHERE id = 1").class,
        READ,
        "a column named like the table: the parser tells them apart"
    );
}

#[test]
fn non_utf8_input() {
    let c = classifier();
    assert_eq!(
        c.classify(b"SELECT * FROM t WHERE x = '\xe9t\xe9'").class,
        READ
    );
    assert_eq!(c.classify(b"SELECT caf\xe9 FROM t").class, READ);
    // Needs the parser, which reads the LATIN1 name as replacement characters.
    assert_eq!(c.classify(b"SELECT lower(caf\xe9) FROM t").class, READ);
    assert_eq!(
        c.classify(b"SELECT nextval(caf\xe9) FROM t").class,
        Class::Write
    );
}

#[test]
fn disabled_cache_still_classifies() {
    let c = Classifier::new(ClassifierOptions {
        cache_capacity: 0,
        ..ClassifierOptions::default()
    });
    assert_eq!(c.classify(b"SELECT 1").class, READ);
    assert_eq!(c.classify(b"SELECT 1").class, READ);
    assert_eq!(
        c.stats(),
        CacheStats {
            hits: 0,
            misses: 2,
            entries: 0
        }
    );
}

#[test]
fn random_bytes_never_panic() {
    let c = Classifier::new(ClassifierOptions {
        cache_capacity: 64,
        ..ClassifierOptions::default()
    });
    // xorshift: deterministic, no dependency
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet =
        b"SELECTFROMWHEREFORUPDATEINTOnextval()'\"$;:,.-/*\\ \n\tEeUu&0123456789\x00\xff";
    for _ in 0..20_000 {
        let len = (next() % 64) as usize;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if r % 4 == 0 {
                    (r >> 8) as u8
                } else {
                    alphabet[(r >> 8) as usize % alphabet.len()]
                }
            })
            .collect();
        let _ = c.classify(&bytes);
    }
}

#[test]
fn many_threads_share_one_classifier() {
    let c = Classifier::new(ClassifierOptions {
        cache_capacity: 100,
        ..ClassifierOptions::default()
    });
    std::thread::scope(|scope| {
        for thread in 0..8 {
            let c = &c;
            scope.spawn(move || {
                for i in 0..2_000 {
                    // 300 shapes through a 100-entry cache: hits, misses and evictions.
                    let sql = format!("SELECT c{} FROM t{thread} WHERE id = {i}", i % 300);
                    assert_eq!(c.classify(sql.as_bytes()).class, READ);
                    let sql = format!("UPDATE t{thread} SET c{} = {i}", i % 7);
                    assert_eq!(c.classify(sql.as_bytes()).class, Class::Write);
                }
            });
        }
    });
    let stats = c.stats();
    assert_eq!(stats.hits + stats.misses, 8 * 2 * 2_000);
    assert!(stats.entries <= 100);
}

fn with_catalog() -> Classifier {
    let c = Classifier::new(ClassifierOptions {
        write_functions: vec!["app.bump".into()],
        read_only_functions: vec!["app.jitter".into()],
        ..ClassifierOptions::default()
    });
    c.set_catalog(FunctionCatalog::from_rows([
        ("pg_catalog", "now", "s"),
        ("pg_catalog", "random", "v"),
        ("pg_catalog", "pg_is_in_recovery", "v"),
        ("pg_catalog", "nextval", "v"),
        ("pg_catalog", "count", "i"),
        ("app", "add_order", "v"),
        ("app", "price", "s"),
        ("app", "bump", "i"),
        ("app", "jitter", "v"),
    ]));
    c
}

const USER_WRITE: Classification = Classification {
    class: Class::Write,
    hint_primary: false,
    leaves_state: true,
};

#[test]
fn before_the_catalog_user_functions_are_reads() {
    let c = classifier();
    // A read, but any function may be a user function that leaves state, and any write
    // may fire a trigger: their connections are reset.
    let may_leave_state = |class| Classification {
        leaves_state: true,
        ..Classification::of(class)
    };
    assert_eq!(c.classify(b"SELECT add_order(1)"), may_leave_state(READ));
    assert_eq!(
        c.classify(b"INSERT INTO t VALUES (1)"),
        may_leave_state(Class::Write)
    );
    assert_eq!(c.classify(b"SELECT a FROM t"), Classification::of(READ));
    assert_eq!(c.catalog_refresh_requests(), 0);
}

#[test]
fn volatile_user_functions_write_and_leave_state() {
    let c = with_catalog();
    for sql in [
        "SELECT add_order(1)",
        "SELECT app.add_order(1)",
        "SELECT * FROM t WHERE id = (SELECT add_order(id))",
        "SELECT * FROM add_order(1)",
        "SELECT count(*) FROM t WHERE add_order(id) > 0",
        "EXPLAIN ANALYZE SELECT add_order(1)",
        "INSERT INTO t VALUES (add_order(1))",
        "SELECT 1; SELECT add_order(1)",
    ] {
        assert_eq!(c.classify(sql.as_bytes()), USER_WRITE, "{sql}");
    }
    assert_eq!(c.catalog_refresh_requests(), 0);
}

#[test]
fn stable_user_functions_and_unlisted_built_ins_stay_reads() {
    let c = with_catalog();
    for sql in [
        "SELECT price(1)",
        "SELECT app.price(1), now(), random(), pg_is_in_recovery()",
        "SELECT jitter()",
        "SELECT coalesce(a, 1), current_timestamp FROM t WHERE id IN (1, 2)",
        "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
        "WITH x(a) AS (SELECT 1) SELECT * FROM x",
    ] {
        assert_eq!(
            c.classify(sql.as_bytes()),
            Classification::of(READ),
            "{sql}"
        );
    }
    assert_eq!(c.catalog_refresh_requests(), 0);
    // The built-in list and write_functions still win.
    assert_eq!(
        c.classify(b"SELECT nextval('s')"),
        Classification::of(Class::Write)
    );
    assert_eq!(
        c.classify(b"SELECT bump(1)"),
        Classification::of(Class::Write)
    );
}

#[test]
fn unknown_functions_go_to_the_primary_and_ask_for_a_refresh() {
    let c = with_catalog();
    assert_eq!(c.classify(b"SELECT created_later(1)"), USER_WRITE);
    assert_eq!(c.classify(b"SELECT other.price(1)"), USER_WRITE);
    assert_eq!(c.catalog_refresh_requests(), 2);
    // Cached: asked once per statement shape and catalog.
    assert_eq!(c.classify(b"SELECT created_later(2)"), USER_WRITE);
    assert_eq!(c.catalog_refresh_requests(), 2);
    // `name(` that is not a call is not a function the catalog should know.
    assert_eq!(
        c.classify(b"INSERT INTO t (a) VALUES (1)"),
        Classification::of(Class::Write)
    );
    assert_eq!(c.catalog_refresh_requests(), 2);
}

#[test]
fn ddl_asks_for_a_refresh() {
    let c = with_catalog();
    for sql in [
        "CREATE TRIGGER t BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION f()",
        "create or replace rule r as on insert to t do also notify c",
        "ALTER TABLE t ADD FOREIGN KEY (a) REFERENCES u ON DELETE CASCADE",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        let before = c.catalog_refresh_requests();
        c.classify(sql.as_bytes());
        assert_eq!(c.catalog_refresh_requests(), before + 1, "{sql}");
    }
    let before = c.catalog_refresh_requests();
    for sql in [
        "CREATE TEMP TABLE x (a int)",
        "DROP TRIGGER t ON t",
        "INSERT INTO t VALUES (1)",
        "SELECT 1",
    ] {
        c.classify(sql.as_bytes());
    }
    assert_eq!(c.catalog_refresh_requests(), before);
}

#[test]
fn a_new_catalog_replaces_cached_classifications() {
    let c = with_catalog();
    assert_eq!(c.classify(b"SELECT created_later(1)"), USER_WRITE);
    assert_eq!(c.classify(b"SELECT price(1)"), Classification::of(READ));
    let changed =
        FunctionCatalog::from_rows([("app", "created_later", "s"), ("app", "price", "v")]);
    assert!(c.set_catalog(changed.clone()));
    assert_eq!(
        c.classify(b"SELECT created_later(1)"),
        Classification::of(READ)
    );
    assert_eq!(c.classify(b"SELECT price(1)"), USER_WRITE);
    // The same catalog again: the cache stays.
    let hits = c.stats().hits;
    assert!(!c.set_catalog(changed));
    assert_eq!(c.classify(b"SELECT price(2)"), USER_WRITE);
    assert_eq!(c.stats().hits, hits + 1);
}

#[test]
fn a_new_set_of_firing_relations_replaces_cached_classifications() {
    let c = with_catalog();
    let insert = b"INSERT INTO with_trigger VALUES (1)";
    assert_eq!(c.classify(insert), Classification::of(Class::Write));
    let generation = c.catalog_generation();
    let functions = || FunctionCatalog::from_rows([("app", "price", "s")]);
    assert!(c.set_catalog(functions().with_firing_relations(["with_trigger"])));
    assert!(c.catalog_generation() > generation);
    assert_eq!(c.classify(insert), USER_WRITE);
    assert_eq!(
        c.classify(b"INSERT INTO pgbench_history VALUES (1)"),
        Classification::of(Class::Write)
    );
    assert!(c.set_catalog(functions()));
    assert_eq!(c.classify(insert), Classification::of(Class::Write));
}

#[test]
fn deep_nesting_does_not_overflow() {
    let c = classifier();
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    assert_eq!(c.classify(deep.as_bytes()).class, Class::Write);
    let comments = format!("SELECT 1 {}{}", "/*".repeat(5000), "*/".repeat(5000));
    assert_eq!(c.classify(comments.as_bytes()).class, READ);
}
