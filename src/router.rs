//! Where a transaction runs. This is the seam read/write splitting plugs into: the
//! session asks the router for a node each time it needs a server connection, with what
//! it knows about the statement that starts the transaction.

/// Why a node was chosen (reported in logs and, later, metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Everything runs on the primary.
    Primary,
}

/// The router's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// Index of the node in the configured node list.
    pub node: usize,
    pub reason: Reason,
}

/// Picks nodes for transactions.
#[derive(Debug, Clone)]
pub struct Router {
    primary: usize,
}

impl Router {
    pub fn new(primary: usize) -> Router {
        Router { primary }
    }

    /// The node for a transaction that starts with `_sql` (the statement text, when the
    /// first message carries one).
    pub fn route(&self, _sql: Option<&[u8]>) -> Route {
        Route {
            node: self.primary,
            reason: Reason::Primary,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_goes_to_the_primary_for_now() {
        let r = Router::new(2);
        assert_eq!(r.route(Some(b"select 1")).node, 2);
        assert_eq!(r.route(None).reason, Reason::Primary);
    }
}
