//! A tiny simulated web application that reads its users' writes through pgsplit with
//! causal tokens (see docs/read-your-writes.md).
//!
//! The application has two services that share the users' session cookie, each with its
//! own pool (deadpool-postgres over tokio-postgres, smaller than the number of users, so
//! requests share connections): an API that takes writes and a page service that only
//! reads. Each simulated user makes two requests per round. Request 1 (API) writes (adds a
//! visit to the user's row), takes the connection's causal token with
//! `SHOW pgsplit.causal_token` and puts it in the user's session cookie. Request 2 (pages),
//! on whichever connection its pool hands out, reads the row with the token from the cookie
//! in a leading comment (`/* pgsplit:causal_token=... */`) and checks that it sees the
//! visit. For comparison, the same read runs without the token too. The page service's
//! connections never write, so without the token nothing makes their reads wait for a
//! replica to replay the user's write.
//!
//! ```sh
//! cargo run --example web_session -- postgres://app:secret@127.0.0.1:6432/app [users] [rounds]
//! ```
//!
//! It prints where the reads ran and how many were stale, and exits with 1 when a read
//! carrying the token was stale.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::Context;
use cookie::{Cookie, CookieJar};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{NoTls, SimpleQueryMessage};

/// The table the application keeps its users in (created if missing, never dropped).
pub const TABLE: &str = "pgsplit_web_session";
/// The application's session cookie that carries the causal token.
pub const COOKIE: &str = "pg_causal";

/// What a run saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Reads that carried the user's token (request 2).
    pub reads: usize,
    /// Of those, reads that did not see the user's own write.
    pub stale: usize,
    /// Where the reads with the token ran.
    pub served: BTreeMap<Node, usize>,
    /// The same reads without the token, for comparison.
    pub unguarded_reads: usize,
    /// Of those, reads that did not see the write.
    pub unguarded_stale: usize,
    /// Where the reads without the token ran.
    pub unguarded_served: BTreeMap<Node, usize>,
}

/// The node that served a read: its port (`inet_server_port()`) and whether it is a
/// replica (`pg_is_in_recovery()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Node {
    pub port: u16,
    pub replica: bool,
}

impl std::fmt::Display for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let role = if self.replica { "replica" } else { "primary" };
        write!(f, "{role} :{}", self.port)
    }
}

impl Report {
    fn add(&mut self, other: Report) {
        self.reads += other.reads;
        self.stale += other.stale;
        self.unguarded_reads += other.unguarded_reads;
        self.unguarded_stale += other.unguarded_stale;
        for (node, n) in other.served {
            *self.served.entry(node).or_default() += n;
        }
        for (node, n) in other.unguarded_served {
            *self.unguarded_served.entry(node).or_default() += n;
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let nodes = |served: &BTreeMap<Node, usize>| {
            served
                .iter()
                .map(|(node, n)| format!("{node}: {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(
            f,
            "with the token:    {} reads, {} stale ({})",
            self.reads,
            self.stale,
            nodes(&self.served)
        )?;
        write!(
            f,
            "without the token: {} reads, {} stale ({})",
            self.unguarded_reads,
            self.unguarded_stale,
            nodes(&self.unguarded_served)
        )
    }
}

/// The application: its services' connection pools (to pgsplit), and what makes this run's
/// users its own.
pub struct App {
    /// The API's pool: it takes the writes.
    api: Pool,
    /// The page service's pool: it only reads.
    pages: Pool,
    /// Makes this run's user ids its own, so runs can share the table.
    run: String,
}

/// A simulated browser: the cookies it keeps for the application.
#[derive(Default)]
pub struct Browser {
    cookies: CookieJar,
}

impl Browser {
    /// The `Cookie` header it sends with a request.
    fn cookie_header(&self) -> String {
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .map(|c| c.stripped().to_string())
            .collect();
        pairs.join("; ")
    }

    /// Keeps the cookies of a response's `Set-Cookie` headers.
    fn set_cookies(&mut self, headers: &[String]) {
        for header in headers {
            if let Ok(cookie) = Cookie::parse(header.clone()) {
                self.cookies.add(cookie.into_owned());
            }
        }
    }
}

/// The cookies of a request's `Cookie` header, as the application sees them.
fn request_cookies(header: &str) -> CookieJar {
    let mut jar = CookieJar::new();
    for cookie in Cookie::split_parse(header.to_owned()).flatten() {
        jar.add_original(cookie.into_owned());
    }
    jar
}

impl App {
    /// An application whose services' pools hold up to `pool_size` connections to `url`
    /// each.
    pub fn new(url: &str, pool_size: usize) -> anyhow::Result<App> {
        let config: tokio_postgres::Config = url.parse().context("the connection URL")?;
        let pool = |size| {
            let manager = ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            };
            Pool::builder(Manager::from_config(config.clone(), NoTls, manager))
                .max_size(size)
                .build()
        };
        let run = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_micros())
                .unwrap_or_default()
        );
        Ok(App {
            api: pool(pool_size)?,
            pages: pool(pool_size)?,
            run,
        })
    }

