//! The PostgreSQL wire protocol, without IO.
//!
//! `frame` cuts a byte buffer into whole messages (checking the declared length against a
//! limit before anything is allocated), `startup` reads the untyped first packet a client
//! sends, `message` reads the few client messages routing needs and builds the messages
//! pgsplit originates itself, and `error` is the PostgreSQL error a client sees.
//! Everything else passes through as the original bytes.

pub mod error;
pub mod frame;
pub mod message;
pub mod startup;

pub use error::PgError;
pub use frame::{split_frame, Frame, FrameError};
