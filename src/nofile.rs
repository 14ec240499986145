//! The open-files limit: `flotilla run` raises its soft `RLIMIT_NOFILE` to the hard limit at
//! start, as Go's runtime (and so GitLab Runner) does since Go 1.19. Each running job holds
//! a few descriptors (its VM's Docker connection, the attach stream, the trace spill file, the
//! GitLab connection), so the common soft limit of 1,024 caps a manager at a few hundred jobs.
//! Owns only that raise.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// The soft and hard limits after [`raise`]: `(soft, hard)`, `None` for unlimited.
pub type Limits = (Option<u64>, Option<u64>);

/// Raises the soft open-files limit to the hard one; returns the limits in force afterwards,
/// or the error of `setrlimit` (the old limits then stay).
pub fn raise() -> Result<Limits, std::io::Error> {
    let current = getrlimit(Resource::Nofile);
    if current.current == current.maximum {
        return Ok((current.current, current.maximum));
    }
    let wanted = Rlimit {
        current: current.maximum,
        maximum: current.maximum,
    };
    setrlimit(Resource::Nofile, wanted)?;
    let now = getrlimit(Resource::Nofile);
    Ok((now.current, now.maximum))
}

#[cfg(test)]
mod tests {
    #[test]
    fn soft_limit_reaches_the_hard_limit() {
        let (soft, hard) = super::raise().expect("raise");
        assert_eq!(soft, hard);
        let again = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(again.current, again.maximum);
    }
}
