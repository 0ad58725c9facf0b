//! Egress allowlist entries (`egress = ["api.example.com", "*.example.org:8443",
//! "10.0.0.0/8:80"]`): parsed and checked once, matched by the agent's host-side proxy
//! (src/egress). Pure.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Port an entry without one allows: TLS, what an agent's APIs speak.
pub const DEFAULT_PORT: u16 = 443;
/// Longest DNS name.
const MAX_NAME: usize = 253;

/// What an entry names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    /// One DNS name, lowercase.
    Name(String),
    /// `*.suffix`: any name strictly below `suffix`.
    Wildcard(String),
    /// An address or a network (admins only): `prefix` bits of `addr`.
    Net { addr: IpAddr, prefix: u8 },
}

/// One allowlist entry: a destination and a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressEntry {
    pub dest: Dest,
    pub port: u16,
}

impl fmt::Display for EgressEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dest {
            Dest::Name(n) => write!(f, "{n}:{}", self.port),
            Dest::Wildcard(s) => write!(f, "*.{s}:{}", self.port),
            Dest::Net {
                addr: IpAddr::V4(a),
                prefix: 32,
            } => write!(f, "{a}:{}", self.port),
            Dest::Net {
                addr: IpAddr::V6(a),
                prefix: 128,
            } => write!(f, "[{a}]:{}", self.port),
            Dest::Net {
                addr: IpAddr::V4(a),
                prefix,
            } => write!(f, "{a}/{prefix}:{}", self.port),
            Dest::Net {
                addr: IpAddr::V6(a),
                prefix,
            } => {
                write!(f, "[{a}/{prefix}]:{}", self.port)
            }
        }
    }
}

impl Serialize for EgressEntry {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for EgressEntry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl FromStr for EgressEntry {
    type Err = String;

    /// `HOST[:PORT]`, `*.SUFFIX[:PORT]`, `IP[:PORT]`, `[IPv6][:PORT]`, `CIDR[:PORT]`
    /// (an IPv6 network in brackets: `[fd00::/8]:443`).
    fn from_str(s: &str) -> Result<Self, String> {
        let shown = crate::spec::one_line(s);
        let bad = |why: &str| format!("egress entry \"{shown}\": {why}");
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (inside, after) = rest.split_once(']').ok_or_else(|| bad("no closing ]"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
            };
            (inside, port)
        } else {
            match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(bad("the port must be 1-65535")),
            },
        };
        let dest = parse_dest(host).map_err(|why| bad(&why))?;
        Ok(EgressEntry { dest, port })
    }
}

fn parse_dest(host: &str) -> Result<Dest, String> {
    if let Some((addr, prefix)) = host.split_once('/') {
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| "not an address before /".to_string())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix: u8 = match prefix.parse() {
            Ok(p) if p <= max => p,
            _ => return Err(format!("the prefix length must be 0-{max}")),
        };
        return Ok(Dest::Net { addr, prefix });
    }
    if let Ok(addr) = host.parse::<IpAddr>() {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        return Ok(Dest::Net { addr, prefix });
    }
    if host == "*" {
        return Err("a bare * would allow everything; name the domain (*.example.com)".into());
    }
    let (wild, name) = match host.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, host),
    };
    check_name(name)?;
    let name = name.to_ascii_lowercase();
    if wild {
        if !name.contains('.') {
            return Err("a wildcard over a whole top-level domain is too wide".into());
        }
        Ok(Dest::Wildcard(name))
    } else {
        Ok(Dest::Name(name))
    }
}

/// A DNS name: labels of letters, digits and `-` (not at either end), at most 63 each.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name must be 1-{MAX_NAME} characters"));
    }
    for label in name.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err("not a DNS name (letters, digits, - and . only; * only as *.)".into());
        }
    }
    if name.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err("not a DNS name nor an address".into());
    }
    Ok(())
}

