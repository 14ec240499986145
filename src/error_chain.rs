//! An error with every cause below it, in one line: HTTP and Docker client errors say only
//! "error sending request" at the top, and the reason an operator needs (certificate not
//! trusted, name not resolved, connection refused) is several `source()`s down. A leaf module:
//! imports nothing of the crate.

use std::error::Error;

/// `err` and its sources joined with `: `, each cause once (a source whose text its parent
/// already shows is skipped).
pub fn chain(err: &dyn Error) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::chain;

    #[derive(Debug, thiserror::Error)]
    #[error("error sending request")]
    struct Top(#[source] Middle);

    #[derive(Debug, thiserror::Error)]
    #[error("client error (Connect)")]
    struct Middle(#[source] std::io::Error);

    #[test]
    fn every_cause_is_shown_once() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        assert_eq!(
            chain(&Top(Middle(io))),
            "error sending request: client error (Connect): connection refused"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("cannot connect: {0}")]
        struct Repeats(#[source] std::io::Error);
        let io = std::io::Error::other("refused");
        assert_eq!(chain(&Repeats(io)), "cannot connect: refused");
    }
}