    /// Creates the table if missing and a row (0 visits) for each of `users` users;
    /// returns their ids.
    pub async fn setup(&self, users: usize) -> anyhow::Result<Vec<String>> {
        let client = self.api.get().await?;
        client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {TABLE} (id text PRIMARY KEY, visits int NOT NULL)"
            ))
            .await?;
        let ids: Vec<String> = (0..users).map(|u| format!("{}-{u}", self.run)).collect();
        for id in &ids {
            client
                .execute(
                    &format!("INSERT INTO {TABLE} (id, visits) VALUES ($1, 0)"),
                    &[id],
                )
                .await?;
        }
        Ok(ids)
    }

    /// Deletes this run's rows.
    pub async fn cleanup(&self) -> anyhow::Result<()> {
        let client = self.api.get().await?;
        let pattern = format!("{}-%", self.run);
        client
            .execute(
                &format!("DELETE FROM {TABLE} WHERE id LIKE $1"),
                &[&pattern],
            )
            .await?;
        Ok(())
    }

    /// Request 1 (API, `POST /visit`): adds a visit to the user's row, and sets the session
    /// cookie to the causal token of that write. Returns the new count and the response's
    /// `Set-Cookie` headers.
    pub async fn post_visit(
        &self,
        user: &str,
        cookie_header: &str,
    ) -> anyhow::Result<(i32, Vec<String>)> {
        let mut cookies = request_cookies(cookie_header);
        let client = self.api.get().await?;
        let row = client
            .query_one(
                &format!("UPDATE {TABLE} SET visits = visits + 1 WHERE id = $1 RETURNING visits"),
                &[&user],
            )
            .await?;
        // On the same connection as the write: its token. (libpq and psycopg can read it
        // as the ParameterStatus pgsplit.causal_token instead; tokio-postgres cannot.)
        let token = token_of(&client).await?;
        drop(client);
        if !token.is_empty() {
            cookies.add(Cookie::build((COOKIE, token)).path("/").http_only(true));
        }
        let set_cookie = cookies.delta().map(|c| c.to_string()).collect();
        Ok((row.get(0), set_cookie))
    }

    /// Request 2 (pages, `GET /profile`): reads the user's visits, presenting the token from the
    /// session cookie (when there is one) in a leading comment, on whichever connection the
    /// pool hands out. Returns the count and the node that served the read.
    pub async fn get_profile(
        &self,
        user: &str,
        cookie_header: &str,
    ) -> anyhow::Result<(i32, Node)> {
        let cookies = request_cookies(cookie_header);
        // The cookie comes from the browser: only a value made of the token's characters
        // goes into the SQL text (one with `*/` in it could end the comment).
        let hint = match cookies.get(COOKIE).map(|c| c.value()) {
            Some(token) if is_token(token) => format!("/* pgsplit:causal_token={token} */ "),
            _ => String::new(),
        };
        read_visits(&self.pages, &hint, user).await
    }

    /// `rounds` rounds of both requests for each user in `users`, the users at the same
    /// time.
    pub async fn rounds(
        self: &std::sync::Arc<Self>,
        users: &[String],
        rounds: usize,
    ) -> anyhow::Result<Report> {
        let mut tasks = tokio::task::JoinSet::new();
        for user in users {
            let (app, user) = (self.clone(), user.clone());
            tasks.spawn(async move { app.user_rounds(&user, rounds).await });
        }
        let mut report = Report::default();
        while let Some(done) = tasks.join_next().await {
            report.add(done??);
        }
        Ok(report)
    }

    /// One user's rounds, with a browser of its own.
    async fn user_rounds(&self, user: &str, rounds: usize) -> anyhow::Result<Report> {
        let mut browser = Browser::default();
        let mut report = Report::default();
        for _ in 0..rounds {
            let (wrote, set_cookie) = self.post_visit(user, &browser.cookie_header()).await?;
            browser.set_cookies(&set_cookie);

            let (seen, node) = self.get_profile(user, &browser.cookie_header()).await?;
            report.reads += 1;
            report.stale += usize::from(seen < wrote);
            *report.served.entry(node).or_default() += 1;

            // What the same read sees without the token.
            let (seen, node) = read_visits(&self.pages, "", user).await?;
            report.unguarded_reads += 1;
            report.unguarded_stale += usize::from(seen < wrote);
            *report.unguarded_served.entry(node).or_default() += 1;
        }
        Ok(report)
    }
}

