//! Where a transaction runs: the routing policy, as a pure function of what the
//! statement is, what the router knows about the client (pin after a write, route mode,
//! session-bound features) and the time. The session calls it each time it needs a
//! server connection; replica selection and health live in `topology`.

use std::time::{Duration, Instant};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::causal::{ClientCausal, TokenKeys, WritePositions};
use crate::classify::{Class, Classification, Classifier, TokenKind};
pub use crate::config::{Fallback, ReadYourWrites};
use crate::topology::Topology;

/// `SET pgsplit.route`: `auto` routes by statement, `primary` sends everything to the
/// primary for this session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RouteMode {
    #[default]
    Auto,
    Primary,
}

/// The routing settings (from `[routing]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// When false, everything runs on the primary (pooling only).
    pub enabled: bool,
    /// How a client that wrote reads its writes.
    pub read_your_writes: ReadYourWrites,
    /// In `ReadYourWrites::Time`: how long a client reads from the primary after it
    /// wrote; zero disables.
    pub pin_after_write: Duration,
    pub fallback: Fallback,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            enabled: true,
            read_your_writes: ReadYourWrites::Lsn,
            pin_after_write: Duration::from_secs(5),
            fallback: Fallback::Primary,
        }
    }
}

/// Everything sessions need to route: shared by all clients.
#[derive(Debug)]
pub struct Routing {
    pub classifier: Classifier,
    pub policy: Policy,
    pub topology: Arc<Topology>,
    /// Where the writes of clients ended, for `ReadYourWrites::Lsn` and `Cluster`.
    pub positions: Arc<WritePositions>,
    /// The keys causal tokens are signed and checked with.
    pub tokens: TokenKeys,
    pub stats: RouteStats,
}

impl Routing {
    /// The node that takes writes now, as the monitor discovered it (see
    /// `Topology::write_target` for why there may be none).
    pub fn primary(&self) -> Option<usize> {
        self.topology.writer()
    }
}

/// Counts of routing decisions, by reason and by node.
#[derive(Debug)]
pub struct RouteStats {
    reasons: [AtomicU64; Reason::ALL.len()],
    nodes: Vec<AtomicU64>,
    pins: AtomicU64,
}

impl RouteStats {
    pub fn new(nodes: usize) -> RouteStats {
        RouteStats {
            reasons: Default::default(),
            nodes: (0..nodes).map(|_| AtomicU64::new(0)).collect(),
            pins: AtomicU64::new(0),
        }
    }

