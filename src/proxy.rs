//! PROXY protocol version 2: the header a TCP load balancer (HAProxy's
//! `send-proxy-v2`) puts before a connection's first byte to say who the
//! client is. recvault reads it only on connections from the balancers
//! `[listeners] trusted_proxies` names, and requires it there: so per-source
//! limits, the defender, the logs, the audit trail and the FTPS data-peer
//! check see the client, not the balancer, and no one else can claim an
//! address. A connection from any other address is never read for a
//! header (a client cannot forge its address).
//!
//! Only the binary version 2 is accepted (the text version 1 is not): a
//! 12-byte signature, version and command, family, a length, the
//! addresses, then TLVs (skipped). `LOCAL` (the balancer's own health
//! check) keeps the balancer's address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// The signature every version 2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// Longest header accepted (addresses and TLVs); HAProxy's are far shorter.
const MAX_LEN: usize = 1024;

/// How long a balancer has to send the header.
pub const HEADER_WITHIN: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProxyError {
    #[error("no PROXY protocol v2 header (the balancer must send one: send-proxy-v2)")]
    NoSignature,
    #[error("PROXY protocol version {0} (only version 2 is accepted)")]
    Version(u8),
    #[error("PROXY protocol command {0} is neither LOCAL nor PROXY")]
    Command(u8),
    #[error("PROXY header of {0} bytes is longer than {MAX_LEN}")]
    TooLong(usize),
    #[error("PROXY header's addresses are cut short ({0} bytes for family {1:#04x})")]
    Short(usize, u8),
    #[error("PROXY header for a transport other than TCP (family {0:#04x})")]
    Family(u8),
    #[error("no PROXY header within {} s", HEADER_WITHIN.as_secs())]
    Timeout,
    #[error("connection ended inside the PROXY header: {0}")]
    Io(String),
}

/// What the header says: the client's address, or `None` for `LOCAL`.
pub type Claimed = Option<SocketAddr>;

/// Parses the 16-byte fixed part: the length of what follows.
pub fn fixed(head: &[u8; 16]) -> Result<(u8, u8, usize), ProxyError> {
    if head[..12] != SIGNATURE {
        return Err(ProxyError::NoSignature);
    }
    let (version, command) = (head[12] >> 4, head[12] & 0x0f);
    if version != 2 {
        return Err(ProxyError::Version(version));
    }
    if command > 1 {
        return Err(ProxyError::Command(command));
    }
    let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
    if len > MAX_LEN {
        return Err(ProxyError::TooLong(len));
    }
    Ok((command, head[13], len))
}

/// The client's address from the part after the fixed 16 bytes.
pub fn addresses(command: u8, family: u8, rest: &[u8]) -> Result<Claimed, ProxyError> {
    if command == 0 {
        // LOCAL: the balancer speaking for itself; addresses are ignored.
        return Ok(None);
    }
    match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let a: [u8; 12] = rest
                .get(..12)
                .and_then(|s| s.try_into().ok())
                .ok_or(ProxyError::Short(rest.len(), family))?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // TCP over IPv6.
        0x21 => {
            let a: [u8; 36] = rest
                .get(..36)
                .and_then(|s| s.try_into().ok())
                .ok_or(ProxyError::Short(rest.len(), family))?;
            let mut src = [0u8; 16];
            src.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Ok(Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(src)), port)))
        }
        other => Err(ProxyError::Family(other)),
    }
}

/// Parses a whole header at the start of `bytes`: what it claims and its length.
pub fn parse(bytes: &[u8]) -> Result<(Claimed, usize), ProxyError> {
    let head: [u8; 16] = bytes
        .get(..16)
        .and_then(|s| s.try_into().ok())
        .ok_or(ProxyError::NoSignature)?;
    let (command, family, len) = fixed(&head)?;
    let rest = bytes
        .get(16..16 + len)
        .ok_or(ProxyError::Short(bytes.len().saturating_sub(16), family))?;
    Ok((addresses(command, family, rest)?, 16 + len))
}

