//! The gateway side of sync: the client that runs exchanges with central, over a [`client::Transport`];
//! [`https`] is the transport over mutual TLS from an enrolment bundle.
pub mod client;
pub mod https;
