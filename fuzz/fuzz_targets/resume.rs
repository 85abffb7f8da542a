//! Resumable streams: the ack frames both sides send on a session's hello
//! stream, the reply extension (its TLVs, read off a stream too), resume
//! tickets and delivered offsets, and the replay buffer driven by the
//! offsets a peer claims (checked against a model of it).
#![no_main]

mod common;

use bytes::Bytes;
use common::{block_on, Input};
use libfuzzer_sys::fuzz_target;
use peerport::{
    engine::resume::read_ext,
    proto::{
        header::MAX_BODY,
        resume::{
            decode_delivered, encode_delivered, Ack, ReplayBuf, ReplayError, ReplyExt, Ticket,
            ACK_LEN,
        },
    },
};

/// Longest refusal message an extension carries (resume.rs).
const REFUSED_MESSAGE: usize = 160;

fuzz_target!(|data: &[u8]| {
    // ack frames, as read off the hello stream: exact round trip
    for frame in data.chunks_exact(ACK_LEN) {
        let frame: &[u8; ACK_LEN] = frame.try_into().unwrap();
        if let Ok(ack) = Ack::decode(frame) {
            assert_eq!(&ack.encode(), frame);
        }
    }

    // reply extension body
    if let Ok(ext) = ReplyExt::decode_body(data) {
        let enc = ext.encode();
        assert!(enc.len() - 2 <= MAX_BODY);
        let back = ReplyExt::decode_body(&enc[2..]).expect("an encoded extension decodes");
        if ext.refused.iter().all(|(_, m)| m.len() <= REFUSED_MESSAGE) {
            assert_eq!(back, ext);
        }
    }
    // the same off a stream (`length u16 | body`)
    let mut stream = data;
    if let Ok(ext) = block_on(read_ext(&mut stream)) {
        let len = u16::from_be_bytes([data[0], data[1]]) as usize;
        assert_eq!(stream.len(), data.len() - 2 - len);
        assert_eq!(ReplyExt::decode_body(&data[2..2 + len]), Ok(ext));
    }

    if let Ok(d) = decode_delivered(data) {
        assert_eq!(encode_delivered(d)[..], data[..]);
    }
    if let Some(t) = Ticket::from_bytes(data) {
        assert_eq!(t.to_bytes()[..], data[..]);
    }

    replay(Input(data));
});

/// Drive a replay buffer with pushes, acks and resumes at offsets taken
/// from the input, and compare every answer with a model: all bytes ever
/// pushed and the first one still kept.
fn replay(mut input: Input) {
    let mut buf = ReplayBuf::new(1 << 16);
    let mut all: Vec<u8> = Vec::new();
    let mut base: u64 = 0;
    while input.more() {
        let op = input.u8();
        let sent = all.len() as u64;
        match op % 3 {
            0 => {
                let n = input.u8() as usize;
                let chunk: Vec<u8> = (0..n).map(|i| (all.len() + i) as u8).collect();
                all.extend_from_slice(&chunk);
                buf.push(Bytes::from(chunk));
            }
            1 => {
                let offset = offset_at(op, sent, base, &mut input);
                match buf.ack(offset) {
                    Ok(freed) => {
                        assert!(offset <= sent);
                        assert_eq!(freed as u64, offset.saturating_sub(base));
                        base = base.max(offset);
                    }
                    Err(e) => {
                        assert!(offset > sent);
                        assert_eq!(
                            e,
                            ReplayError::BeyondSent {
                                claimed: offset,
                                sent
                            }
                        );
                    }
                }
            }
            _ => {
                let offset = offset_at(op, sent, base, &mut input);
                match buf.replay_from(offset) {
                    Ok(chunks) => {
                        assert!(base <= offset && offset <= sent);
                        base = offset;
                        let got: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
                        assert_eq!(got[..], all[offset as usize..]);
                    }
                    Err(ReplayError::AlreadyAcked { from, base: b }) => {
                        assert!(offset < base);
                        assert_eq!((from, b), (offset, base));
                    }
                    Err(ReplayError::BeyondSent { .. }) => assert!(offset > sent),
                }
            }
        }
        assert_eq!(buf.sent(), all.len() as u64);
        assert_eq!(buf.unacked() as u64, all.len() as u64 - base);
    }
}

/// An offset near the interesting points (from the op's high bits), or
/// anything at all.
fn offset_at(op: u8, sent: u64, base: u64, input: &mut Input) -> u64 {
    match op >> 4 {
        0..=5 => sent.saturating_sub(input.u8() as u64),
        6..=9 => base.saturating_add(input.u8() as u64),
        10..=11 => sent + input.u8() as u64,
        _ => input.u64(),
    }
}
