//! Addresses and rules a person writes (flags, config files, `[[service]]`
//! tables): `--source`, `--target`, `--allow`, service names, modes,
//! congestion controllers. Each parses or says why not; what parses
//! prints back to text that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use peerport::{
    addr::{check_service_name, ForwardAddr, SourceSpec, TargetSpec},
    engine::policy::AllowRule,
    transport::Congestion,
};
use peerport_signaling::Mode;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(a) = text.parse::<ForwardAddr>() {
        assert_eq!(a.to_string().parse::<ForwardAddr>(), Ok(a.clone()), "{a}");
        let _ = a.host_port();
    }
    if let Ok(s) = text.parse::<SourceSpec>() {
        let again = if s.name.is_empty() {
            s.source.to_string()
        } else {
            format!("{}={}", s.name, s.source)
        };
        assert_eq!(again.parse::<SourceSpec>(), Ok(s), "{again}");
    }
    if let Ok(t) = text.parse::<TargetSpec>() {
        assert_eq!(t.to_string().parse::<TargetSpec>(), Ok(t.clone()), "{t}");
    }
    if let Ok(r) = text.parse::<AllowRule>() {
        assert_eq!(r.to_string().parse::<AllowRule>(), Ok(r.clone()), "{r}");
    }
    if check_service_name(text).is_ok() {
        assert!(!text.is_empty() && text.len() <= 32);
    }
    if let Ok(m) = text.parse::<Mode>() {
        assert_eq!(m.as_str().parse::<Mode>(), Ok(m));
    }
    let _ = text.parse::<Congestion>();
});
