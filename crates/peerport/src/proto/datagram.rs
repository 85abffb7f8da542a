//! UDP packets as QUIC datagrams, with fragmentation.
//!
//! A QUIC datagram holds about 1150 to 1414 bytes depending on the path, but
//! UDP applications send more (WireGuard about 1450, DNS and games up to 64 KiB).
//! Every packet is split into at most 255 fragments, each one datagram:
//!
//! ```text
//! flow id u32 BE | packet seq u16 BE | fragment index u8 | fragment count u8 | payload
//! ```
//!
//! The flow id names one client of the receiver (one source address), the
//! sequence number one packet of that flow. A packet that fits travels as a
//! single datagram with `count = 1` and is passed through without copying.
//! The [`Reassembler`] bounds its memory: a packet whose fragments do not all
//! arrive within the timeout, or that is evicted because too many are
//! incomplete, is dropped and counted.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};

/// Bytes of framing in front of each fragment.
pub const HEADER_LEN: usize = 8;
/// Largest UDP payload carried.
pub const MAX_PACKET: usize = 65_535;

/// Framing errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Shorter than the header.
    #[error("datagram shorter than the frame header")]
    Short,
    /// Index/count inconsistent.
    #[error("fragment index {index} out of range for count {count}")]
    BadFragment {
        /// Index received.
        index: u8,
        /// Count received.
        count: u8,
    },
    /// Packet too large to carry.
    #[error("packet of {0} bytes is larger than the {MAX_PACKET}-byte UDP limit")]
    TooLarge(usize),
    /// The path cannot carry even a header.
    #[error("the path's datagram limit of {0} bytes is too small to carry UDP")]
    PathTooSmall(usize),
}

/// Split `packet` into framed datagrams of at most `max_datagram` bytes each.
pub fn fragment(
    flow: u32,
    seq: u16,
    packet: &[u8],
    max_datagram: usize,
) -> Result<Vec<Bytes>, FrameError> {
    if packet.len() > MAX_PACKET {
        return Err(FrameError::TooLarge(packet.len()));
    }
    if max_datagram <= HEADER_LEN + 16 {
        return Err(FrameError::PathTooSmall(max_datagram));
    }
    let chunk = max_datagram - HEADER_LEN;
    let count = packet.len().div_ceil(chunk).max(1);
    if count > 255 {
        return Err(FrameError::TooLarge(packet.len()));
    }
    let mut out = Vec::with_capacity(count);
    for index in 0..count {
        let part = &packet[index * chunk..((index + 1) * chunk).min(packet.len())];
        let mut b = BytesMut::with_capacity(HEADER_LEN + part.len());
        b.extend_from_slice(&flow.to_be_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&[index as u8, count as u8]);
        b.extend_from_slice(part);
        out.push(b.freeze());
    }
    Ok(out)
}

/// Parsed fragment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragHeader {
    /// Flow id.
    pub flow: u32,
    /// Packet sequence number within the flow.
    pub seq: u16,
    /// Fragment index.
    pub index: u8,
    /// Number of fragments.
    pub count: u8,
}

/// Read the header of a framed datagram.
pub fn parse_header(d: &[u8]) -> Result<FragHeader, FrameError> {
    if d.len() < HEADER_LEN {
        return Err(FrameError::Short);
    }
    let h = FragHeader {
        flow: u32::from_be_bytes([d[0], d[1], d[2], d[3]]),
        seq: u16::from_be_bytes([d[4], d[5]]),
        index: d[6],
        count: d[7],
    };
    if h.count == 0 || h.index >= h.count {
        return Err(FrameError::BadFragment {
            index: h.index,
            count: h.count,
        });
    }
    Ok(h)
}

/// Counters of what reassembly had to drop.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReassemblyDrops {
    /// Packets dropped because fragments did not arrive in time.
    pub timed_out: u64,
    /// Packets evicted because too many were incomplete at once.
    pub evicted: u64,
    /// Malformed datagrams.
    pub malformed: u64,
}

struct Partial {
    parts: Vec<Option<Bytes>>,
    received: usize,
    bytes: usize,
    first_seen: Instant,
}

/// Reassembles fragmented packets with bounded memory.
pub struct Reassembler {
    partial: HashMap<(u32, u16), Partial>,
    max_partial: usize,
    timeout: Duration,
    drops: ReassemblyDrops,
}

impl Reassembler {
    /// At most `max_partial` incomplete packets are held, each for at most `timeout`.
    pub fn new(max_partial: usize, timeout: Duration) -> Self {
        Reassembler {
            partial: HashMap::new(),
            max_partial: max_partial.max(1),
            timeout,
            drops: ReassemblyDrops::default(),
        }
    }

    /// Drops counted so far.
    pub fn drops(&self) -> ReassemblyDrops {
        self.drops
    }

    /// Number of incomplete packets held.
    pub fn pending(&self) -> usize {
        self.partial.len()
    }

