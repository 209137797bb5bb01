//! `permaproxy health`: asks the local public listener whether it is up, for
//! a container's HEALTHCHECK. The slim image has no curl or wget, so the
//! binary asks itself, as `imgproxy health` does.
//!
//! It reads the same settings as `serve` (LISTEN_ADDR, or 0.0.0.0:$PORT), so
//! in a container it finds the port the server is on without being told.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::config::Config;
use crate::proxy::PUBLIC_HEALTH_PATH;

#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("LISTEN_ADDR {0:?} is not an address to connect to")]
    Address(String),
    #[error("cannot reach {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("no answer from {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("{addr} answered {status_line:?}")]
    Unhealthy {
        addr: SocketAddr,
        status_line: String,
    },
}

/// Where the public listener can be reached from inside the same host: a
/// wildcard bind (0.0.0.0, [::]) is asked on loopback of the same family.
pub fn local_addr(listen_addr: &str) -> Result<SocketAddr, HealthError> {
    let mut addr: SocketAddr = listen_addr
        .parse()
        .map_err(|_| HealthError::Address(listen_addr.to_string()))?;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
    }
    Ok(addr)
}

/// `GET /__permaproxy/healthz` on the public listener; Ok only for a 200.
/// Plain HTTP/1.1 over a socket: one request, no client library needed.
pub fn check(cfg: &Config, timeout: Duration) -> Result<(), HealthError> {
    let addr = local_addr(&cfg.listen_addr)?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|source| HealthError::Connect { addr, source })?;
    let io = |source| HealthError::Io { addr, source };
    stream.set_read_timeout(Some(timeout)).map_err(io)?;
    stream.set_write_timeout(Some(timeout)).map_err(io)?;
    let request = format!(
        "GET {PUBLIC_HEALTH_PATH} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: permaproxy-health\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).map_err(io)?;
    // The status line is all that is needed; it comes first.
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 4096 {
        let n = stream.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or("").trim().to_string();
    let mut parts = status_line.split_whitespace();
    let ok = matches!(
        (parts.next(), parts.next()),
        (Some(v), Some("200")) if v.starts_with("HTTP/1.")
    );
    if ok {
        Ok(())
    } else {
        Err(HealthError::Unhealthy { addr, status_line })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_asked_on_loopback() {
        assert_eq!(
            local_addr("0.0.0.0:3001").unwrap(),
            "127.0.0.1:3001".parse().unwrap()
        );
        assert_eq!(
            local_addr("[::]:8080").unwrap(),
            "[::1]:8080".parse().unwrap()
        );
        assert_eq!(
            local_addr("10.1.2.3:80").unwrap(),
            "10.1.2.3:80".parse().unwrap()
        );
        assert!(local_addr("localhost:80").is_err());
    }
}