    /// A transaction or statement was routed to `node` for `reason`.
    pub fn record(&self, reason: Reason, node: usize) {
        self.reasons[reason as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(n) = self.nodes.get(node) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A client wrote: its reads are pinned to the primary (a new pin or a longer one).
    pub fn record_pin(&self) {
        self.pins.fetch_add(1, Ordering::Relaxed);
    }

    /// Pins started or extended so far.
    pub fn pins(&self) -> u64 {
        self.pins.load(Ordering::Relaxed)
    }

    /// How many were routed for `reason`.
    pub fn by_reason(&self, reason: Reason) -> u64 {
        self.reasons[reason as usize].load(Ordering::Relaxed)
    }

    /// How many were routed to each node, by node index.
    pub fn by_node(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .map(|n| n.load(Ordering::Relaxed))
            .collect()
    }
}

/// Whether a statement of this class may run on a replica (whatever the client's pin).
pub fn replica_ok(c: &Classification) -> bool {
    !c.hint_primary
        && matches!(
            c.class,
            Class::Read {
                primary_table: false
            } | Class::Begin { read_only: true }
        )
}

/// Combines the classes of the statements of one extended-protocol batch (up to its
/// Sync, which is one implicit transaction): it may run on a replica only if every
/// statement may.
pub fn merge(a: Classification, b: Classification) -> Classification {
    let eligible = |c: &Classification| {
        matches!(
            c.class,
            Class::Read {
                primary_table: false
            } | Class::Begin { read_only: true }
        )
    };
    let hint_primary = a.hint_primary || b.hint_primary;
    let leaves_state = a.leaves_state || b.leaves_state;
    if eligible(&a) && eligible(&b) {
        return Classification {
            class: a.class,
            hint_primary,
            leaves_state,
        };
    }
    let class = if a.class == Class::SessionBound || b.class == Class::SessionBound {
        Class::SessionBound
    } else if a.class
        == (Class::Read {
            primary_table: true,
        })
        && matches!(b.class, Class::Read { .. })
    {
        a.class
    } else {
        Class::Write
    };
    Classification {
        class,
        hint_primary,
        leaves_state,
    }
}

/// A command about routing that pgsplit answers itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteCommand {
    /// `SET pgsplit.route = 'auto' | 'primary'` (or `RESET pgsplit.route`: auto).
    Set(RouteMode),
    /// `SHOW pgsplit.route`.
    Show,
    /// `SET pgsplit.route` to something else.
    Invalid(String),
    /// `SET pgsplit.causal_token = '<token>'`: present a causal token.
    SetToken(String),
    /// `RESET pgsplit.causal_token`: forget the tokens presented.
    ResetToken,
    /// `SHOW pgsplit.causal_token`.
    ShowToken,
}

/// Recognises `SET [SESSION] pgsplit.route {=|TO} value`, `RESET pgsplit.route`,
/// `SHOW pgsplit.route` and the same forms of `pgsplit.causal_token` (one statement, any
/// case, optional trailing `;`), read with the SQL lexer. Cheap for every other query:
/// only text whose first token is `SET`, `SHOW` or `RESET` is read further, and only its
/// first few tokens.
pub fn route_command(sql: &[u8]) -> Option<RouteCommand> {
    // The longest form is `SET SESSION pgsplit . route TO value`.
    let (head, mut rest) = crate::classify::short_command(sql, &["SET", "SHOW", "RESET"], 12)?;
    if head.is_kw(sql, "SET") && rest.first().is_some_and(|t| t.is_kw(sql, "SESSION")) {
        rest.remove(0);
    }
    let (name, used) = crate::classify::dotted_name(sql, &rest)?;
    let token = name.eq_ignore_ascii_case(crate::causal::token::NAME.as_bytes());
    if !token && !name.eq_ignore_ascii_case(b"pgsplit.route") {
        return None;
    }
    let kw = |k: &str| head.is_kw(sql, k);
    match rest.get(used..).unwrap_or_default() {
        [] if kw("SHOW") && token => Some(RouteCommand::ShowToken),
        [] if kw("RESET") && token => Some(RouteCommand::ResetToken),
        [] if kw("SHOW") => Some(RouteCommand::Show),
        [] if kw("RESET") => Some(RouteCommand::Set(RouteMode::Auto)),
        [to, value] if kw("SET") && (to.is_kw(sql, "TO") || to.kind == TokenKind::Punct(b'=')) => {
            let value = value
                .plain_string(sql)
                .or_else(|| value.name(sql).map(|n| n.into_owned()))
                .unwrap_or_else(|| value.text(sql).to_vec());
            let value = String::from_utf8_lossy(&value);
            if token {
                return Some(RouteCommand::SetToken(value.into_owned()));
            }
            let value = value.to_ascii_lowercase();
            Some(match value.as_str() {
                "auto" | "default" => RouteCommand::Set(RouteMode::Auto),
                "primary" => RouteCommand::Set(RouteMode::Primary),
                _ => RouteCommand::Invalid(value),
            })
        }
        _ => None,
    }
}

/// What the router remembers about one client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRouting {
    pub mode: RouteMode,
    /// Reads go to the primary until then (read-your-writes by time).
    pub pinned_until: Option<Instant>,
    /// Reads go to replicas that have replayed its writes (read-your-writes by LSN).
    pub causal: ClientCausal,
    /// The client used a feature that needs a real session: it stays on one primary
    /// connection for the rest of its session.
    pub session_bound: bool,
    /// The client's transactions default to SERIALIZABLE, which a hot standby refuses.
    pub serializable: bool,
    /// The causal token the statement being routed carries in a leading comment (set by
    /// the session for that one decision).
    pub statement_token: StatementToken,
    /// In `ReadYourWrites::Cluster`: the newest write position any client reached (read
    /// by the session from `WritePositions::newest` for each decision).
    pub newest_write: u64,
}