/// Reads the header from the start of `sock` (no byte after it), within
/// [`HEADER_WITHIN`].
pub async fn read<S: AsyncRead + Unpin>(sock: &mut S) -> Result<Claimed, ProxyError> {
    let io = |e: std::io::Error| ProxyError::Io(e.to_string());
    let read = async {
        let mut head = [0u8; 16];
        sock.read_exact(&mut head).await.map_err(io)?;
        let (command, family, len) = fixed(&head)?;
        let mut rest = vec![0u8; len];
        sock.read_exact(&mut rest).await.map_err(io)?;
        addresses(command, family, &rest)
    };
    tokio::time::timeout(HEADER_WITHIN, read)
        .await
        .map_err(|_| ProxyError::Timeout)?
}

/// A version 2 header claiming `client` (for tests and benchmarks).
pub fn header(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut h = SIGNATURE.to_vec();
    h.push(0x21);
    match (client, server) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) => {
            h.push(0x11);
            h.extend_from_slice(&12u16.to_be_bytes());
            h.extend_from_slice(&c.ip().octets());
            h.extend_from_slice(&s.ip().octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&s.port().to_be_bytes());
        }
        (c, s) => {
            let v6 = |a: SocketAddr| match a.ip() {
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                IpAddr::V6(v6) => v6,
            };
            h.push(0x21);
            h.extend_from_slice(&36u16.to_be_bytes());
            h.extend_from_slice(&v6(c).octets());
            h.extend_from_slice(&v6(s).octets());
            h.extend_from_slice(&c.port().to_be_bytes());
            h.extend_from_slice(&s.port().to_be_bytes());
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_names_the_client_for_ipv4_and_ipv6_and_local_names_none() {
        let (c4, s4): (SocketAddr, SocketAddr) = (
            "203.0.113.7:50123".parse().unwrap(),
            "10.0.0.2:2222".parse().unwrap(),
        );
        let h = header(c4, s4);
        assert_eq!(parse(&h), Ok((Some(c4), 28)));
        let c6: SocketAddr = "[2001:db8::42]:4444".parse().unwrap();
        let h6 = header(c6, "[2001:db8::1]:22".parse().unwrap());
        assert_eq!(parse(&h6), Ok((Some(c6), 52)));
        // TLVs after the addresses are skipped (the length covers them).
        let mut tlv = h.clone();
        tlv[15] += 4;
        tlv.extend_from_slice(&[0x04, 0x00, 0x01, 0xaa]);
        assert_eq!(parse(&tlv), Ok((Some(c4), 32)));
        // LOCAL (a health check): no client.
        let mut local = h.clone();
        local[12] = 0x20;
        assert_eq!(parse(&local), Ok((None, 28)));
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        let good = header(
            "192.0.2.1:1".parse().unwrap(),
            "192.0.2.2:2".parse().unwrap(),
        );
        assert_eq!(
            parse(b"SSH-2.0-OpenSSH_9.2\r\n"),
            Err(ProxyError::NoSignature)
        );
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Err(ProxyError::NoSignature)
        );
        let mut v1 = good.clone();
        v1[12] = 0x11;
        assert_eq!(parse(&v1), Err(ProxyError::Version(1)));
        let mut cmd = good.clone();
        cmd[12] = 0x22;
        assert_eq!(parse(&cmd), Err(ProxyError::Command(2)));
        let mut udp = good.clone();
        udp[13] = 0x12;
        assert_eq!(parse(&udp), Err(ProxyError::Family(0x12)));
        let mut long = good.clone();
        long[14] = 0xff;
        assert_eq!(parse(&long), Err(ProxyError::TooLong(0xff0c)));
        assert!(matches!(parse(&good[..20]), Err(ProxyError::Short(..))));
        let mut short_len = good.clone();
        short_len[15] = 4;
        assert!(matches!(parse(&short_len), Err(ProxyError::Short(4, 0x11))));
    }

    #[tokio::test]
    async fn read_takes_the_header_and_nothing_after_it() {
        let c: SocketAddr = "198.51.100.9:777".parse().unwrap();
        let mut bytes = header(c, "198.51.100.1:21".parse().unwrap());
        bytes.extend_from_slice(b"SSH-2.0-x\r\n");
        let mut r = &bytes[..];
        assert_eq!(read(&mut r).await, Ok(Some(c)));
        assert_eq!(r, b"SSH-2.0-x\r\n");
    }
}
