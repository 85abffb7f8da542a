//! Writes the seed corpus of the binary targets (fuzz/corpus/TARGET/NAME)
//! from the real encoders: `cargo run --example seed_corpus` in fuzz/
//! (a plain build, no sanitizer). The text targets' seeds (config and
//! network files, addresses) are files written by hand or by `peerport
//! config init`; see fuzz/README.md.

use std::{fs, path::Path, time::Duration};

use base64::{engine::general_purpose::STANDARD_NO_PAD, Engine};
use nostr::prelude::*;
use peerport::{
    engine::Ledger,
    proto::{
        datagram::fragment,
        header::{Reply, Request, ResumeOffer, Status, Want, Wanted},
        resume::{encode_delivered, Ack, ReplyExt, Ticket as ResumeTicket},
        Protocol,
    },
    status::{Info, Monitor},
};
use peerport_signaling::{
    blob::{Blob, Body, Kind as BlobKind},
    nostr::{MsgType, Payload, DEFAULT_KIND},
    Relays, Ticket,
};

const NOW: u64 = 1_700_000_000;

fn write(target: &str, name: &str, bytes: impl AsRef<[u8]>) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn ice_offer() -> Blob {
    Blob {
        kind: BlobKind::Offer,
        session: [1, 2, 3, 4, 5, 6, 7, 8],
        created: NOW,
        body: Body::Ice {
            ufrag: "abcdEFGH".into(),
            pwd: "0123456789abcdefghijklmn".into(),
            fingerprint: [7; 32],
            candidates: vec![
                "candidate:1 1 udp 2130706431 192.168.1.10 50000 typ host".into(),
                "candidate:2 1 udp 1694498815 203.0.113.7 50000 typ srflx raddr 0.0.0.0 rport 50000".into(),
            ],
        },
    }
}

fn iroh_answer() -> Blob {
    Blob {
        kind: BlobKind::Answer,
        session: [1, 2, 3, 4, 5, 6, 7, 8],
        created: NOW,
        body: Body::Iroh {
            endpoint_id: [9; 32],
            addrs: vec![
                "192.168.1.10:41641".parse().unwrap(),
                "[2001:db8::1]:41641".parse().unwrap(),
            ],
        },
    }
}

fn ext() -> ReplyExt {
    ReplyExt {
        ticket: Some(ResumeTicket {
            id: [3; 16],
            secret: [4; 32],
        }),
        resumed: Some(false),
        window_secs: Some(300),
        delivered: Some((12345, true)),
        services: Some(2),
        refused: vec![(1, "no service `web`".into())],
    }
}

fn stream_header() {
    let t = "stream_header";
    let wants = vec![
        Want {
            protocol: Protocol::Tcp,
            what: Wanted::Service("ssh".into()),
        },
        Want {
            protocol: Protocol::Udp,
            what: Wanted::Service(String::new()),
        },
        Want {
            protocol: Protocol::Tcp,
            what: Wanted::Destination {
                host: "10.0.0.5".into(),
                port: 22,
            },
        },
        Want {
            protocol: Protocol::Tcp,
            what: Wanted::Dynamic,
        },
    ];
    write(
        t,
        "hello",
        Request::hello(Some(&[1; 16]), Protocol::Tcp).encode(),
    );
    write(
        t,
        "hello_wants_resume",
        Request::hello(None, Protocol::Tcp)
            .with_resume(Some(ResumeOffer::New))
            .with_wants(wants)
            .encode(),
    );
    write(
        t,
        "hello_resume_ticket",
        Request::hello(Some(&[2; 16]), Protocol::Udp)
            .with_resume(Some(ResumeOffer::Resume(ResumeTicket {
                id: [5; 16],
                secret: [6; 32],
            })))
            .encode(),
    );
    write(
        t,
        "tcp_stream",
        Request::tcp_stream(9)
            .with_service(Some(2))
            .with_client(Some((
                "127.0.0.1:5000".parse().unwrap(),
                "[::1]:2222".parse().unwrap(),
            )))
            .with_dest(Some(("db.internal".into(), 5432)))
            .encode(),
    );
    write(t, "tcp", Request::tcp().encode());
    write(t, "resume", Request::resume(3, (1 << 33, true)).encode());
    write(t, "reply_ok", Reply::ok().encode());
    write(
        t,
        "reply_refused",
        Reply::err(Status::Unauthorized, "wrong token").encode(),
    );
    write(t, "reply_ok_ext", Reply::ok_with(&ext()));
}

