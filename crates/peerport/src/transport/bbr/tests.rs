//! Unit tests of the parent module.

use super::*;

const MTU: u16 = 1200;
const P: u64 = MTU as u64;

/// A simulated bottleneck: `rate` bytes/s, `rtt` propagation, a queue
/// of `queue` bytes, and every `loss_every`-th packet lost at random.
struct Path {
    rate: u64,
    rtt: Duration,
    queue: u64,
    loss_every: u64,
    /// From this time on, the RTT is this instead.
    rtt_later: Option<(Duration, Duration)>,
}

struct Run {
    delivered: u64,
    /// Bytes delivered in each second.
    per_second: Vec<u64>,
    lost_random: u64,
    lost_queue: u64,
    max_queue: u64,
    model: Model,
}

/// Drive the model for `secs` over `path`, sending whenever the window
/// allows (paced at window / RTT like quinn).
fn drive(path: &Path, secs: u64, mut model: Model) -> Run {
    let t0 = Instant::now();
    let tick = Duration::from_micros(100);
    let mut now = t0;
    let mut in_flight = 0u64;
    let mut link_free = t0; // when the bottleneck finishes its queue
    let mut acks: VecDeque<(Instant, Instant, bool)> = VecDeque::new(); // (due, sent, lost)
    let mut credit = 0.0f64;
    let mut n = 0u64;
    let mut run = Run {
        delivered: 0,
        per_second: vec![0; secs as usize + 1],
        lost_random: 0,
        lost_queue: 0,
        max_queue: 0,
        model: model.clone(),
    };
    let per_packet = Duration::from_secs_f64(P as f64 / path.rate as f64);
    while now < t0 + Duration::from_secs(secs) {
        // acks and loss notices due by now (loss noticed one RTT later)
        while acks.front().is_some_and(|(due, _, _)| *due <= now) {
            let (_, sent, lost) = acks.pop_front().unwrap();
            in_flight -= P;
            if lost {
                model.on_loss(now, sent, P, false);
            } else {
                model.on_ack(now, sent, P, false);
                run.delivered += P;
                run.per_second[(now - t0).as_secs() as usize] += P;
            }
            model.on_end_acks(now, in_flight);
        }
        let rtt = match path.rtt_later {
            Some((at, later)) if now - t0 >= at => later,
            _ => path.rtt,
        };
        // pacing at window / min RTT, at most what the window allows
        let srtt = model.min_rtt().unwrap_or(rtt).max(tick);
        credit += model.window() as f64 * tick.as_secs_f64() / srtt.as_secs_f64();
        // quinn's pacer allows bursts of about 2 ms at the rate
        let burst = model.window() as f64 * 0.002 / srtt.as_secs_f64();
        credit = credit.min(burst.max(10.0 * P as f64));
        while credit >= P as f64 && in_flight + P <= model.window() {
            credit -= P as f64;
            n += 1;
            model.on_sent(now, P);
            in_flight += P;
            let queued = link_free.saturating_duration_since(now);
            let queued_bytes = (queued.as_secs_f64() * path.rate as f64) as u64;
            run.max_queue = run.max_queue.max(queued_bytes);
            let (due, lost) = if n.is_multiple_of(path.loss_every) {
                run.lost_random += 1;
                (now + rtt + rtt / 8, true)
            } else if queued_bytes + P > path.queue {
                run.lost_queue += 1;
                (now + rtt + rtt / 8, true)
            } else {
                link_free = link_free.max(now) + per_packet;
                (link_free + rtt, false)
            };
            // keep acks ordered by due time
            let at = acks.partition_point(|(d, _, _)| *d <= due);
            acks.insert(at, (due, now, lost));
        }
        now += tick;
    }
    run.model = model;
    run
}

fn lfn(loss_every: u64) -> Path {
    Path {
        rate: 25_000_000, // 200 Mbit/s
        rtt: Duration::from_millis(100),
        queue: 2_500_000, // 100 ms of queue
        loss_every,
        rtt_later: None,
    }
}

