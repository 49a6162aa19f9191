//! The leaf contract of the data path: what every stage that takes data
//! implements ([`Consumer`]), how it refuses ([`ConsumeError`], [`Refused`]),
//! the acknowledgements that ride along with data ([`Acks`]), and how a
//! component reports that it could not start ([`StartError`]).
//!
//! This module imports only the data types (`signal`); every component and
//! the pipeline graph depend on it, and it depends on none of them.

mod ack;
mod contract;
mod retry;

pub use ack::{Ack, AckOutcome, AckWaiter, Acks};
pub use contract::{BoxConsumer, ConsumeError, Consumer, Consumers, Refused, StartError};
pub use retry::{offer_until_taken, Backoff, Offered};
