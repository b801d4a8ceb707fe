//! How a failure is written to the logs: the error and every cause beneath it, on one line
//! (`recording a group of check-ins failed: database query failed: deadlock detected`). The
//! library's errors keep their causes as sources (thiserror's `#[source]`) and say only their
//! own part; every log line that reports one goes through [`Chain`], so no cause is dropped.
//! Written here rather than taken from `anyhow` (whose `{:#}` does the same) because the
//! library's modules do not depend on `anyhow`, which only the command line brings.

use std::error::Error;
use std::fmt;

/// An error and its sources, joined by `": "`, for a log field: `error = %Chain(&e)`.
pub struct Chain<'a>(pub &'a (dyn Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("middle")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn writes_every_cause_in_order() {
        let e = Outer(Middle(std::io::Error::other("disk on fire")));
        assert_eq!(Chain(&e).to_string(), "outer: middle: disk on fire");
        assert_eq!(Chain(&std::io::Error::other("alone")).to_string(), "alone");
    }
}
