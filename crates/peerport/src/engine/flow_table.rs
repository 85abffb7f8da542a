//! The receiver's UDP client table: each client address gets a flow id
//! (the `--target`'s index in the high byte), kept across sessions.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use tracing::debug;

#[derive(Debug)]
struct Flow {
    id: u32,
    seq: u16,
    last_seen: Instant,
}

/// The receiver's client table: address <-> flow id.
#[derive(Debug)]
pub(crate) struct FlowTable {
    by_addr: HashMap<SocketAddr, Flow>,
    by_id: HashMap<u32, SocketAddr>,
    next_id: u32,
    /// The `--target`'s index in the hello, in the flow ids' high byte.
    index: u8,
    max: usize,
}

/// Flow ids count in the low 24 bits; the high byte names the service.
const FLOW_MASK: u32 = 0x00ff_ffff;

impl FlowTable {
    pub(crate) fn new(max: usize, index: u8) -> Self {
        FlowTable {
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            next_id: 1,
            index,
            max: max.max(1),
        }
    }

    /// Flow id and next sequence number for a packet from `from`; `None` if the table is full.
    pub(super) fn outgoing(&mut self, from: SocketAddr, now: Instant) -> Option<(u32, u16, bool)> {
        if let Some(f) = self.by_addr.get_mut(&from) {
            f.last_seen = now;
            f.seq = f.seq.wrapping_add(1);
            return Some((f.id, f.seq, false));
        }
        if self.by_addr.len() >= self.max {
            return None;
        }
        let id = (self.index as u32) << 24 | self.next_id;
        self.next_id = (self.next_id % FLOW_MASK) + 1;
        self.by_addr.insert(
            from,
            Flow {
                id,
                seq: 0,
                last_seen: now,
            },
        );
        self.by_id.insert(id, from);
        Some((id, 0, true))
    }

    /// Flows in the table.
    pub(crate) fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub(super) fn incoming(&mut self, id: u32, now: Instant) -> Option<SocketAddr> {
        let addr = *self.by_id.get(&id)?;
        if let Some(f) = self.by_addr.get_mut(&addr) {
            f.last_seen = now;
        }
        Some(addr)
    }

    pub(crate) fn expire(&mut self, now: Instant, idle: Duration) -> Vec<u32> {
        let mut gone = Vec::new();
        self.by_addr.retain(|addr, f| {
            let keep = now.duration_since(f.last_seen) < idle;
            if !keep {
                debug!(client = %addr, flow = f.id, "udp flow expired");
                gone.push(f.id);
            }
            keep
        });
        for id in &gone {
            self.by_id.remove(id);
        }
        gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_table_caps_and_expires() {
        let mut t = FlowTable::new(2, 3);
        let now = Instant::now();
        let a: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:2".parse().unwrap();
        let c: SocketAddr = "127.0.0.1:3".parse().unwrap();
        let (ia, _, new) = t.outgoing(a, now).unwrap();
        assert!(new);
        let (ia2, seq, new) = t.outgoing(a, now).unwrap();
        assert_eq!((ia, 1, false), (ia2, seq, new));
        let (ib, _, _) = t.outgoing(b, now).unwrap();
        assert_ne!(ia, ib);
        // the service index is the high byte
        assert_eq!((ia >> 24, ib >> 24), (3, 3));
        assert!(t.outgoing(c, now).is_none());
        assert_eq!(t.incoming(ib, now), Some(b));
        let later = now + Duration::from_secs(61);
        t.incoming(ib, later - Duration::from_secs(1));
        assert_eq!(t.expire(later, Duration::from_secs(60)), vec![ia]);
        assert!(t.outgoing(c, later).is_some());
    }
}
