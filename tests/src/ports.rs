//! Loopback ports for the servers a test or benchmark starts. A port is
//! free when asked and may be taken before the server binds it: the
//! servers that bind both TCP and UDP (knotd, unbound) get a port free
//! for both. Each panics when the system has no port to give.

#![expect(
    clippy::missing_panics_doc,
    reason = "test helpers panic with a message on any failure, by design"
)]

use std::net::{SocketAddr, TcpListener, UdpSocket};

/// A loopback address with a TCP port free a moment ago.
pub fn free_tcp() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("find a free TCP port on loopback")
}

/// A loopback address with a UDP port free a moment ago.
pub fn free_udp() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|socket| socket.local_addr())
        .expect("find a free UDP port on loopback")
}

/// A loopback address with a port free a moment ago for both TCP and UDP.
pub fn free_tcp_and_udp() -> SocketAddr {
    for _ in 0..100 {
        let addr = free_tcp();
        if UdpSocket::bind(addr).is_ok() {
            return addr;
        }
    }
    panic!("no loopback port free for both TCP and UDP in 100 tries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_port_for_both_can_be_bound_by_both() {
        let addr = free_tcp_and_udp();
        assert!(addr.ip().is_loopback());
        let _tcp = TcpListener::bind(addr).expect("TCP");
        let _udp = UdpSocket::bind(addr).expect("UDP");
    }
}
