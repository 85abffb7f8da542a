//! UDP over QUIC datagrams: fragment headers and the reassembler, driven
//! by a sequence of datagrams from the input (raw ones, with any header)
//! interleaved with whole packets fragmented by the real encoder and with
//! the clock moving. Memory stays bounded (at most `max_partial`
//! incomplete packets, none beyond the UDP limit), and a packet whose
//! fragments all arrive comes out exactly as it went in, in any order.
#![no_main]

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Input;
use libfuzzer_sys::fuzz_target;
use peerport::proto::datagram::{
    fragment, parse_header, FrameError, Reassembler, HEADER_LEN, MAX_PACKET,
};

/// Flow ids of the packets this target fragments itself; raw datagrams
/// never use them, so nothing else can fill their slots.
const OWN_FLOWS: u32 = 0xff00_0000;
/// Most bytes of such packets per input.
const OWN_BYTES: usize = MAX_PACKET + 32 * 1024;

fuzz_target!(|data: &[u8]| {
    let mut input = Input(data);
    let max_partial = 1 + (input.u8() % 16) as usize;
    let timeout = Duration::from_millis(1 + input.u8() as u64 * 10);
    let mut r = Reassembler::new(max_partial, timeout);
    let mut now = Instant::now();
    let mut own_seq: u16 = 0;
    let mut own_bytes = 0;
    let mut drops = r.drops();
    while input.more() {
        match input.u8() % 4 {
            0 => {
                // a raw datagram: header and payload from the input
                let len = input.u8() as usize * 4;
                let mut d = input.bytes(len).to_vec();
                if d.len() >= HEADER_LEN && d[0] == 0xff {
                    d[0] = 0xfe; // not one of our own flows
                }
                let header = parse_header(&d);
                if let Ok(h) = header {
                    assert!(h.count > 0 && h.index < h.count);
                } else if d.len() < HEADER_LEN {
                    assert_eq!(header, Err(FrameError::Short));
                }
                if let Some((flow, packet)) = r.push(Bytes::from(d.clone()), now) {
                    let h = header.expect("only a well-formed datagram completes a packet");
                    assert_eq!(flow, h.flow);
                    if h.count == 1 {
                        assert_eq!(packet[..], d[HEADER_LEN..]);
                    } else {
                        assert!(packet.len() <= MAX_PACKET);
                    }
                }
            }
            1 => {
                now += Duration::from_millis(input.u8() as u64 * 5);
                r.expire(now);
            }
            2 => r.forget_flow(input.u32()),
            _ => {
                // a whole packet through the real fragmenter, in some order
                let flow = OWN_FLOWS | input.u8() as u32;
                let size = (input.u16() as usize) % (MAX_PACKET + 2);
                // a few big packets per input, not hundreds: runs stay fast
                own_bytes += size;
                if own_bytes > OWN_BYTES {
                    continue;
                }
                let max_datagram = 16 + input.u16() as usize % 1500;
                let rotate = input.u8() as usize;
                let reverse = rotate & 1 == 1;
                let packet: Vec<u8> = (0..size).map(|i| (i * 7 + size) as u8).collect();
                let seq = own_seq;
                own_seq = own_seq.wrapping_add(1);
                match fragment(flow, seq, &packet, max_datagram) {
                    Ok(mut frags) => {
                        assert!(size <= MAX_PACKET && max_datagram > HEADER_LEN + 16);
                        assert!(!frags.is_empty() && frags.len() <= 255);
                        assert!(frags.iter().all(|f| f.len() <= max_datagram));
                        let n = frags.len();
                        frags.rotate_left(rotate % n);
                        if reverse {
                            frags.reverse();
                        }
                        let mut done = None;
                        for (i, f) in frags.into_iter().enumerate() {
                            let out = r.push(f, now);
                            assert!(
                                out.is_none() || i == n - 1,
                                "complete before its last fragment"
                            );
                            done = out;
                        }
                        let (got_flow, got) = done.expect("every fragment arrived");
                        assert_eq!(got_flow, flow);
                        assert_eq!(got[..], packet[..]);
                    }
                    Err(FrameError::TooLarge(n)) => {
                        assert!(n > MAX_PACKET || n.div_ceil(max_datagram - HEADER_LEN) > 255)
                    }
                    Err(FrameError::PathTooSmall(m)) => assert!(m <= HEADER_LEN + 16),
                    Err(e) => panic!("fragment: {e}"),
                }
            }
        }
        assert!(r.pending() <= max_partial);
        let d = r.drops();
        assert!(
            d.timed_out >= drops.timed_out
                && d.evicted >= drops.evicted
                && d.malformed >= drops.malformed
        );
        drops = d;
    }
});