#[test]
fn fills_a_long_fat_path_through_one_percent_loss() {
    let path = lfn(100);
    let run = drive(&path, 20, Model::new(Instant::now(), 10 * P, MTU));
    let goodput = run.delivered as f64 / 20.0 / path.rate as f64;
    assert!(goodput > 0.85, "goodput {goodput:.2} of the link");
    // the queue hardly overflows (startup's overshoot only)
    let sent = run.delivered / P + run.lost_queue + run.lost_random;
    assert!(
        (run.lost_queue as f64) < 0.005 * sent as f64,
        "{} of {sent} packets lost in the queue ({} at random)",
        run.lost_queue,
        run.lost_random
    );
    let bw = run.model.bandwidth() as f64 / path.rate as f64;
    assert!(
        (0.9..1.3).contains(&bw),
        "bandwidth estimate {bw:.2} of the link"
    );
}

#[test]
fn a_shallow_queue_is_not_flooded() {
    let mut path = lfn(u64::MAX);
    path.queue = 250_000; // 10 ms
    let run = drive(&path, 20, Model::new(Instant::now(), 10 * P, MTU));
    let sent = run.delivered / P + run.lost_queue;
    assert!(
        (run.lost_queue as f64) < 0.03 * sent as f64,
        "{} of {sent} packets lost in the queue",
        run.lost_queue
    );
    let goodput = run.delivered as f64 / 20.0 / path.rate as f64;
    assert!(goodput > 0.8, "goodput {goodput:.2}");
}

#[test]
fn a_path_whose_rtt_grows_is_filled_again_within_seconds() {
    // the fault lab's rtt200 case: 1 ms, then 200 ms from 2 s on
    let path = Path {
        rate: 6_250_000, // 50 Mbit/s
        rtt: Duration::from_millis(1),
        queue: 1_250_000,
        loss_every: u64::MAX,
        rtt_later: Some((Duration::from_secs(2), Duration::from_millis(200))),
    };
    let run = drive(&path, 30, Model::new(Instant::now(), 10 * P, MTU));
    let late: u64 = run.per_second[5..30].iter().sum();
    let goodput = late as f64 / 25.0 / path.rate as f64;
    assert!(
        goodput > 0.8,
        "goodput {goodput:.2} 3-28 s after the change"
    );
}

#[test]
fn heavy_loss_is_a_congestion_signal() {
    let path = lfn(20); // 5 %
    let run = drive(&path, 10, Model::new(Instant::now(), 10 * P, MTU));
    assert!(run.model.inflight_hi.is_some(), "5 % loss set no cap");
}

#[test]
fn the_rtt_floor_follows_a_path_that_got_slower() {
    let mut m = Model::new(Instant::now(), 10 * P, MTU);
    let t0 = Instant::now();
    m.on_sent(t0, P);
    m.on_ack(t0 + Duration::from_millis(1), t0, P, false);
    assert_eq!(m.min_rtt(), Some(Duration::from_millis(1)));
    let t1 = t0 + Duration::from_secs(11);
    m.on_sent(t1, P);
    m.on_ack(t1 + Duration::from_millis(200), t1, P, false);
    assert_eq!(m.min_rtt(), Some(Duration::from_millis(200)));
}

#[test]
fn persistent_congestion_starts_over_small() {
    let mut m = Model::new(Instant::now(), 10 * P, MTU);
    m.window = 1 << 24;
    m.on_loss(Instant::now(), Instant::now(), P, true);
    assert_eq!(m.window(), 4 * P);
    assert!(matches!(m.phase, Phase::Startup { .. }));
}

#[test]
fn rate_never_divides_by_zero_or_overflows() {
    assert_eq!(rate(1000, Duration::ZERO), 1000 * 1_000_000_000);
    assert_eq!(rate(u64::MAX, Duration::from_nanos(1)), u64::MAX);
    assert_eq!(rate(1_000_000, Duration::from_secs(1)), 1_000_000);
}
