//! The full path: parse one query with sqlparser and walk its whole tree.
//!
//! Used for query statements (`SELECT`, `WITH`, `VALUES`, `TABLE`, `(...)`) that the lexer
//! could not settle. The walk uses sqlparser's derived [`Visitor`], so it reaches every node
//! (select lists, `WHERE`, `FROM` functions, joins, subqueries at any depth, CTEs, set
//! operations, `ORDER BY`, window clauses, ...) without a hand-written match that could miss
//! a variant in a later sqlparser version. It looks for:
//!
//! - any nested statement that is not a query (`INSERT`/`UPDATE`/`DELETE`/`MERGE` in a `WITH`,
//!   at any depth) -> write;
//! - a locking clause (`FOR UPDATE`/`FOR SHARE`) -> write;
//! - `SELECT ... INTO t` -> write (`INTO TEMP t` or `INTO pg_temp.t` -> session-bound);
//! - a call of a write function -> write; of a session-bound function -> session-bound; of a
//!   user function that may write (volatile, or unknown to the loaded catalog) -> write that
//!   may leave session state;
//! - a relation that is a configured primary table -> `Read { primary_table: true }`.

use std::ops::ControlFlow;

use sqlparser::ast::{
    Expr, Ident, ObjectName, ObjectNamePart, Query, Select, SetExpr, Statement, TableFactor, Visit,
    Visitor,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::{Parser, ParserError};

use super::functions::{FnEffect, Functions, QualifiedNames};
use super::Class;

/// Why the full path could not classify a query. Either makes it a write.
#[derive(Debug, thiserror::Error)]
pub(crate) enum WalkError {
    #[error("sqlparser: {0}")]
    Parse(#[from] ParserError),
    #[error("expected one statement, found {0}")]
    StatementCount(usize),
}

/// What the walk found in one query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Walked {
    pub class: Class,
    /// It calls a user function that may write (volatile, or unknown to the loaded catalog):
    /// running it may leave session state behind.
    pub user_write: bool,
    /// It calls a function the loaded catalog does not know.
    pub unknown_function: bool,
}

/// Parses `sql` (one query statement in canonical text) and classifies it.
pub(crate) fn classify_query(
    sql: &str,
    functions: &Functions,
    primary_tables: &QualifiedNames,
) -> Result<Walked, WalkError> {
    let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql)?;
    let [statement] = statements.as_slice() else {
        return Err(WalkError::StatementCount(statements.len()));
    };
    Ok(classify_statement(statement, functions, primary_tables))
}

/// Classifies one parsed statement: a query is walked; anything else is a write.
fn classify_statement(
    statement: &Statement,
    functions: &Functions,
    primary_tables: &QualifiedNames,
) -> Walked {
    let mut walker = Walker {
        functions,
        primary_tables,
        write: false,
        session_bound: false,
        primary_table: false,
        user_write: false,
        unknown_function: false,
    };
    let _ = statement.visit(&mut walker);
    let class = if walker.session_bound {
        Class::SessionBound
    } else if walker.write {
        Class::Write
    } else {
        Class::Read {
            primary_table: walker.primary_table,
        }
    };
    Walked {
        class,
        user_write: walker.user_write,
        unknown_function: walker.unknown_function,
    }
}

struct Walker<'a> {
    functions: &'a Functions,
    primary_tables: &'a QualifiedNames,
    write: bool,
    session_bound: bool,
    primary_table: bool,
    user_write: bool,
    unknown_function: bool,
}

/// The name PostgreSQL would store for `ident`: unquoted names fold to lowercase (ASCII
/// letters only, as PostgreSQL does with multibyte encodings).
fn fold(ident: &Ident) -> String {
    if ident.quote_style.is_some() {
        ident.value.clone()
    } else {
        ident.value.to_ascii_lowercase()
    }
}

/// `(schema, name)` of an object name, case-folded; `None` if its last part is not an identifier.
fn split_name(name: &ObjectName) -> Option<(Option<String>, String)> {
    let mut parts = name.0.iter().rev();
    let last = parts.next()?.as_ident()?;
    let schema = parts.next().and_then(ObjectNamePart::as_ident).map(fold);
    Some((schema, fold(last)))
}

