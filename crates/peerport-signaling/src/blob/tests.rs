//! Unit tests of the parent module.

use super::*;

fn iroh_offer() -> Blob {
    Blob {
        kind: Kind::Offer,
        session: [1, 2, 3, 4, 5, 6, 7, 8],
        created: 1_000_000,
        body: Body::Iroh {
            endpoint_id: [9; 32],
            addrs: vec![
                "192.168.1.10:41641".parse().unwrap(),
                "203.0.113.7:41641".parse().unwrap(),
                "[2001:db8::1]:41641".parse().unwrap(),
            ],
        },
    }
}

fn ice_answer() -> Blob {
    Blob {
        kind: Kind::Answer,
        session: [1, 2, 3, 4, 5, 6, 7, 8],
        created: 1_000_010,
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

fn expect(kind: Kind, mode: Mode) -> Expect {
    Expect {
        kind,
        mode,
        session: None,
        now: 1_000_020,
        max_age: 600,
    }
}

#[test]
fn roundtrip_and_size() {
    let b = iroh_offer();
    let armor = b.to_armor();
    assert!(armor.len() < 220, "offer is {} chars", armor.len());
    assert_eq!(
        find_and_decode(&armor, &expect(Kind::Offer, Mode::IrohManual)).unwrap(),
        b
    );
    let a = ice_answer();
    let e = Expect {
        session: Some(a.session),
        ..expect(Kind::Answer, Mode::Ice)
    };
    assert_eq!(find_and_decode(&a.to_armor(), &e).unwrap(), a);
}

#[test]
fn tolerant_of_chat_quoting_crlf_and_rewrapping() {
    let b = iroh_offer();
    let armor = b.to_armor();
    let body: String = armor
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let rewrapped: Vec<String> = body
        .as_bytes()
        .chunks(20)
        .map(|c| format!(">    {}  ", std::str::from_utf8(c).unwrap()))
        .collect();
    let text = format!(
        "hi! here is my offer:\r\n> -----BEGIN PEERPORT OFFER-----\r\n{}\r\n> -----END PEERPORT OFFER-----\r\nthanks",
        rewrapped.join("\r\n")
    );
    assert_eq!(
        find_and_decode(&text, &expect(Kind::Offer, Mode::IrohManual)).unwrap(),
        b
    );
}

#[test]
fn clear_errors() {
    let e = expect(Kind::Offer, Mode::IrohManual);
    assert_eq!(
        find_and_decode("hello", &e),
        Err(BlobError::NotFound("OFFER"))
    );
    let ans = ice_answer().to_armor();
    assert!(matches!(
        find_and_decode(&ans, &e),
        Err(BlobError::WrongKind { .. })
    ));
    let off = iroh_offer().to_armor();
    assert!(matches!(
        find_and_decode(&off, &expect(Kind::Offer, Mode::Ice)),
        Err(BlobError::WrongMode { .. })
    ));
    let old = Expect {
        now: 1_000_000 + 601,
        ..e
    };
    assert!(matches!(
        find_and_decode(&off, &old),
        Err(BlobError::Expired { .. })
    ));
    let ans_e = Expect {
        session: Some([0; 8]),
        ..expect(Kind::Answer, Mode::Ice)
    };
    assert_eq!(find_and_decode(&ans, &ans_e), Err(BlobError::WrongSession));
    let cut: String = off.lines().take(2).collect::<Vec<_>>().join("\n");
    assert_eq!(
        find_and_decode(&cut, &e),
        Err(BlobError::Unterminated("OFFER"))
    );
    // one character changed
    let mut lines: Vec<String> = off.lines().map(String::from).collect();
    let l = &mut lines[1];
    let c = if l.starts_with('A') { "B" } else { "A" };
    l.replace_range(0..1, c);
    let damaged = lines.join("\n");
    assert!(matches!(
        find_and_decode(&damaged, &e),
        Err(BlobError::Checksum) | Err(BlobError::Version(_))
    ));
}

#[test]
fn scans_several_blocks_and_keeps_partial_rest() {
    let e = expect(Kind::Offer, Mode::IrohManual);
    let a = iroh_offer();
    let mut b = iroh_offer();
    b.session = [9; 8];
    let text = format!(
        "{}chatter\n{}{}",
        a.to_armor(),
        ice_answer().to_armor(),
        b.to_armor()
    );
    let partial = "-----BEGIN PEERPORT OFFER-----\nAAAA\n";
    let all = format!("{text}{partial}");
    let (blobs, used) = scan_blocks(&all, &e);
    assert_eq!(blobs.len(), 3);
    assert_eq!(blobs[0].as_ref().unwrap(), &a);
    assert!(matches!(blobs[1], Err(BlobError::WrongKind { .. })));
    assert_eq!(blobs[2].as_ref().unwrap(), &b);
    assert_eq!(&all[used..], partial);
}

#[test]
fn a_new_begin_line_starts_a_new_block() {
    let e = expect(Kind::Offer, Mode::IrohManual);
    let a = iroh_offer();
    let armor = a.to_armor();
    // a truncated copy (BEGIN and one data line) followed by the whole block
    let cut: String = armor.lines().take(2).map(|l| format!("{l}\n")).collect();
    let text = format!("{cut}{armor}");
    let (blobs, used) = scan_blocks(&text, &e);
    assert_eq!(blobs.len(), 2);
    assert_eq!(blobs[0], Err(BlobError::Unterminated("OFFER")));
    assert_eq!(blobs[1].as_ref().unwrap(), &a);
    assert_eq!(used, text.len());
    // the truncated block alone is reported once the next BEGIN line arrives
    let (blobs, used) = scan_blocks(&cut, &e);
    assert!(blobs.is_empty());
    assert_eq!(used, 0);
    let begin_only = format!("{cut}-----BEGIN PEERPORT OFFER-----\n");
    let (blobs, used) = scan_blocks(&begin_only, &e);
    assert_eq!(blobs, vec![Err(BlobError::Unterminated("OFFER"))]);
    assert_eq!(&begin_only[used..], "-----BEGIN PEERPORT OFFER-----\n");
}

#[test]
fn never_panics_on_garbage() {
    let mut x: u64 = 88172645463325252;
    for n in 0..5000 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let len = (x % 120) as usize;
        let bytes: Vec<u8> = (0..len).map(|i| (x >> (i % 56)) as u8).collect();
        let _ = Blob::from_bytes(&bytes);
        // valid prefix with random tail, checksummed so the parser goes deep
        let mut b = iroh_offer().to_bytes();
        b.truncate(4 + (n % b.len()));
        b.extend_from_slice(&bytes);
        let sum = Sha256::digest(&b);
        b.extend_from_slice(&sum[..4]);
        let _ = Blob::from_bytes(&b);
    }
}

#[test]
fn quiet_pastes_without_a_whole_block_are_told_apart() {
    assert_eq!(incomplete(""), None);
    assert_eq!(incomplete("hi, here is my offer:\n"), None);
    let begin = "-----BEGIN PEERPORT OFFER-----\nAQACXS/pDNXH7hgAAAAAaxXVewhhYmNkRUZH\n";
    assert_eq!(incomplete(begin), Some(Incomplete::NoEnd));
    assert_eq!(incomplete(&format!("> {begin}")), Some(Incomplete::NoEnd));
    let bare = "AQACXS/pDNXH7hgAAAAAaxXVewhhYmNkRUZHSBgwMTIzNDU2Nzg5YWJjZGVmZ2hp\nSBgwMTIz==\n";
    assert_eq!(incomplete(bare), Some(Incomplete::Bare));
    assert_eq!(incomplete(&format!("> {bare}")), Some(Incomplete::Bare));
    // a word of prose is not base64
    assert_eq!(
        incomplete("pneumonoultramicroscopicsilicovolcanoconiosis is long\n"),
        None
    );
}

/// Found by the fuzz target `paste_reader` (crash input
/// fuzz/corpus/paste_reader/regression_end_line_text): an END line with
/// text after its closing dashes was decoded or not depending on whether
/// the rest of its line had arrived yet, and once it had, the block was
/// never read (nor any block after it).
#[test]
fn text_after_an_end_line_neither_blocks_nor_changes_the_reading() {
    let e = expect(Kind::Offer, Mode::IrohManual);
    let a = iroh_offer();
    let mut b = iroh_offer();
    b.session = [9; 8];
    let text = format!(
        "{}{}",
        a.to_armor().replace(
            "END PEERPORT OFFER-----\n",
            "END PEERPORT OFFER----- thanks!\n"
        ),
        b.to_armor()
    );
    let (blobs, used) = scan_blocks(&text, &e);
    assert_eq!(blobs, vec![Ok(a.clone()), Ok(b)]);
    assert_eq!(used, text.len());
    // every prefix reads what the whole text reads, up to where it stops
    for cut in (0..text.len()).filter(|c| text.is_char_boundary(*c)) {
        let (some, _) = scan_blocks(&text[..cut], &e);
        assert_eq!(some[..], blobs[..some.len()], "cut at {cut}");
    }
    // the minimized crash: a (malformed) block then a byte on its END line
    let crash = "-----BEGIN PEERPORT-----END PEERPORT-----\0";
    let whole = scan_blocks(crash, &e);
    assert_eq!(whole, scan_blocks(&crash[..crash.len() - 1], &e));
    assert_eq!(whole.0.len(), 1);
    // an END line without its closing dashes ends its block at the line's
    // end (an error), and the next block is read
    let text = format!(
        "{}{}",
        a.to_armor()
            .replace("END PEERPORT OFFER-----\n", "END PEERPORT OFFER\n"),
        a.to_armor()
    );
    let (blobs, used) = scan_blocks(&text, &e);
    assert_eq!(blobs, vec![Err(BlobError::Unterminated("OFFER")), Ok(a)]);
    assert_eq!(used, text.len());
}
