//! Which addresses outbound requests (webhook deliveries) may reach: private,
//! loopback, link-local (cloud metadata) and other special ranges are refused
//! unless an allow-list names them. Shared by every host: [`AddressPolicy`]
//! checks a target URL before it is sent, and hosts that resolve names
//! apply [`AddressPolicy::permits`] to every resolved address too.

use std::net::IpAddr;

use crate::{ApiError, ErrorCode};

/// An address block such as `127.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `ip/bits`, or a bare address (a block of one).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, bits)) => (ip.parse().ok()?, bits.parse().ok()?),
            None => {
                let ip: IpAddr = s.parse().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if matches!(ip, IpAddr::V4(_)) { 32 } else { 128 };
        (bits <= max).then_some(Cidr { net: ip, bits })
    }

    /// Whether `ip` is inside this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.bits == 0 { 0 } else { u32::MAX << (32 - self.bits) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.bits == 0 { 0 } else { u128::MAX << (128 - self.bits) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// Whether `ip` is an address outbound webhooks must not reach by default.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local() // includes 169.254.169.254 (cloud metadata)
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xC0) == 64) // 100.64.0.0/10 shared
                || (o[0] == 192 && o[1] == 0 && o[2] == 0) // 192.0.0.0/24
                || (o[0] == 198 && (o[1] & 0xFE) == 18) // 198.18.0.0/15 benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00 // unique local
                || (seg[0] & 0xffc0) == 0xfe80 // link local
                || (seg[0] == 0xfd00 && seg[1] == 0x0ec2) // AWS metadata v6 (fd00:ec2::254)
        }
    }
}

/// Parses an outbound target: an `http` or `https` URL with a host. The
/// error says why not.
pub fn parse_target(url: &str) -> Result<url::Url, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("only http and https targets are allowed, not {}", parsed.scheme()));
    }
    if parsed.host().is_none() {
        return Err("URL has no host".into());
    }
    Ok(parsed)
}

/// What outbound requests may reach: every public address, and the private
/// ones ([`is_private`]) that an allow-list block covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressPolicy {
    allow: Vec<Cidr>,
    /// Where operators allow private blocks (`outbound.allow`), named in refusals.
    setting: &'static str,
}

impl AddressPolicy {
    /// A policy allowing the private blocks `allow`, configured in `setting`.
    pub fn new(allow: Vec<Cidr>, setting: &'static str) -> Self {
        AddressPolicy { allow, setting }
    }

    /// Whether requests may reach `ip`.
    pub fn permits(&self, ip: IpAddr) -> bool {
        !is_private(ip) || self.allow.iter().any(|c| c.contains(ip))
    }

    /// Checks a target URL before it is sent: http(s), a host, and no
    /// literal address the policy refuses (names are the resolver's to
    /// check). Refusals are `FORBIDDEN`.
    pub fn check_url(&self, url: &str) -> Result<url::Url, ApiError> {
        let refuse = |why: String| ApiError::new(ErrorCode::Forbidden, why);
        let parsed = parse_target(url).map_err(refuse)?;
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) | None => None,
        };
        if let Some(ip) = ip
            && !self.permits(ip)
        {
            return Err(refuse(format!("target address {ip} is private; allow it in {} to use it", self.setting)));
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fc00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "1.1.1.1", "2606:4700::1111"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn blocks() {
        let loopback = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(loopback.contains("127.0.0.1".parse().unwrap()));
        assert!(!loopback.contains("10.0.0.1".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nonsense"), None);
    }

    #[test]
    fn a_policy_refuses_other_schemes_and_literal_private_addresses_outside_its_blocks() {
        let closed = AddressPolicy::new(Vec::new(), "outbound.allow");
        let refused = |policy: &AddressPolicy, url: &str| policy.check_url(url).unwrap_err();
        assert_eq!(refused(&closed, "http://127.0.0.1:9/x").code, ErrorCode::Forbidden);
        assert_eq!(
            refused(&closed, "http://[::1]/").message,
            "target address ::1 is private; allow it in outbound.allow to use it"
        );
        assert_eq!(refused(&closed, "ftp://example.com/").message, "only http and https targets are allowed, not ftp");
        assert!(refused(&closed, "not a url").message.starts_with("invalid URL \"not a url\""));
        assert!(closed.check_url("https://example.com/hook").is_ok());
        assert!(closed.check_url("http://10.0.0.1.example.com/").is_ok(), "names are the resolver's to check");
        let open = AddressPolicy::new(vec![Cidr::parse("127.0.0.0/8").unwrap()], "OUTBOUND_ALLOW");
        assert!(open.check_url("http://127.0.0.1:9/x").is_ok());
        assert!(open.permits("127.0.0.1".parse().unwrap()) && !open.permits("10.0.0.1".parse().unwrap()));
        assert!(refused(&open, "http://10.0.0.1/").message.ends_with("allow it in OUTBOUND_ALLOW to use it"));
    }

    #[test]
    fn targets_are_http_urls_with_a_host() {
        assert!(parse_target("https://example.com/hook").is_ok());
        assert!(parse_target("http://").is_err());
        assert!(parse_target("mailto:a@example.com").is_err());
        assert!(parse_target("https://exa mple.com/").is_err());
    }
}
