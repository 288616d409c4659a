//! Where deliveries may go. A subscription's URL is chosen by whoever may create one (a
//! manager of an organisation), and the control plane POSTs to it from inside the network: a
//! URL naming `127.0.0.1:9901/quitquitquit` (a co-located Envoy's admin port),
//! `169.254.169.254` (a cloud's metadata service) or any internal service would turn alerts
//! into requests a tenant aims at the operator's own network. So a delivery goes only to
//! public addresses, unless the operator allows a range (`--alert-allow-target 10.0.0.0/8`,
//! for an internal receiver).
//!
//! Checked where the connection is made, not when the subscription is created (a name can
//! resolve elsewhere later): the dispatcher's HTTP client resolves names through
//! [`GuardedResolver`], which drops every refused address (none left: the attempt fails with
//! the reason), and a URL whose host is an address literal is checked before the request
//! ([`Targets::check_url`]). Redirects stay on the same host, so they meet the same checks.
//! (A proxy configured for the process resolves names itself: route alerts through one only
//! if it applies the same rule.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The ranges a delivery may reach beyond the public internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    allow: Vec<IpNet>,
}

/// Why an address is not public, if it is not.
fn not_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => not_public_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => not_public_v4(v4),
            None => not_public_v6(v6),
        },
    }
}

fn not_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() || a == 0 {
        Some("unspecified (\"this network\")")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata services live here)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared address space (carrier-grade NAT)")
    } else if ip.is_multicast() || ip.is_broadcast() || a >= 240 {
        Some("multicast, broadcast or reserved")
    } else {
        None
    }
}

fn not_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_unique_local() {
        Some("private (unique local)")
    } else if ip.is_unicast_link_local() {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

impl Targets {
    /// Public addresses and those of `allow`.
    pub fn new(allow: Vec<IpNet>) -> Targets {
        Targets { allow }
    }

    /// Whether a delivery may connect to `ip`; if not, why (without anything but the address).
    pub fn check(&self, ip: IpAddr) -> Result<(), String> {
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return Ok(());
        }
        match not_public(ip) {
            None => Ok(()),
            Some(kind) => Err(format!(
                "refused target: {ip} is {kind}; an operator can allow its range with --alert-allow-target"
            )),
        }
    }

    /// Checks a URL whose host is an address literal (a name is checked when it resolves).
    pub fn check_url(&self, url: &reqwest::Url) -> Result<(), String> {
        // The parsed URL's host is normalised: `2130706433` and `0x7f.1` read `127.0.0.1`.
        let host = url.host_str().unwrap_or("");
        match host.trim_start_matches('[').trim_end_matches(']').parse() {
            Ok(ip) => self.check(ip),
            Err(_) => Ok(()),
        }
    }
}

/// The dispatcher's DNS resolver: the system's answer without the addresses [`Targets`]
/// refuses.
#[derive(Debug, Clone)]
pub struct GuardedResolver(pub Arc<Targets>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let targets = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut refusal = None;
            let allowed: Vec<SocketAddr> = found
                .into_iter()
                .filter(|a| match targets.check(a.ip()) {
                    Ok(()) => true,
                    Err(why) => {
                        refusal.get_or_insert(why);
                        false
                    }
                })
                .collect();
            if allowed.is_empty() {
                let why = refusal.unwrap_or_else(|| format!("{host} has no address"));
                return Err(why.into());
            }
            let addrs: Addrs = Box::new(allowed.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_public_addresses_unless_allowed() {
        let none = Targets::default();
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
        ] {
            let err = none.check(ip(refused)).unwrap_err();
            assert!(err.contains(refused.trim_start_matches("::ffff:")), "{err}");
        }
        for public in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
        ] {
            assert_eq!(none.check(ip(public)), Ok(()), "{public}");
        }
        let some = Targets::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "::1/128".parse().unwrap(),
        ]);
        assert_eq!(some.check(ip("10.9.9.9")), Ok(()));
        assert_eq!(some.check(ip("::1")), Ok(()));
        assert!(some.check(ip("127.0.0.1")).is_err());
        assert!(some.check(ip("192.168.0.1")).is_err());
    }

    #[test]
    fn address_literals_in_urls_are_checked_names_are_left_to_the_resolver() {
        let t = Targets::default();
        let url = |s: &str| reqwest::Url::parse(s).unwrap();
        assert!(t
            .check_url(&url("http://127.0.0.1:9901/quitquitquit"))
            .is_err());
        assert!(t.check_url(&url("http://[::1]:9901/")).is_err());
        assert!(
            t.check_url(&url("http://2130706433/")).is_err(),
            "127.0.0.1 as a number"
        );
        assert_eq!(t.check_url(&url("https://hooks.slack.com/x")), Ok(()));
        assert_eq!(t.check_url(&url("http://93.184.216.34/")), Ok(()));
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses() {
        let guarded = GuardedResolver(Arc::new(Targets::default()));
        let err = guarded
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .unwrap();
        assert!(err.to_string().contains("loopback"), "{err}");
        let open = GuardedResolver(Arc::new(Targets::new(vec!["127.0.0.0/8".parse().unwrap()])));
        let addrs: Vec<SocketAddr> = match open.resolve("localhost".parse().unwrap()).await {
            Ok(a) => a.collect(),
            Err(e) => panic!("{e}"),
        };
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
    }
}