/// A causal token in a statement's leading comment (`/* pgsplit:causal_token=... */`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StatementToken {
    #[default]
    None,
    /// A token that checked out, for this LSN: the statement must see it.
    Valid(u64),
    /// A token that did not: a read runs on the primary (the client gets a warning).
    Invalid,
}

impl ClientRouting {
    /// A transaction of the client that wrote ended at `now`: its reads must see it from
    /// now on, as `policy` says. Returns whether that pins its reads (to the primary for a
    /// time, or until its write's position is known and replayed).
    pub fn wrote(&mut self, policy: &Policy, now: Instant) -> bool {
        match policy.read_your_writes {
            ReadYourWrites::Off => false,
            ReadYourWrites::Lsn | ReadYourWrites::Cluster => {
                self.causal.wrote();
                true
            }
            ReadYourWrites::Time => self.pin_for(policy.pin_after_write, now),
        }
    }

    /// Pins its reads to the primary for `pin` from `now` (extending any pin).
    fn pin_for(&mut self, pin: Duration, now: Instant) -> bool {
        if pin.is_zero() {
            return false;
        }
        let until = now + pin;
        if self.pinned_until.is_none_or(|t| t < until) {
            self.pinned_until = Some(until);
        }
        true
    }

    /// Whether reads are pinned to the primary at `now`.
    pub fn is_pinned(&self, now: Instant) -> bool {
        self.pinned_until.is_some_and(|t| now < t)
    }
}

/// Why a node was chosen (for logs, metrics and `SHOW CLIENTS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Routing is switched off.
    Disabled,
    /// A write, or anything not known to be a read.
    Write,
    /// An explicit read-write transaction.
    Transaction,
    /// A read-only transaction, on a replica.
    ReadOnlyTransaction,
    /// A plain read, on a replica.
    Read,
    /// The `/* pgsplit:primary */` hint.
    Hint,
    /// `SET pgsplit.route = 'primary'`.
    RouteSetting,
    /// A read of a configured primary table.
    PrimaryTable,
    /// The client wrote recently (read-your-writes by time).
    Pinned,
    /// The client uses a session-bound feature.
    SessionBound,
    /// A read with no replica available, sent to the primary.
    NoReplica,
    /// The client's transactions default to SERIALIZABLE (a standby cannot run them).
    Serializable,
    /// No replica has replayed the client's last write yet, or its position is not known
    /// yet (read-your-writes by LSN).
    AwaitingReplay,
    /// No replica has replayed the position of a causal token the client presented yet.
    AwaitingToken,
    /// A read whose comment carried a causal token that did not check out.
    BadToken,
}

impl Reason {
    pub const ALL: [Reason; 15] = [
        Reason::Disabled,
        Reason::Write,
        Reason::Transaction,
        Reason::ReadOnlyTransaction,
        Reason::Read,
        Reason::Hint,
        Reason::RouteSetting,
        Reason::PrimaryTable,
        Reason::Pinned,
        Reason::SessionBound,
        Reason::NoReplica,
        Reason::Serializable,
        Reason::AwaitingReplay,
        Reason::AwaitingToken,
        Reason::BadToken,
    ];

    /// Whether a read went to the primary only because no replica has replayed the
    /// client's causal position yet.
    pub fn awaits_replay(self) -> bool {
        matches!(self, Reason::AwaitingReplay | Reason::AwaitingToken)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Disabled => "disabled",
            Reason::Write => "write",
            Reason::Transaction => "transaction",
            Reason::ReadOnlyTransaction => "read_only_transaction",
            Reason::Read => "read",
            Reason::Hint => "hint",
            Reason::RouteSetting => "route_setting",
            Reason::PrimaryTable => "primary_table",
            Reason::Pinned => "pinned",
            Reason::SessionBound => "session_bound",
            Reason::NoReplica => "no_replica",
            Reason::Serializable => "serializable",
            Reason::AwaitingReplay => "awaiting_replay",
            Reason::AwaitingToken => "awaiting_token",
            Reason::BadToken => "bad_token",
        }
    }
}

/// Where to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Primary,
    /// A replica, by node index.
    Replica(usize),
    /// Nowhere: a read with no replica available and `fallback = error`.
    Refuse,
}

/// The router's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub target: Target,
    pub reason: Reason,
}

