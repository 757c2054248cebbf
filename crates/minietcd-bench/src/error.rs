//! Why a benchmark run could not start or finish. Request failures during a run are not
//! errors of the run: they are counted by kind in the report.

use thiserror::Error;

/// A failure that stops the benchmark.
#[derive(Debug, Error)]
pub enum BenchError {
    /// A flag value that cannot describe a run (zero clients, key space smaller than a txn).
    #[error("invalid arguments: {0}")]
    InvalidArgs(String),
    /// An endpoint that is not a usable URI.
    #[error("invalid endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given on the command line.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A gRPC connection could not be established.
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        /// The endpoint that refused or timed out.
        endpoint: String,
        /// The transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// `--target-leader` found no endpoint that reports itself as leader.
    #[error("no endpoint is the leader (asked {0} endpoints)")]
    NoLeader(usize),
    /// A set-up request (watch creation, lease grant) failed, so the run cannot measure anything.
    #[error("setup failed: {0}")]
    Setup(String),
    /// Writing the report failed.
    #[error("cannot write report: {0}")]
    Output(#[from] std::io::Error),
    /// Encoding the JSON report failed.
    #[error("cannot encode report: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result of a benchmark step.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