fn resume() {
    let t = "resume";
    let mut acks = Vec::new();
    for (stream, delivered, fin) in [(1, 0, false), (7, 1 << 40, true), (u64::MAX, 5, false)] {
        acks.extend_from_slice(
            &Ack {
                stream,
                delivered,
                fin,
            }
            .encode(),
        );
    }
    write(t, "acks", acks);
    let e = ext().encode();
    write(t, "ext", &e);
    write(t, "ext_body", &e[2..]);
    write(t, "delivered", encode_delivered((1 << 20, true)));
    write(
        t,
        "ticket",
        ResumeTicket {
            id: [1; 16],
            secret: [2; 32],
        }
        .to_bytes(),
    );
    // replay buffer: push 200, ack 100 below sent, replay from base + 10
    write(
        t,
        "replay_ops",
        [0x00, 200, 0x01, 100, 0x62, 10, 0x00, 50, 0xc2],
    );
}

fn datagram_reassembly() {
    let t = "datagram_reassembly";
    let packet: Vec<u8> = (0..3000).map(|i| (i * 31 % 251) as u8).collect();
    // max_partial 8, timeout 1 s; three fragments of 1008 bytes (252 * 4)
    let mut seq = vec![7, 100];
    let frags = fragment(7, 1, &packet, 1008).unwrap();
    for f in frags.iter().rev() {
        assert_eq!(f.len() % 4, 0);
        seq.push(0);
        seq.push((f.len() / 4) as u8);
        seq.extend_from_slice(f);
    }
    write(t, "three_fragments", &seq);
    // a fragment, time passes, it expires; a flow forgotten; one packet
    // through the fragmenter (8000 bytes, 1200-byte datagrams)
    let mut ops = vec![3, 10, 0, 252];
    ops.extend_from_slice(&frags[0]);
    ops.extend_from_slice(&[1, 250, 2, 0, 0, 0, 7, 3, 1, 0x1f, 0x40, 0x04, 0xb0, 2]);
    write(t, "expire_forget_fragment", &ops);
    let single = fragment(9, 2, b"hello over udp!!", 1200).unwrap();
    let mut one = vec![0, 0, 0, (single[0].len() / 4) as u8];
    one.extend_from_slice(&single[0]);
    write(t, "single", &one);
}

fn socks5_handshake() {
    let t = "socks5_handshake";
    write(
        t,
        "connect_ipv4",
        [5, 1, 0, 5, 1, 0, 1, 127, 0, 0, 1, 0, 22],
    );
    let mut name = vec![5, 2, 0, 2, 5, 1, 0, 3, 11];
    name.extend_from_slice(b"db.internal");
    name.extend_from_slice(&5432u16.to_be_bytes());
    write(t, "connect_name", name);
    let mut v6 = vec![5, 1, 0, 5, 1, 0, 4];
    v6.extend_from_slice(&"fd00::5".parse::<std::net::Ipv6Addr>().unwrap().octets());
    v6.extend_from_slice(&[0, 80]);
    write(t, "connect_ipv6", v6);
    write(t, "udp_associate", [5, 1, 0, 5, 3, 0, 1, 0, 0, 0, 0, 0, 0]);
    write(t, "auth_only", [5, 1, 2]);
}