/// Reads the user's visits on a connection from `pool`, with `prefix` in front of the
/// statement.
async fn read_visits(pool: &Pool, prefix: &str, user: &str) -> anyhow::Result<(i32, Node)> {
    let client = pool.get().await?;
    let sql = format!(
        "{prefix}SELECT visits, inet_server_port(), pg_is_in_recovery() FROM {TABLE} WHERE id = $1"
    );
    let row = client
        .query_opt(&sql, &[&user])
        .await?
        .context("the user's row is missing")?;
    let node = Node {
        port: row.get::<_, i32>(1) as u16,
        replica: row.get(2),
    };
    Ok((row.get(0), node))
}

/// Whether `value` looks like a causal token: base64 (`A-Z a-z 0-9 + / =`) and the
/// payload's `:` and hex digits, so it is safe inside an SQL comment.
pub fn is_token(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b':'))
}

/// The connection's causal token ("" when it has none).
async fn token_of(client: &tokio_postgres::Client) -> anyhow::Result<String> {
    let messages = client.simple_query("SHOW pgsplit.causal_token").await?;
    let value = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
        _ => None,
    });
    value.context("SHOW pgsplit.causal_token returned no row (is this pgsplit?)")
}

/// Sets up `users` users on `url`, runs `rounds` rounds of both requests for each, and
/// deletes their rows.
pub async fn run(url: &str, users: usize, rounds: usize) -> anyhow::Result<Report> {
    let app = std::sync::Arc::new(App::new(url, (users / 2).max(2))?);
    let ids = app.setup(users).await?;
    let report = app.rounds(&ids, rounds).await;
    app.cleanup().await?;
    report
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "postgres://app:secret@127.0.0.1:6432/app".to_owned());
    let number = |arg: Option<String>, default: usize| match arg {
        Some(text) => text.parse().context("users and rounds are numbers"),
        None => Ok(default),
    };
    let users = number(args.next(), 8)?;
    let rounds = number(args.next(), 5)?;
    let report = run(&url, users, rounds).await?;
    println!("{users} users, {rounds} rounds each\n{report}");
    Ok(match report.stale {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    })
}
