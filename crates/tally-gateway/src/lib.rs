//! Tally's side of the external payment gateway (SPEC.md "Payment", seed 003):
//! a client for a Toss-style gateway whose confirm is *not* idempotent, and a
//! fake of that gateway to test against.
//!
//! This crate owns the wire protocol and, above all, what each reply means
//! for a payment. It owns no payment state: recording the intent before the
//! call and the outcome after it is the core's confirm flow, which calls
//! this client with no database transaction open.
//!
//! # Layout
//!
//! - [`book`]: the gateway's payments and the rule that charges a payment
//!   key once, kept by both fakes (this crate's and `tally-mem`'s), and the
//!   error [`codes`]. Plain data with no dependency: all that builds without
//!   the default `http` feature, which `tally-mem` turns off.
//! - [`outcome`]: [`ConfirmOutcome`], [`LookupOutcome`], [`CancelOutcome`],
//!   plain data for the core's gateway trait.
//! - [`protocol`]: paths, bodies, credentials and the `classify_*` functions
//!   that turn a status and body into an outcome; its module docs hold the
//!   classification table. No I/O, so any transport can reuse it.
//! - [`client`]: [`GatewayClient`], one reqwest request per call, every
//!   transport failure `Unknown`.
//! - [`fake`]: [`FakeGateway`] and its server, with injectable faults and
//!   counters of what arrived and what took effect.
//!
//! # The rule the outcomes encode
//!
//! A confirm is sent once. `Approved` and `Declined` are final.
//! `AlreadyProcessed` and `Unknown` mean the charge may have happened: the
//! caller looks the payment up (now, or from a reconciler later) and adopts
//! what the gateway says; it never sends the confirm again blind.

pub mod book;
pub mod codes;

#[cfg(feature = "http")]
pub mod client;
#[cfg(feature = "http")]
pub mod core_port;
#[cfg(feature = "http")]
pub mod fake;
#[cfg(feature = "http")]
pub mod outcome;
#[cfg(feature = "http")]
pub mod protocol;

#[cfg(feature = "http")]
pub use client::{GatewayClient, GatewayConfig, GatewayError};
#[cfg(feature = "http")]
pub use fake::FakeGateway;
#[cfg(feature = "http")]
pub use outcome::{CancelOutcome, ConfirmOutcome, LookupOutcome};
