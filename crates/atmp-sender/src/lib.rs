//! The sender's side of the interface (SOURCE.md): what an insurer's, a publisher's or a
//! CDG's system runs next to its own base to deliver its AT/MP data to the platform.
//!
//! The pipeline has explicit stages, each in its module:
//! [`source`] (read the sender's base, one snapshot) → [`consent`] (who may be extracted,
//! grouped per CDG) → [`export`] (select, check each record with the platform's own checks,
//! write the files) → [`deliver`] (explicit FTPS, certificate verified, receipts) →
//! [`journal`] (what was delivered, so that a window is sent once) → [`cycle`] (the weekly
//! scheduler of `atmp sender run`).
//!
//! The source is never written, and nothing here touches the platform's base.

pub mod consent;
pub mod cycle;
pub mod deliver;
pub mod demo;
pub mod export;
pub mod journal;
pub mod source;

/// What can go wrong on the sender's side; every message is French, for the sender's IT
/// team, and never carries a name or a NIR.
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// A bad argument or configuration (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The source base is unreachable or does not follow `source-schema.sql` (exit 1).
    #[error("{0}")]
    Source(String),
    /// A file could not be written or read.
    #[error("{0}")]
    Io(String),
    /// The transfer failed (connection, certificate, refusal).
    #[error("{0}")]
    Transfer(String),
    /// The journal base.
    #[error("journal : {0}")]
    Journal(String),
}
