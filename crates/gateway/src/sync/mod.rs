//! The gateway side of sync: the client that runs exchanges with central, over a [`client::Transport`];
//! [`https`] is the transport over mutual TLS from an enrolment bundle; [`push`] keeps a request
//! open at central between sessions and starts one as soon as central has news.
pub mod client;
pub mod https;
pub mod push;
