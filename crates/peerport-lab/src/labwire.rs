//! `peerport-lab wire` (Linux): a userspace Ethernet wire for the
//! fault lab, because this kernel has no `netem`. It joins two interfaces
//! (the two ends of a cut link inside a lab namespace) and copies every
//! frame from one to the other through AF_PACKET sockets, adding one-way
//! delay, jitter (order kept, like netem with a rate), random loss, a rate
//! limit with a bounded queue, and a blackout. Settings come from a small
//! `key=value` file that is re-read whenever it changes, so a running test
//! can change them:
//!
//! ```text
//! delay_ms=50     one-way delay, each direction
//! jitter_ms=5     extra delay, uniform 0..jitter (frames never overtake)
//! loss=0.01       drop probability per frame
//! rate_mbit=200   link rate (0 = unlimited); queue_ms bounds the queue
//! queue_ms=100
//! down=1          drop everything (a blackout)
//! ```
//!
//! Frames must not exceed the MTU: the lab turns off GSO/TSO/GRO on the
//! interfaces around a wire (`ethtool -K`). Every 5 s of activity it logs
//! what it forwarded and dropped.

use std::{
    collections::VecDeque,
    ffi::CString,
    io,
    path::{Path, PathBuf},
    sync::{mpsc, Arc, RwLock},
    time::{Duration, Instant, SystemTime},
};

/// Impairments, read from the control file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Impairment {
    /// One-way delay.
    pub delay: Duration,
    /// Extra uniform delay.
    pub jitter: Duration,
    /// Drop probability.
    pub loss: f64,
    /// Link rate in bit/s (0 = unlimited).
    pub rate_bps: u64,
    /// Longest queue (time to drain) before tail drop.
    pub queue: Duration,
    /// Drop everything.
    pub down: bool,
}

impl Impairment {
    /// Parse `key=value` lines; unknown keys and bad values are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut i = Impairment {
            queue: Duration::from_millis(100),
            ..Default::default()
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("not key=value: `{line}`"))?;
            let num = |v: &str| {
                v.trim()
                    .parse::<f64>()
                    .map_err(|_| format!("`{k}`: not a number: `{v}`"))
            };
            match k.trim() {
                "delay_ms" => i.delay = Duration::from_secs_f64(num(v)?.max(0.0) / 1000.0),
                "jitter_ms" => i.jitter = Duration::from_secs_f64(num(v)?.max(0.0) / 1000.0),
                "loss" => i.loss = num(v)?.clamp(0.0, 1.0),
                "rate_mbit" => i.rate_bps = (num(v)?.max(0.0) * 1e6) as u64,
                "queue_ms" => i.queue = Duration::from_secs_f64(num(v)?.max(0.0) / 1000.0),
                "down" => i.down = num(v)? != 0.0,
                other => return Err(format!("unknown setting `{other}`")),
            }
        }
        Ok(i)
    }
}

/// One direction's scheduling state: when the link is free, when the last
/// frame leaves (frames never overtake each other).
#[derive(Debug)]
pub struct Schedule {
    link_free: Instant,
    last_due: Instant,
}

impl Schedule {
    /// Idle link at `now`.
    pub fn new(now: Instant) -> Self {
        Schedule {
            link_free: now,
            last_due: now,
        }
    }

    /// When a frame of `len` bytes that arrived at `now` leaves, or `None`
    /// if it is dropped. `coin` and `spread` are uniform in [0, 1).
    pub fn admit(
        &mut self,
        imp: &Impairment,
        now: Instant,
        len: usize,
        coin: f64,
        spread: f64,
    ) -> Option<Instant> {
        if imp.down || coin < imp.loss {
            return None;
        }
        let start = self.link_free.max(now);
        if imp.rate_bps > 0 {
            if start.duration_since(now) > imp.queue {
                return None;
            }
            let tx = Duration::from_secs_f64(len as f64 * 8.0 / imp.rate_bps as f64);
            self.link_free = start + tx;
        } else {
            self.link_free = now;
        }
        let due = (self.link_free + imp.delay + imp.jitter.mul_f64(spread)).max(self.last_due);
        self.last_due = due;
        Some(due)
    }
}