fn nostr_payload() {
    let t = "nostr_payload";
    let payload = Payload {
        session_id: "0102030405060708".into(),
        msg_type: MsgType::Request,
        nonce: "00112233aabbccdd".into(),
        created_at: NOW,
        data: STANDARD_NO_PAD.encode(ice_offer().to_bytes()),
    };
    let json = serde_json::to_string(&payload).unwrap();
    let with = |entry: u8, body: &[u8]| {
        let mut v = vec![entry];
        v.extend_from_slice(body);
        v
    };
    write(t, "payload", with(0, json.as_bytes()));
    write(t, "sealed_payload", with(1, json.as_bytes()));
    let refusal = Payload {
        msg_type: MsgType::Refusal,
        data: "at capacity".into(),
        ..payload.clone()
    };
    write(
        t,
        "sealed_refusal",
        with(1, serde_json::to_string(&refusal).unwrap().as_bytes()),
    );
    // the fuzz target's fixed keys: the peer and us
    let peer = Keys::parse(&"11".repeat(32)).unwrap();
    let me = Keys::parse(&"22".repeat(32)).unwrap();
    let sealed = nip44::encrypt(
        peer.secret_key(),
        &me.public_key(),
        &json,
        nip44::Version::V2,
    )
    .unwrap();
    write(t, "content", with(2, sealed.as_bytes()));
    let created = Timestamp::from_secs(NOW);
    let ev = EventBuilder::new(Kind::Custom(DEFAULT_KIND), sealed)
        .tags([
            Tag::public_key(me.public_key()),
            Tag::expiration(created + Duration::from_secs(60)),
        ])
        .custom_created_at(created)
        .sign_with_keys(&peer)
        .unwrap();
    write(t, "event", with(3, ev.as_json().as_bytes()));
    write(
        t,
        "nsec",
        with(4, peer.secret_key().to_bech32().unwrap().as_bytes()),
    );
    write(
        t,
        "npub",
        with(4, me.public_key().to_bech32().unwrap().as_bytes()),
    );
}

fn control_request() {
    let t = "control_request";
    write(t, "status", "status\n");
    write(t, "empty", "\n");
    write(t, "unknown", "metrics\n");
    let m = Monitor::new(Info::new("receiver", "nostr", "seed"), Ledger::new());
    write(t, "snapshot", serde_json::to_string(&m.snapshot()).unwrap());
}

fn paste_reader() {
    let t = "paste_reader";
    let cuts = 0x0123_4567_89ab_cdefu64.to_be_bytes();
    let mut chat = cuts.to_vec();
    chat.extend_from_slice(b"here is my offer:\n");
    for line in ice_offer().to_armor().lines() {
        chat.extend_from_slice(format!("> {line}\n").as_bytes());
    }
    chat.extend_from_slice(b"and again, cut off:\n");
    let armor = ice_offer().to_armor();
    chat.extend_from_slice(&armor.as_bytes()[..armor.len() / 2]);
    chat.extend_from_slice(armor.as_bytes());
    write(t, "offers_in_chat", chat);
    let mut answer = 3u64.to_be_bytes().to_vec(); // iroh-manual answers
    answer.extend_from_slice(iroh_answer().to_armor().as_bytes());
    answer.extend_from_slice(b"\xff\xfe not text \xe2\x82");
    write(t, "answer_and_bytes", answer);
}

fn blob_decode() {
    let t = "blob_decode";
    write(t, "ice_offer", ice_offer().to_bytes());
    write(t, "iroh_answer", iroh_answer().to_bytes());
    write(t, "ice_offer_armor", ice_offer().to_armor());
    write(t, "iroh_answer_armor", iroh_answer().to_armor());
}

fn ticket_decode() {
    let t = "ticket_decode";
    let v1 = Ticket {
        endpoint_id: [7; 32],
        token: [9; 16],
        relays: Relays::default(),
    };
    write(t, "v1", v1.encode());
    let v2 = Ticket {
        relays: Relays {
            urls: vec![
                "https://relay.example.org/".into(),
                "http://10.0.0.1:3340/".into(),
            ],
            quic_port: 7842,
            pins: vec![[1; 32]],
        },
        ..v1
    };
    write(t, "v2", v2.encode());
}

fn main() {
    stream_header();
    resume();
    datagram_reassembly();
    socks5_handshake();
    nostr_payload();
    control_request();
    paste_reader();
    blob_decode();
    ticket_decode();
}
