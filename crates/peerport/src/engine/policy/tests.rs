//! Unit tests of the parent module.

use super::*;

fn want(p: Protocol, what: Wanted) -> Want {
    Want { protocol: p, what }
}

fn svc(name: &str) -> Wanted {
    Wanted::Service(name.into())
}

fn dest(host: &str, port: u16) -> Wanted {
    Wanted::Destination {
        host: host.into(),
        port,
    }
}

#[test]
fn allow_rules_parse_and_match() {
    let r: AllowRule = "10.0.0.0/24:22,443".parse().unwrap();
    assert!(r.allows_addr("10.0.0.5".parse().unwrap(), 22));
    assert!(r.allows_addr("10.0.0.5".parse().unwrap(), 443));
    assert!(!r.allows_addr("10.0.0.5".parse().unwrap(), 80));
    assert!(!r.allows_addr("10.0.1.5".parse().unwrap(), 22));
    // an IPv4-mapped IPv6 address is the IPv4 address
    assert!(r.allows_addr("::ffff:10.0.0.9".parse().unwrap(), 22));
    let r: AllowRule = "[fd00::/64]:8000-8100".parse().unwrap();
    assert!(r.allows_addr("fd00::1".parse().unwrap(), 8050));
    assert!(!r.allows_addr("fd00::1".parse().unwrap(), 8101));
    let r: AllowRule = "DB.Internal.:5432".parse().unwrap();
    assert!(r.allows_name("db.internal", 5432));
    assert!(!r.allows_addr("10.0.0.1".parse().unwrap(), 5432));
    let r: AllowRule = "127.0.0.1:*".parse().unwrap();
    assert!(r.allows_addr("127.0.0.1".parse().unwrap(), 1));
    for bad in [
        "10.0.0.0/24",
        "10.0.0.0/33:22",
        "fd00::1:22",
        "10.0.0.1:0",
        "10.0.0.1:22-21",
        "10.0.0.1:ssh",
        ":22",
        "a b:22",
    ] {
        let e = bad.parse::<AllowRule>().unwrap_err();
        assert!(
            e.contains("--allow") && e.contains("HOST_OR_CIDR"),
            "{bad}: {e}"
        );
    }
}

/// A host that looks like an IP address but is not a valid one is refused,
/// naming the rule, instead of becoming a host-name rule.
#[test]
fn invalid_addresses_are_not_host_names() {
    for (bad, why) in [
        ("300.0.0.1:22", "looks like an IPv4 address"),
        ("10.0.0.256:22", "looks like an IPv4 address"),
        ("10.0.0:22", "looks like an IPv4 address"),
        ("1.2.3.4.5:22", "looks like an IPv4 address"),
        ("10.0.0.1.:22", "looks like an IPv4 address"),
        ("22:22", "looks like an IPv4 address"),
        ("[fd00::zz]:22", "is not an IPv6 address"),
        ("[fd00:::1]:22", "is not an IPv6 address"),
        ("[db.internal]:22", "is not an IPv6 address"),
        ("[]:22", "no host"),
    ] {
        let e = bad.parse::<AllowRule>().unwrap_err();
        assert!(
            e.contains(&format!("--allow `{bad}`")) && e.contains(why) && e.contains("e.g."),
            "{bad}: {e}"
        );
    }
    // names with digits, valid addresses in or out of brackets still parse
    for good in [
        "db1.internal:5432",
        "10.0.0.1.example:22",
        "1e100.net:443",
        "[fd00::1]:22",
        "[10.0.0.1]:22",
        "255.255.255.255:1",
    ] {
        good.parse::<AllowRule>()
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    let r: AllowRule = "1e100.net:443".parse().unwrap();
    assert!(r.allows_name("1e100.net", 443));
}

#[test]
fn services_by_name_default_peers_and_protocol() {
    let tcp = |p: u16| format!("tcp://127.0.0.1:{p}").parse().unwrap();
    let mut web = Service::new("web", tcp(80));
    web.peers = Some(["alice".to_string()].into());
    let c = Catalog::new(vec![Service::new("ssh", tcp(22)), web], vec![]).unwrap();
    assert!(c.default_service().is_none());
    let g = c.grant(&want(Protocol::Tcp, svc("ssh")), "bob").unwrap();
    assert!(matches!(g, Route::Service(s) if s.source.port == 22));
    let e = c.grant(&want(Protocol::Tcp, svc("")), "bob").unwrap_err();
    assert!(e.message.contains("no default service") && e.message.contains("ssh, web"));
    let e = c
        .grant(&want(Protocol::Tcp, svc("dns")), "bob")
        .unwrap_err();
    assert_eq!(e.status, Status::BadRequest);
    assert!(e.message.contains("no service `dns`"));
    let e = c
        .grant(&want(Protocol::Tcp, svc("web")), "bob")
        .unwrap_err();
    assert_eq!(e.status, Status::Unauthorized);
    assert!(c.grant(&want(Protocol::Tcp, svc("web")), "alice").is_ok());
    let e = c
        .grant(&want(Protocol::Udp, svc("ssh")), "bob")
        .unwrap_err();
    assert_eq!(e.status, Status::ProtocolMismatch);
    // the only service is the default one
    let one = Catalog::new(vec![Service::new("ssh", tcp(22))], vec![]).unwrap();
    assert!(one.grant(&want(Protocol::Tcp, svc("")), "x").is_ok());
    assert!(Catalog::new(
        vec![Service::new("a", tcp(1)), Service::new("a", tcp(2))],
        vec![]
    )
    .is_err());
    assert!(Catalog::new(vec![], vec![]).is_err());
    assert!(Catalog::new(vec![Service::new("no spaces", tcp(1))], vec![]).is_err());
}

#[tokio::test]
async fn destinations_are_default_deny_and_every_address_is_checked() {
    let rules = vec![
        "127.0.0.1/32:1000-2000".parse().unwrap(),
        "localhost:7".parse().unwrap(),
    ];
    let c = Catalog::new(vec![], rules).unwrap();
    let ok = c
        .grant(&want(Protocol::Tcp, dest("127.0.0.1", 1500)), "p")
        .unwrap();
    assert_eq!(
        c.resolve(&ok).await.unwrap(),
        vec!["127.0.0.1:1500".parse().unwrap()]
    );
    let e = c
        .grant(&want(Protocol::Tcp, dest("127.0.0.2", 1500)), "p")
        .unwrap_err();
    assert!(
        e.message.contains("127.0.0.2:1500 is not allowed"),
        "{}",
        e.message
    );
    assert!(c
        .grant(&want(Protocol::Tcp, dest("127.0.0.1", 22)), "p")
        .is_err());
    // a name a rule names is allowed as it resolves
    let named = c
        .grant(&want(Protocol::Tcp, dest("LOCALHOST", 7)), "p")
        .unwrap();
    assert!(!c.resolve(&named).await.unwrap().is_empty());
    // no rules: nothing
    let none = Catalog::new(
        vec![Service::new("", "tcp://127.0.0.1:1".parse().unwrap())],
        vec![],
    )
    .unwrap();
    let e = none
        .grant(&want(Protocol::Tcp, dest("127.0.0.1", 1500)), "p")
        .unwrap_err();
    assert!(e.message.contains("no --allow rules"));
}
