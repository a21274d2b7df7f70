//! The small typed protocol between berthd and a shim: one JSON object per line over the
//! shim's Unix socket, request then response. Also the exit record the shim leaves behind.

use serde::{Deserialize, Serialize};

/// A request to the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Current state.
    State,
    /// Send a signal to the container's init process.
    Kill {
        /// Signal number.
        signal: i32,
    },
    /// Answer once the container has exited (immediately if it has).
    Wait,
    /// Stream the container's output on this connection from now on (`output` responses,
    /// then `exited`); the first attach also gets what was written before it.
    Attach,
    /// Write to the container's stdin (a terminal's input with a TTY).
    Input {
        /// Base64 of the bytes.
        data: String,
    },
    /// Close the container's stdin once what was written is delivered.
    CloseStdin,
    /// Set the container terminal's size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
}

/// A response from the shim.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Response {
    /// The container is running.
    Running {
        /// Host pid of the container's init process.
        pid: i32,
    },
    /// The container has exited.
    Exited(ExitRecord),
    /// The request was done.
    Ok,
    /// Output of an attached container.
    Output {
        /// `stdout` or `stderr` (a TTY has only stdout).
        stream: String,
        /// Base64 of the bytes.
        data: String,
    },
    /// The request failed.
    Error {
        /// Why.
        message: String,
    },
}

/// How a container ended, written by its shim to the bundle as `exit.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code as a shell reports it: the status, or 128 + signal.
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// Whether the kernel's OOM killer ended it.
    pub oom_killed: bool,
    /// When it exited, RFC 3339 with nanoseconds.
    pub finished_at: String,
    /// Why it never ran, if it did not (`exec: "x": executable file not found`).
    pub error: Option<String>,
}