impl EgressEntry {
    /// Whether the entry names an address or network rather than a name (only an admin
    /// may allowlist one).
    pub fn is_address(&self) -> bool {
        matches!(self.dest, Dest::Net { .. })
    }

    /// Whether a name (lowercase, as asked) at `port` is what this entry allows.
    pub fn allows_name(&self, name: &str, port: u16) -> bool {
        port == self.port
            && match &self.dest {
                Dest::Name(n) => n == name,
                Dest::Wildcard(s) => name
                    .strip_suffix(s.as_str())
                    .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
                Dest::Net { .. } => false,
            }
    }

    /// Whether this entry names `ip` itself (an address or a network holding it) at `port`.
    pub fn allows_addr(&self, ip: IpAddr, port: u16) -> bool {
        port == self.port
            && match &self.dest {
                Dest::Net { addr, prefix } => in_net(ip, *addr, *prefix),
                _ => false,
            }
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Addresses no name may lead to unless an entry names them: the host's own loopback,
/// link-local (cloud metadata at 169.254.169.254), unspecified and multicast. An
/// allowlisted name that resolves to one is DNS rebinding.
pub fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || a.is_multicast()
                || a.is_broadcast()
        }
        IpAddr::V6(a) => {
            if let Some(v4) = a.to_ipv4_mapped() {
                return is_special(IpAddr::V4(v4));
            }
            a.is_loopback()
                || a.is_unspecified()
                || a.is_multicast()
                || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str) -> EgressEntry {
        s.parse().unwrap()
    }

    #[test]
    fn entries_parse_with_the_default_port_and_print_back() {
        for (input, shown) in [
            ("api.example.com", "api.example.com:443"),
            ("API.Example.com:8080", "api.example.com:8080"),
            ("*.example.org", "*.example.org:443"),
            ("10.0.0.0/8:80", "10.0.0.0/8:80"),
            ("192.0.2.7", "192.0.2.7:443"),
            ("[::1]:8443", "[::1]:8443"),
            ("[fd00::/8]", "[fd00::/8]:443"),
        ] {
            assert_eq!(e(input).to_string(), shown);
            assert_eq!(e(shown).to_string(), shown, "round trip");
        }
    }

    #[test]
    fn bad_entries_are_refused_in_one_line() {
        for bad in [
            "",
            "*",
            "*:443",
            "*.com",
            "a..b",
            "-a.com",
            "a.com:0",
            "a.com:99999",
            "a b.com",
            "a.com:x",
            "10.0.0.0/33",
            "1.2.3",
            "a.com\n:443",
            "[::1",
            "*.*.com",
        ] {
            let err = bad.parse::<EgressEntry>().unwrap_err();
            assert!(err.starts_with("egress entry"), "{bad}: {err}");
            assert!(!err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn matching_is_exact_by_name_port_and_wildcard_depth() {
        assert!(e("api.example.com").allows_name("api.example.com", 443));
        assert!(!e("api.example.com").allows_name("api.example.com", 80));
        assert!(!e("api.example.com").allows_name("xapi.example.com", 443));
        let w = e("*.example.com");
        assert!(w.allows_name("a.example.com", 443));
        assert!(w.allows_name("a.b.example.com", 443));
        assert!(!w.allows_name("example.com", 443));
        assert!(!w.allows_name("badexample.com", 443));
        let n = e("10.0.0.0/8:80");
        assert!(n.allows_addr("10.1.2.3".parse().unwrap(), 80));
        assert!(!n.allows_addr("11.1.2.3".parse().unwrap(), 80));
        assert!(!n.allows_name("10.1.2.3", 80));
    }

    #[test]
    fn loopback_link_local_unspecified_and_multicast_are_special() {
        for ip in [
            "127.0.0.1",
            "127.9.9.9",
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_special(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.0.0.1", "192.0.2.1", "2001:db8::1"] {
            assert!(!is_special(ip.parse().unwrap()), "{ip}");
        }
    }
}
