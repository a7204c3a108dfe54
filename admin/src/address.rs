//! Listener addresses as operators write them: an IP and port (`127.0.0.1:23646`,
//! `[::1]:23646`, `0.0.0.0:23646`) or, as SeaweedFS's admin takes them, a host name and
//! port (`localhost:23646`, `admin.internal:23646`). A name is resolved once, at start.

use std::net::{Ipv4Addr, SocketAddr, ToSocketAddrs};

/// A listener address and the host name it was written with, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    pub addr: SocketAddr,
    /// The name the operator wrote (lowercased, without a trailing dot); `None` for an IP.
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is a URL; a listen address is host:port without a scheme, such as localhost:23646")]
    Url(String),
    #[error("{0:?} is not host:port; write it as 127.0.0.1:23646, [::1]:23646 or localhost:23646")]
    Shape(String),
    #[error("{0:?} has no valid port; the port is a number from 0 to 65535")]
    Port(String),
    #[error("cannot resolve the host name {host:?}: {reason}")]
    Resolve { host: String, reason: String },
}

/// Names that always mean this machine's loopback (RFC 6761): `localhost` and names
/// under it. The DNS-rebinding guard (`http/host.rs`) answers them, and a listener
/// written with one binds 127.0.0.1 without asking a resolver.
pub fn is_loopback_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

impl ListenAddr {
    pub fn parse(text: &str) -> Result<ListenAddr, AddressError> {
        let text = text.trim();
        if text.contains("://") {
            return Err(AddressError::Url(text.to_string()));
        }
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ListenAddr { addr, name: None });
        }
        let shape = || AddressError::Shape(text.to_string());
        let (host, port) = text.rsplit_once(':').ok_or_else(shape)?;
        // An unbracketed IPv6 address, a path or an empty host is not host:port.
        if host.is_empty() || host.contains([':', '/', '[', ']']) || host.chars().any(char::is_whitespace) {
            return Err(shape());
        }
        let port: u16 = port.parse().map_err(|_| AddressError::Port(text.to_string()))?;
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        let addr =
            if is_loopback_name(&name) { SocketAddr::from((Ipv4Addr::LOCALHOST, port)) } else { resolve(host, port)? };
        Ok(ListenAddr { addr, name: Some(name) })
    }

    /// The name to add to the loopback guard's allowed names: a name other than
    /// `localhost` that resolved to loopback (say, a host name /etc/hosts maps to
    /// 127.0.1.1) is one the operator means to reach the admin by.
    pub fn extra_allowed_host(&self) -> Option<&str> {
        self.name.as_deref().filter(|n| !is_loopback_name(n) && self.addr.ip().is_loopback())
    }
}

impl std::str::FromStr for ListenAddr {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        ListenAddr::parse(text)
    }
}

/// The first IPv4 address the name has, else its first address.
fn resolve(host: &str, port: u16) -> Result<SocketAddr, AddressError> {
    let failed = |reason: String| AddressError::Resolve { host: host.to_string(), reason };
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs().map_err(|e| failed(e.to_string()))?.collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| failed("it has no addresses".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(text: &str) -> ListenAddr {
        ListenAddr::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn ip_addresses_parse_as_before() {
        assert_eq!(parsed("127.0.0.1:23646"), ListenAddr { addr: "127.0.0.1:23646".parse().unwrap(), name: None });
        assert_eq!(parsed("[::1]:0").addr, "[::1]:0".parse().unwrap());
        assert_eq!(parsed(" 0.0.0.0:80 ").addr, "0.0.0.0:80".parse().unwrap());
    }

    #[test]
    fn localhost_binds_loopback_without_a_resolver() {
        for text in ["localhost:0", "LOCALHOST:23646", "localhost.:1", "admin.localhost:2"] {
            let a = parsed(text);
            assert!(a.addr.ip().is_loopback() && a.addr.is_ipv4(), "{text}: {a:?}");
            assert_eq!(a.extra_allowed_host(), None, "{text}: a loopback name is always allowed");
        }
        assert_eq!(parsed("localhost:0").addr, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        assert_eq!(parsed("LocalHost:23646").name.as_deref(), Some("localhost"));
    }

    #[test]
    fn a_loopback_name_of_its_own_is_allowed_by_the_host_guard_and_an_unknown_one_fails() {
        // What a name /etc/hosts maps to 127.0.1.1 parses to (Debian's own host name).
        let a = ListenAddr { addr: "127.0.1.1:23646".parse().unwrap(), name: Some("myhost".into()) };
        assert_eq!(a.extra_allowed_host(), Some("myhost"));
        let public = ListenAddr { addr: "10.0.0.1:23646".parse().unwrap(), name: Some("myhost".into()) };
        assert_eq!(public.extra_allowed_host(), None, "the guard is off off loopback");
        let err = ListenAddr::parse("no-such-host.invalid:23646").unwrap_err();
        assert!(matches!(err, AddressError::Resolve { .. }), "{err}");
    }

    #[test]
    fn bad_addresses_say_what_is_wrong() {
        assert!(matches!(ListenAddr::parse("http://localhost:23646"), Err(AddressError::Url(_))));
        assert!(matches!(ListenAddr::parse("localhost:99999"), Err(AddressError::Port(_))));
        assert!(matches!(ListenAddr::parse("localhost:"), Err(AddressError::Port(_))));
        for shape in ["localhost", "", ":23646", "::1:23646", "a/b:1", "a b:1"] {
            assert!(matches!(ListenAddr::parse(shape), Err(AddressError::Shape(_))), "{shape}");
        }
        let message = ListenAddr::parse("localhost").unwrap_err().to_string();
        assert!(message.contains("localhost:23646"), "{message}");
    }
}
