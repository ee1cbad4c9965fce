//! The client side: login (startup and authentication) and the session loop that serves
//! a logged-in client, with the pure pieces it relies on (the queue of expected replies,
//! session settings).

pub mod login;
pub mod pending;
pub mod session;
pub mod settings;
