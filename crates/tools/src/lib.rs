//! The texprune repository's own tools, for its examples, tests and benchmarks (not published):
//! how the command-line programs parse flags, pick a backend and end ([`cli`]), random masks,
//! synthetic batches and timed medians for the benchmarks ([`perf`]), and the check of the
//! library against the reference vectors computed by the authors' PyTorch code ([`conformance`]),
//! the backend-generic suite ([`backend_suite`]) and what the training examples share
//! ([`scaffold`]).

#![warn(missing_docs, clippy::missing_errors_doc)]

pub mod backend_suite;
pub mod cli;
pub mod conformance;
pub mod perf;
pub mod scaffold;