struct Packet {
    fd: i32,
}

impl Packet {
    /// A raw socket bound to `ifname`, promiscuous, not seeing its own sends.
    fn open(ifname: &str) -> io::Result<Packet> {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket(2) call; the fd is owned by the returned value.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let p = Packet { fd };
        let name = CString::new(ifname).map_err(|_| io::Error::other("bad interface name"))?;
        // SAFETY: `name` is a valid NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::other(format!("no interface `{ifname}`")));
        }
        // SAFETY: zeroed sockaddr_ll is valid; fields set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = index as i32;
        // SAFETY: bind with a correctly sized sockaddr_ll.
        let r = unsafe {
            libc::bind(
                fd,
                &sll as *const libc::sockaddr_ll as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: zeroed packet_mreq is valid; fields set below.
        let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mr.mr_ifindex = index as i32;
        mr.mr_type = libc::PACKET_MR_PROMISC as u16;
        p.setsockopt(libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mr)?;
        p.setsockopt(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &1i32)?;
        p.setsockopt(libc::SOL_SOCKET, libc::SO_RCVBUF, &(8i32 << 20))?;
        p.setsockopt(libc::SOL_SOCKET, libc::SO_SNDBUF, &(8i32 << 20))?;
        Ok(p)
    }

    fn setsockopt<T>(&self, level: i32, name: i32, v: &T) -> io::Result<()> {
        // SAFETY: `v` points to a live value of the size passed.
        let r = unsafe {
            libc::setsockopt(
                self.fd,
                level,
                name,
                v as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as u32,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(self.fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: `frame` is valid for reads of its length.
        let n = unsafe {
            libc::send(
                self.fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Packet {
    fn drop(&mut self) {
        // SAFETY: we own the fd.
        unsafe { libc::close(self.fd) };
    }
}

#[derive(Default)]
struct Counters {
    forwarded: std::sync::atomic::AtomicU64,
    dropped: std::sync::atomic::AtomicU64,
    send_errors: std::sync::atomic::AtomicU64,
}

/// Copy frames `from` -> `to` through the impairment. Runs until an error.
fn direction(
    from: Arc<Packet>,
    to: Arc<Packet>,
    imp: Arc<RwLock<Impairment>>,
    stats: Arc<Counters>,
) -> io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let sender_stats = stats.clone();
    std::thread::spawn(move || {
        let mut queue: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
        loop {
            let next = match queue.front() {
                None => match rx.recv() {
                    Ok(p) => Some(p),
                    Err(_) => return,
                },
                Some((due, _)) => {
                    let wait = due.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(wait) {
                        Ok(p) => Some(p),
                        Err(mpsc::RecvTimeoutError::Timeout) => None,
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    }
                }
            };
            if let Some(p) = next {
                queue.push_back(p);
            }
            let now = Instant::now();
            while queue.front().is_some_and(|(due, _)| *due <= now) {
                let (_, frame) = queue.pop_front().expect("front");
                match to.send(&frame) {
                    Ok(()) => sender_stats.forwarded.fetch_add(1, Relaxed),
                    Err(_) => sender_stats.send_errors.fetch_add(1, Relaxed),
                };
            }
        }
    });
    let mut sched = Schedule::new(Instant::now());
    let mut buf = vec![0u8; 65_536];
    loop {
        let n = from.recv(&mut buf)?;
        let now = Instant::now();
        let current = imp.read().expect("settings").clone();
        match sched.admit(&current, now, n, rand::random(), rand::random()) {
            Some(due) => {
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    return Ok(());
                }
            }
            None => {
                stats.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// Run the wire between interfaces `a` and `b` until killed.
pub fn run(a: &str, b: &str, control: PathBuf) -> anyhow::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    let pa = Arc::new(Packet::open(a)?);
    let pb = Arc::new(Packet::open(b)?);
    let imp = Arc::new(RwLock::new(read_settings(&control)?));
    eprintln!("lab-wire {a} <-> {b}: {:?}", imp.read().expect("settings"));
    let ab = Arc::new(Counters::default());
    let ba = Arc::new(Counters::default());
    for (from, to, stats) in [
        (pa.clone(), pb.clone(), ab.clone()),
        (pb.clone(), pa.clone(), ba.clone()),
    ] {
        let imp = imp.clone();
        std::thread::spawn(move || {
            if let Err(e) = direction(from, to, imp, stats) {
                eprintln!("lab-wire: {e}");
                std::process::exit(1);
            }
        });
    }
    let mut seen = modified(&control);
    let mut last_log = Instant::now();
    let mut last = (0, 0, 0, 0);
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let m = modified(&control);
        if m != seen {
            seen = m;
            match read_settings(&control) {
                Ok(new) => {
                    eprintln!("lab-wire {a} <-> {b}: now {new:?}");
                    *imp.write().expect("settings") = new;
                }
                Err(e) => eprintln!("lab-wire: keeping the old settings: {e}"),
            }
        }
        if last_log.elapsed() >= Duration::from_secs(5) {
            last_log = Instant::now();
            let now = (
                ab.forwarded.load(Relaxed),
                ab.dropped.load(Relaxed),
                ba.forwarded.load(Relaxed),
                ba.dropped.load(Relaxed),
            );
            if now != last {
                last = now;
                eprintln!(
                    "lab-wire {a}->{b}: forwarded {} dropped {}; {b}->{a}: forwarded {} dropped {}; send errors {}",
                    now.0,
                    now.1,
                    now.2,
                    now.3,
                    ab.send_errors.load(Relaxed) + ba.send_errors.load(Relaxed)
                );
            }
        }
    }
}

fn modified(p: &Path) -> Option<SystemTime> {
    std::fs::metadata(p).and_then(|m| m.modified()).ok()
}

fn read_settings(p: &Path) -> anyhow::Result<Impairment> {
    let text = std::fs::read_to_string(p).unwrap_or_default();
    Impairment::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_reject_unknown_keys() {
        let i = Impairment::parse("delay_ms=50\n# c\nloss=0.01\nrate_mbit=200\ndown=0\n").unwrap();
        assert_eq!(i.delay, Duration::from_millis(50));
        assert_eq!(i.rate_bps, 200_000_000);
        assert!((i.loss - 0.01).abs() < 1e-12);
        assert!(!i.down);
        assert!(Impairment::parse("delay=5").is_err());
        assert!(Impairment::parse("loss=x").is_err());
        assert_eq!(
            Impairment::parse("").unwrap().queue,
            Duration::from_millis(100)
        );
    }

    #[test]
    fn frames_keep_order_pay_the_rate_and_drop_past_the_queue() {
        let t0 = Instant::now();
        let mut s = Schedule::new(t0);
        let imp = Impairment {
            delay: Duration::from_millis(10),
            jitter: Duration::from_millis(10),
            rate_bps: 8_000_000, // 1 byte per microsecond
            queue: Duration::from_millis(2),
            ..Default::default()
        };
        let a = s.admit(&imp, t0, 1000, 0.5, 0.9).unwrap();
        assert_eq!(
            a,
            t0 + Duration::from_micros(1000) + Duration::from_millis(19)
        );
        // a later frame with less jitter never overtakes
        let b = s.admit(&imp, t0, 1000, 0.5, 0.0).unwrap();
        assert!(b >= a);
        // the queue (2 ms) fills: the third 1000-byte frame still fits, then drops
        assert!(s.admit(&imp, t0, 1000, 0.5, 0.0).is_some());
        assert!(s.admit(&imp, t0, 1000, 0.5, 0.0).is_none());
        // loss and blackout
        assert!(s
            .admit(
                &Impairment {
                    loss: 0.5,
                    ..imp.clone()
                },
                t0,
                10,
                0.4,
                0.0
            )
            .is_none());
        assert!(s
            .admit(
                &Impairment {
                    down: true,
                    ..imp.clone()
                },
                t0,
                10,
                0.9,
                0.0
            )
            .is_none());
    }
}
