//! The client side: login (startup and authentication) and the session loop that serves
//! a logged-in client, with the pure pieces it relies on (the queue of expected replies,
//! session settings, the retry of a read a replica refused).

pub mod login;
pub mod pending;
pub mod retry;
pub mod session;
pub mod settings;
pub mod stream;