    /// Feed one datagram; returns `(flow, packet)` when a packet is complete.
    pub fn push(&mut self, datagram: Bytes, now: Instant) -> Option<(u32, Bytes)> {
        let h = match parse_header(&datagram) {
            Ok(h) => h,
            Err(_) => {
                self.drops.malformed += 1;
                return None;
            }
        };
        if h.count == 1 {
            return Some((h.flow, datagram.slice(HEADER_LEN..)));
        }
        let key = (h.flow, h.seq);
        if !self.partial.contains_key(&key) {
            if self.partial.len() >= self.max_partial {
                self.expire(now);
            }
            if self.partial.len() >= self.max_partial {
                self.evict_oldest();
            }
            self.partial.insert(
                key,
                Partial {
                    parts: vec![None; h.count as usize],
                    received: 0,
                    bytes: 0,
                    first_seen: now,
                },
            );
        }
        let p = self.partial.get_mut(&key)?;
        if p.parts.len() != h.count as usize {
            // inconsistent count for the same packet: drop it entirely
            self.partial.remove(&key);
            self.drops.malformed += 1;
            return None;
        }
        let slot = &mut p.parts[h.index as usize];
        if slot.is_some() {
            return None; // duplicate
        }
        let payload = datagram.slice(HEADER_LEN..);
        p.bytes += payload.len();
        if p.bytes > MAX_PACKET {
            self.partial.remove(&key);
            self.drops.malformed += 1;
            return None;
        }
        *slot = Some(payload);
        p.received += 1;
        if p.received < p.parts.len() {
            return None;
        }
        let p = self.partial.remove(&key)?;
        let mut out = BytesMut::with_capacity(p.bytes);
        for part in p.parts.into_iter().flatten() {
            out.extend_from_slice(&part);
        }
        Some((h.flow, out.freeze()))
    }

    /// Drop incomplete packets older than the timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let before = self.partial.len();
        let timeout = self.timeout;
        self.partial
            .retain(|_, p| now.saturating_duration_since(p.first_seen) < timeout);
        let n = before - self.partial.len();
        self.drops.timed_out += n as u64;
        n
    }

    /// Forget everything held for one flow (when it expires).
    pub fn forget_flow(&mut self, flow: u32) {
        self.partial.retain(|(f, _), _| *f != flow);
    }

    fn evict_oldest(&mut self) {
        if let Some(key) = self
            .partial
            .iter()
            .min_by_key(|(_, p)| p.first_seen)
            .map(|(k, _)| *k)
        {
            self.partial.remove(&key);
            self.drops.evicted += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[test]
    fn small_packet_is_one_datagram_zero_copy() {
        let p = pattern(1200);
        let f = fragment(7, 1, &p, 1200 + HEADER_LEN).unwrap();
        assert_eq!(f.len(), 1);
        let mut r = Reassembler::new(8, Duration::from_secs(1));
        let (flow, out) = r.push(f[0].clone(), Instant::now()).unwrap();
        assert_eq!((flow, &out[..]), (7, &p[..]));
    }

    #[test]
    fn large_packets_reassemble_in_any_order() {
        for size in [0, 1, 1450, 8000, MAX_PACKET] {
            let p = pattern(size);
            let mut f = fragment(3, 9, &p, 1150).unwrap();
            f.reverse();
            let mut r = Reassembler::new(8, Duration::from_secs(1));
            let now = Instant::now();
            let mut got = None;
            for d in f {
                if let Some(x) = r.push(d, now) {
                    got = Some(x);
                }
            }
            let (flow, out) = got.expect("complete");
            assert_eq!(flow, 3);
            assert_eq!(out.len(), size);
            assert_eq!(&out[..], &p[..]);
            assert_eq!(r.pending(), 0);
        }
    }

    #[test]
    fn interleaved_flows_do_not_mix() {
        let a = pattern(3000);
        let b: Vec<u8> = pattern(3000).into_iter().map(|x| x ^ 0xff).collect();
        let fa = fragment(1, 5, &a, 1200).unwrap();
        let fb = fragment(2, 5, &b, 1200).unwrap();
        let mut r = Reassembler::new(8, Duration::from_secs(1));
        let now = Instant::now();
        let mut done = vec![];
        for (x, y) in fa.into_iter().zip(fb) {
            done.extend(r.push(x, now));
            done.extend(r.push(y, now));
        }
        done.sort_by_key(|(f, _)| *f);
        assert_eq!(&done[0].1[..], &a[..]);
        assert_eq!(&done[1].1[..], &b[..]);
    }

    #[test]
    fn lost_fragment_times_out_and_is_counted() {
        let f = fragment(1, 1, &pattern(5000), 1200).unwrap();
        let mut r = Reassembler::new(8, Duration::from_millis(100));
        let t0 = Instant::now();
        for d in f.iter().skip(1) {
            assert!(r.push(d.clone(), t0).is_none());
        }
        assert_eq!(r.expire(t0 + Duration::from_millis(50)), 0);
        assert_eq!(r.expire(t0 + Duration::from_millis(150)), 1);
        assert_eq!(r.drops().timed_out, 1);
    }

    #[test]
    fn bounded_partial_packets() {
        let mut r = Reassembler::new(4, Duration::from_secs(10));
        let now = Instant::now();
        for seq in 0..10u16 {
            let f = fragment(1, seq, &pattern(3000), 1200).unwrap();
            r.push(f[0].clone(), now);
        }
        assert_eq!(r.pending(), 4);
        assert_eq!(r.drops().evicted, 6);
    }

    #[test]
    fn garbage_is_counted_not_panicking() {
        let mut r = Reassembler::new(4, Duration::from_secs(1));
        let now = Instant::now();
        for d in [
            &b""[..],
            b"1234567",
            &[0, 0, 0, 1, 0, 0, 5, 3],
            &[0, 0, 0, 1, 0, 0, 0, 0],
        ] {
            assert!(r.push(Bytes::copy_from_slice(d), now).is_none());
        }
        assert_eq!(r.drops().malformed, 4);
        // inconsistent counts for one packet
        r.push(Bytes::from_static(&[0, 0, 0, 1, 0, 1, 0, 2, 9]), now);
        r.push(Bytes::from_static(&[0, 0, 0, 1, 0, 1, 1, 3, 9]), now);
        assert_eq!(r.pending(), 0);
    }

    #[test]
    fn refuses_oversize_and_tiny_paths() {
        assert!(fragment(1, 1, &pattern(MAX_PACKET + 1), 1200).is_err());
        assert!(fragment(1, 1, &pattern(10), 10).is_err());
    }
}
