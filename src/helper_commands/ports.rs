//! `flotilla helper wait-for-ports`: the service health check (GitLab Runner's `gitlab-runner-helper
//! health-check`). Run by the executor in a short-lived container on the job's network; it
//! returns once a TCP connection to every given port of the host succeeds and otherwise keeps
//! trying — the executor bounds it by `wait_for_services_timeout` and removes the container.

use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::Duration;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The pause between rounds of attempts (the host may not even resolve yet).
const RETRY_EVERY: Duration = Duration::from_millis(250);

/// Arguments of `flotilla helper wait-for-ports`.
#[derive(Debug, clap::Args)]
pub struct WaitForPorts {
    /// The host to connect to (a service's name or address).
    #[arg(long)]
    pub host: String,
    /// A TCP port that must accept a connection (repeat for several).
    #[arg(long = "port", required = true)]
    pub ports: Vec<u16>,
}

/// Waits until every port accepts a connection; exit 0 then.
pub fn run(args: &WaitForPorts) -> ExitCode {
    let list: Vec<String> = args.ports.iter().map(u16::to_string).collect();
    println!(
        "waiting for TCP connection to {} on [{}]...",
        args.host,
        list.join(" ")
    );
    let _ = std::io::stdout().flush();
    for &port in &args.ports {
        while !connects(&args.host, port) {
            std::thread::sleep(RETRY_EVERY);
        }
        println!("{}:{port} accepts connections", args.host);
    }
    ExitCode::SUCCESS
}

/// Whether a TCP connection to `host:port` succeeds now (any resolved address).
pub fn connects(host: &str, port: u16) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|addr| TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_port_connects_and_a_closed_one_does_not() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert!(connects("127.0.0.1", port));
        drop(listener);
        assert!(!connects("127.0.0.1", port));
        assert!(!connects("no-such-host.invalid", port));
    }

    #[test]
    fn returns_once_every_port_is_open() {
        let a = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let b = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let args = WaitForPorts {
            host: "127.0.0.1".into(),
            ports: vec![
                a.local_addr().unwrap().port(),
                b.local_addr().unwrap().port(),
            ],
        };
        assert_eq!(run(&args), ExitCode::SUCCESS);
    }
}
