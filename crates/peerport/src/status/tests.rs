//! Unit tests of the parent module.

use super::*;

#[test]
fn a_receiver_without_sessions_is_waiting_and_a_sender_listening() {
    let r = Monitor::new(Info::new("receiver", "ice", "r"), Ledger::new());
    r.sample();
    let s = r.snapshot();
    assert_eq!(s.state, "waiting");
    assert!(s.sessions.is_empty());
    let s = Monitor::new(Info::new("sender", "ice", "s"), Ledger::new()).snapshot();
    assert_eq!(s.state, "listening");
}

#[test]
fn ended_sessions_become_events_and_keep_their_counts() {
    let ledger = Ledger::new();
    let m = Monitor::new(Info::new("sender", "ice", "s"), ledger.clone());
    let t = ledger.open_session();
    drop(t.stream_opened());
    m.sample();
    assert_eq!(m.snapshot().sessions.len(), 1);
    drop(t);
    m.sample();
    let s = m.snapshot();
    assert!(s.sessions.is_empty());
    assert_eq!(s.totals.sums.tcp_total, 1);
    assert_eq!(s.totals.sessions_ended, 1);
    assert!(matches!(s.events.last().unwrap().kind, EventKind::Ended));
    let json = serde_json::to_string(&s).unwrap();
    let back: Snapshot = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}