impl Decision {
    fn primary(reason: Reason) -> Decision {
        Decision {
            target: Target::Primary,
            reason,
        }
    }
}

/// What `decide` is told when it asks for a replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pick {
    /// This one (a node index) serves the read.
    Replica(usize),
    /// Replicas are available, but none has replayed the position asked for.
    Behind,
    /// No replica is available.
    Unavailable,
}

/// Decides where the transaction or statement that starts with `class` runs.
/// `pick_replica` is asked only when a replica may serve it, with the WAL position the
/// replica must have replayed (0: any).
pub fn decide(
    policy: &Policy,
    client: &ClientRouting,
    class: &Classification,
    now: Instant,
    pick_replica: impl FnOnce(u64) -> Pick,
) -> Decision {
    if !policy.enabled {
        return Decision::primary(Reason::Disabled);
    }
    if client.session_bound {
        return Decision::primary(Reason::SessionBound);
    }
    let read_reason = match class.class {
        Class::Read {
            primary_table: false,
        } => Reason::Read,
        Class::Begin { read_only: true } => Reason::ReadOnlyTransaction,
        Class::Read {
            primary_table: true,
        } => return Decision::primary(Reason::PrimaryTable),
        Class::Begin { read_only: false } => return Decision::primary(Reason::Transaction),
        Class::SessionBound => return Decision::primary(Reason::SessionBound),
        // Writes, unknown SQL, transaction control outside a transaction and session
        // statements (whose effect pgsplit replays anyway) go to the primary.
        Class::Write | Class::End | Class::TransactionControl | Class::Session => {
            return Decision::primary(Reason::Write)
        }
    };
    if class.hint_primary {
        return Decision::primary(Reason::Hint);
    }
    if client.mode == RouteMode::Primary {
        return Decision::primary(Reason::RouteSetting);
    }
    if client.serializable {
        return Decision::primary(Reason::Serializable);
    }
    let (min_lsn, behind) = match policy.read_your_writes {
        ReadYourWrites::Off => (0, Reason::AwaitingReplay),
        ReadYourWrites::Time if client.is_pinned(now) => return Decision::primary(Reason::Pinned),
        ReadYourWrites::Time => (0, Reason::AwaitingReplay),
        ReadYourWrites::Lsn | ReadYourWrites::Cluster if client.causal.is_pending() => {
            return Decision::primary(Reason::AwaitingReplay)
        }
        ReadYourWrites::Lsn | ReadYourWrites::Cluster => {
            let mut causal = client.causal;
            match client.statement_token {
                StatementToken::None => {}
                StatementToken::Valid(lsn) => causal.presented(lsn),
                StatementToken::Invalid => return Decision::primary(Reason::BadToken),
            }
            let behind = match causal.from_token() {
                true => Reason::AwaitingToken,
                false => Reason::AwaitingReplay,
            };
            let lsn = match policy.read_your_writes {
                ReadYourWrites::Cluster => causal.lsn().max(client.newest_write),
                _ => causal.lsn(),
            };
            (lsn, behind)
        }
    };
    after_pick(policy, pick_replica(min_lsn), read_reason, behind)
}

/// Where a read goes once the replica pick is known (the one place the fallback rule is
/// applied): the replica picked, for `read_reason`; the primary when every replica is
/// behind the position asked for (`behind`); with none available, the primary or nowhere
/// (`routing.fallback`). `decide` ends here, and so does a session's checkout that found
/// the replica picked unable to serve and picked again.
pub fn after_pick(policy: &Policy, pick: Pick, read_reason: Reason, behind: Reason) -> Decision {
    match pick {
        Pick::Replica(node) => Decision {
            target: Target::Replica(node),
            reason: read_reason,
        },
        Pick::Behind => Decision::primary(behind),
        Pick::Unavailable => match policy.fallback {
            Fallback::Primary => Decision::primary(Reason::NoReplica),
            Fallback::Error => Decision {
                target: Target::Refuse,
                reason: Reason::NoReplica,
            },
        },
    }
}

/// Whether a statement of this class, run inside a transaction on the primary, makes
/// the transaction a write (and so pins the client when it commits).
pub fn writes(class: &Class) -> bool {
    matches!(class, Class::Write | Class::SessionBound)
}

#[cfg(test)]
mod tests;