impl Walker<'_> {
    fn function(&mut self, name: &ObjectName) {
        match split_name(name) {
            Some((schema, name)) => {
                match self
                    .functions
                    .effect(schema.as_deref().map(str::as_bytes), name.as_bytes())
                {
                    Some(FnEffect::Write) => self.write = true,
                    Some(FnEffect::SessionBound) => self.session_bound = true,
                    Some(FnEffect::UserWrite) => {
                        self.write = true;
                        self.user_write = true;
                    }
                    // Here it surely is a call: of a function created since the catalog
                    // was loaded, or not known to the primary at all.
                    Some(FnEffect::Unknown) => {
                        self.write = true;
                        self.user_write = true;
                        self.unknown_function = true;
                    }
                    None => {}
                }
            }
            // A dialect-specific computed name: we cannot tell what it calls.
            None => self.write = true,
        }
    }

    fn relation(&mut self, schema: Option<&str>, name: &str) {
        if self
            .primary_tables
            .matches(schema.map(str::as_bytes), name.as_bytes())
        {
            self.primary_table = true;
        }
    }

    /// `TABLE t` is a `SetExpr::Table`, not a visited relation.
    fn table_commands(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Table(table) => {
                if let Some(name) = &table.table_name {
                    let schema = table.schema_name.as_ref().map(fold);
                    self.relation(schema.as_deref(), &fold(name));
                }
            }
            SetExpr::SetOperation { left, right, .. } => {
                self.table_commands(left);
                self.table_commands(right);
            }
            _ => {}
        }
    }
}

