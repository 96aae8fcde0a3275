//! The read side: what `query` (and `query --versions`), `jobs`, `show`, `grep`, `export` and `verify`
//! (and later the web page) show of the archive. One [`Selection`] of jobs and
//! tasks, turned into SQL in [`selection`]; each reader returns rows or
//! streams that the command line (or a page) only renders. Nothing here writes
//! the index or ModelArts.

pub mod selection;

pub use selection::{Selection, SelectionError, SelectionFlags};
pub mod export;
pub mod grep;
pub mod jobs;
pub mod read_ahead;
pub mod show;
pub mod verify;
pub mod versions;