impl Visitor for Walker<'_> {
    type Break = ();

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<()> {
        if !matches!(statement, Statement::Query(_)) {
            self.write = true;
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<()> {
        if !query.locks.is_empty() {
            self.write = true;
        }
        self.table_commands(&query.body);
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &Select) -> ControlFlow<()> {
        if let Some(into) = &select.into {
            let pg_temp = into.targets.iter().any(|target| match target {
                Expr::CompoundIdentifier(parts) => {
                    parts.first().map(fold).as_deref() == Some("pg_temp")
                }
                _ => false,
            });
            if into.temporary || pg_temp {
                self.session_bound = true;
            } else {
                self.write = true;
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_relation(&mut self, relation: &ObjectName) -> ControlFlow<()> {
        if !self.primary_tables.is_empty() {
            if let Some((schema, name)) = split_name(relation) {
                self.relation(schema.as_deref(), &name);
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        match factor {
            TableFactor::Table {
                name,
                args: Some(_),
                ..
            } => self.function(name),
            TableFactor::Function { name, .. } => self.function(name),
            _ => {}
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &Expr) -> ControlFlow<()> {
        if let Expr::Function(function) = expr {
            self.function(&function.name);
        }
        ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(sql: &str) -> Class {
        let functions = Functions::new(&["audit.log_event"], &[]);
        let tables = QualifiedNames::new(&["inventory", "shop.stock"]);
        classify_query(sql, &functions, &tables).map_or(Class::Write, |w| w.class)
    }

    const READ: Class = Class::Read {
        primary_table: false,
    };
    const READ_PRIMARY: Class = Class::Read {
        primary_table: true,
    };

    #[test]
    fn plain_queries_are_reads() {
        assert_eq!(class("SELECT a FROM t WHERE b = 0"), READ);
        assert_eq!(class("VALUES (0), (0)"), READ);
        assert_eq!(class("SELECT 0 UNION TABLE t"), READ);
        assert_eq!(class("SELECT lower(x), count(*) FROM t GROUP BY 0"), READ);
        assert_eq!(
            class("WITH x AS (SELECT 0) SELECT * FROM x UNION SELECT 0"),
            READ
        );
    }

    #[test]
    fn data_modifying_ctes_at_any_depth() {
        assert_eq!(
            class("WITH x AS (INSERT INTO t VALUES (0) RETURNING *) SELECT * FROM x"),
            Class::Write
        );
        assert_eq!(
            class("WITH a AS (SELECT 0), b AS (WITH c AS (DELETE FROM t RETURNING *) SELECT * FROM c) SELECT * FROM a, b"),
            Class::Write
        );
        assert_eq!(
            class("SELECT * FROM (WITH u AS (UPDATE t SET a = 0 RETURNING a) SELECT a FROM u) s"),
            Class::Write
        );
    }

    #[test]
    fn functions_anywhere() {
        assert_eq!(class("SELECT nextval('')"), Class::Write);
        assert_eq!(
            class("SELECT * FROM t WHERE id = (SELECT currval(''))"),
            Class::Write
        );
        assert_eq!(
            class("SELECT * FROM t WHERE set_config('', '', false) IS NOT NULL"),
            Class::SessionBound
        );
        assert_eq!(
            class("SELECT * FROM t ORDER BY pg_catalog.setval('', 0)"),
            Class::Write
        );
        assert_eq!(class("SELECT * FROM lo_import('')"), Class::Write);
        assert_eq!(
            class("SELECT * FROM t, LATERAL nextval('') n"),
            Class::Write
        );
        assert_eq!(class("SELECT audit.log_event(0)"), Class::Write);
        assert_eq!(class("SELECT other.log_event(0)"), READ);
        assert_eq!(class("SELECT pg_advisory_lock(0)"), Class::SessionBound);
        assert_eq!(class("SELECT pg_advisory_xact_lock(0)"), Class::Write);
        assert_eq!(class("SELECT \"NEXTVAL\"('')"), READ);
        assert_eq!(class("SELECT NEXTVAL('')"), Class::Write);
    }

    #[test]
    fn locking_and_into() {
        assert_eq!(class("SELECT * FROM t FOR UPDATE"), Class::Write);
        assert_eq!(class("SELECT * FROM t FOR SHARE SKIP LOCKED"), Class::Write);
        assert_eq!(
            class("SELECT * FROM (SELECT * FROM t FOR UPDATE) s"),
            Class::Write
        );
        assert_eq!(class("SELECT * INTO t2 FROM t"), Class::Write);
        assert_eq!(class("SELECT * INTO TEMP t2 FROM t"), Class::SessionBound);
        assert_eq!(
            class("SELECT * INTO pg_temp.t2 FROM t"),
            Class::SessionBound
        );
    }

    #[test]
    fn primary_tables() {
        assert_eq!(class("SELECT * FROM inventory"), READ_PRIMARY);
        assert_eq!(class("SELECT * FROM public.inventory i"), READ_PRIMARY);
        assert_eq!(class("SELECT * FROM \"inventory\""), READ_PRIMARY);
        assert_eq!(class("SELECT * FROM \"Inventory\""), READ);
        assert_eq!(class("SELECT * FROM INVENTORY"), READ_PRIMARY);
        assert_eq!(class("SELECT * FROM stock"), READ_PRIMARY);
        assert_eq!(class("SELECT * FROM shop.stock"), READ_PRIMARY);
        assert_eq!(class("SELECT * FROM other.stock"), READ);
        assert_eq!(
            class("SELECT * FROM t WHERE EXISTS (SELECT 0 FROM inventory WHERE x = t.x)"),
            READ_PRIMARY
        );
        assert_eq!(class("SELECT 0 UNION TABLE inventory"), READ_PRIMARY);
        assert_eq!(class("SELECT inventory FROM t"), READ);
    }

    #[test]
    fn non_queries_and_errors() {
        assert_eq!(class("INSERT INTO t VALUES (0)"), Class::Write);
        assert!(classify_query(
            "SELECT 0; SELECT 0",
            &Functions::default(),
            &QualifiedNames::default()
        )
        .is_err());
        assert!(classify_query(
            "SELECT FROM (",
            &Functions::default(),
            &QualifiedNames::default()
        )
        .is_err());
    }

    #[test]
    fn user_functions_with_a_catalog() {
        let functions = Functions::new(&["app.bump"], &["app.jitter"])
            .with_catalog(crate::classify::FunctionCatalog::from_rows([
                ("pg_catalog", "now", "s"),
                ("app", "add_order", "v"),
                ("app", "price", "s"),
                ("app", "jitter", "v"),
            ]))
            .expect("a new catalog");
        let walk = |sql: &str| {
            classify_query(sql, &functions, &QualifiedNames::default()).expect("parses")
        };
        let walked = |class, user_write, unknown_function| Walked {
            class,
            user_write,
            unknown_function,
        };
        assert_eq!(
            walk("SELECT price(0), now(), jitter()"),
            walked(READ, false, false)
        );
        assert_eq!(
            walk("SELECT * FROM t WHERE a = (SELECT app.add_order(0))"),
            walked(Class::Write, true, false)
        );
        assert_eq!(walk("SELECT bump(0)"), walked(Class::Write, false, false));
        assert_eq!(
            walk("SELECT * FROM t, LATERAL later(t.a) l"),
            walked(Class::Write, true, true)
        );
        assert_eq!(
            walk("SELECT add_order(0), pg_advisory_lock(0)"),
            walked(Class::SessionBound, true, false)
        );
    }
}
