"""The markdown report of scripts/bench (bench.md), from its bench.json."""

FIGS = (("tcp_1", ("tcp_1", "mbps")), ("tcp_8", ("tcp_8", "mbps")), ("cpu_s_per_gib", ("cpu_s_per_gib",)),
        ("p50", ("latency", "p50_us")), ("p99", ("latency", "p99_us")))


def dig(d, path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def vs_ssh(r, ssh):
    """A row's figures divided by ssh -L's (throughput: > 1 is ahead of ssh; CPU s/GiB and latency: < 1 is)."""
    out = {}
    for name, path in FIGS:
        a, b = dig(r, path), dig(ssh, path)
        out[name] = round(a / b, 3) if a is not None and b else None
    return out


def vs_ssh_table(res):
    ssh = res.get("baselines", {}).get("ssh -L", {})
    if "tcp_1" not in ssh:
        return []
    f = lambda x: "-" if x is None else f"{x:.2f}"
    lines = ["", f"Against `ssh -L` ({ssh.get('version', 'OpenSSH')}, cipher {ssh.get('cipher', '?')}; its figures: "
             f"{ssh['tcp_1']['mbps']:.0f} / {ssh['tcp_8']['mbps']:.0f} Mbit/s, {ssh['cpu_s_per_gib']} CPU s/GiB, "
             f"p50 / p99 {ssh['latency']['p50_us']:.0f} / {ssh['latency']['p99_us']:.0f} µs), each row's figure divided by ssh -L's: "
             "throughput above 1 and CPU or latency below 1 is ahead of ssh.", "",
             "| row | TCP 1 stream | TCP 8 streams | CPU s/GiB | p50 | p99 |", "|---|---|---|---|---|---|"]
    rows = [("direct (no tunnel)", res["direct"])] + [(k, v) for k, v in res.get("baselines", {}).items() if k != "ssh -L"]
    rows += list(res["modes"].items())
    for name, r in rows:
        v = r.get("vs_ssh")
        if not v:
            lines.append(f"| {name} | error |  |  |  |  |")
            continue
        lines.append(f"| {name} | {f(v['tcp_1'])} | {f(v['tcp_8'])} | {f(v['cpu_s_per_gib'])} | {f(v['p50'])} | {f(v['p99'])} |")
    return lines


def udp_app_table(res):
    d = res["direct"].get("udp_max")
    if not d:
        return []
    wgd = res.get("wireguard_direct")

    def cell(x, ref):
        if not x or "error" in x:
            return f"error: {(x or {}).get('error', '?')[:60]}"
        if x.get("offered_mbps") is None:
            return f"none at <= {x['max_loss_pct']} % loss in {len(x['tries'])} runs"
        ratio = f"; {x['goodput_mbps'] / ref['goodput_mbps']:.2f} of direct" if ref and ref.get("goodput_mbps") else ""
        off = x["offered_mbps"]
        return f"{x['goodput_mbps']:.0f} (offered {off if isinstance(off, str) else f'{off:.0f}'}, loss {x['loss_pct']:.2f} %{ratio})"

    lines = ["", f"UDP application flow, {d['length']}-byte packets: goodput (Mbit/s received) at the highest offered rate with "
             f"at most {d['max_loss_pct']} % loss (a bounded search over offered rates: {len(d['tries'])} runs for direct). "
             "Plain: iperf3 -u through the mode's UDP forwarding. WireGuard: iperf3 -u inside a wireguard-go VPN whose UDP "
             "the mode carries (its peers in the two namespaces; --net veth only).", "",
             "| row | plain iperf3 -u |" + (" WireGuard (wireguard-go) |" if wgd else ""), "|---|---|" + ("---|" if wgd else ""),
             f"| direct (no tunnel) | {cell(d, None)} |" + (f" {cell(wgd, None)} |" if wgd else "")]
    for m, r in res["modes"].items():
        if "udp_max" in r:
            lines.append(f"| {m} | {cell(r['udp_max'], d)} |" + (f" {cell(r.get('wireguard'), wgd)} |" if wgd else ""))
    return lines


def render(res):
    d, bq, bare = res["direct"], res["bare_quic_mbps"], res["bare_quic"]

    def udp_loss(x):
        if not x or "error" in x:
            return "error"
        return f"{x.get('loss_pct', 0):.2f}%"

    def bare_loss(stack, rate, length):
        for g in bare[stack]["datagrams"]:
            if g["offered_mbps"] == int(rate[:-1]) and g["packet_bytes"] == length:
                return f"{g['loss_pct']:.2f}%"
        return "-"

    du = d.get("udp", {})
    where = res.get("net", "loopback")
    lines = [f"Network: {where}.", "",
        "| mode | path | setup ms (after signaling) | TCP 1 stream Mbit/s (vs bare QUIC, vs direct) | TCP 8 streams Mbit/s | UDP 500M loss 1350 B / 1450 B | UDP 100M loss 1350 B / 1450 B | p50 / p99 µs (added p50 vs direct; vs bare QUIC) | CPU s/GiB | sender RSS MB idle / 1 session / 1000 streams | idle sessions: RSS per session MB (N) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        f"| direct (no tunnel) | {where} | - | {d['tcp_1']['mbps']:.0f} | {d['tcp_8']['mbps']:.0f} | {udp_loss(du.get('500M_1350'))} / {udp_loss(du.get('500M_1450'))} | {udp_loss(du.get('100M_1350'))} / {udp_loss(du.get('100M_1450'))} | {d['latency']['p50_us']:.0f} / {d['latency']['p99_us']:.0f} | - | - | - |",
    ]
    for stack in ("quinn", "iroh"):
        b = bare[stack]
        eight = f"{b['bulk8_bytes_per_sec'] * 8 / 1e6:.0f}" if b.get("bulk8_bytes_per_sec") else "-"
        lines.append(
            f"| bare QUIC: {stack if stack == 'quinn' else 'iroh (noq)'} | loopback, in-process | - | {bq[stack]:.0f} | {eight} | "
            f"{bare_loss(stack, '500M', 1350)} / {bare_loss(stack, '500M', 1450)} | {bare_loss(stack, '100M', 1350)} / {bare_loss(stack, '100M', 1450)} | "
            f"{b['ping_p50_us']:.0f} / {b['ping_p99_us']:.0f} | {round(b['bulk_cpu_s_per_gib'], 2) if b.get('bulk_cpu_s_per_gib') else '-'} | - | - |")
    for name, b in res.get("baselines", {}).items():
        if "tcp_1" not in b:
            lines.append(f"| {name} | error: {b.get('error', '?')[:80]} |  |  |  |  |  |  |  |  |  |")
            continue
        what = f"{b.get('version', 'OpenSSH')}, {b.get('cipher', '?')}" if name == "ssh -L" else "2 hops, no crypto"
        lines.append(
            f"| {name} | {what} | - | {b['tcp_1']['mbps']:.0f} ({b['tcp_1']['mbps'] / d['tcp_1']['mbps']:.3f} vs direct) | {b['tcp_8']['mbps']:.0f} | - | - | "
            f"{b['latency']['p50_us']:.0f} / {b['latency']['p99_us']:.0f} (+{b['latency']['p50_us'] - d['latency']['p50_us']:.1f}) | {b['cpu_s_per_gib']} | - | - |")
    for m, r in res["modes"].items():
        if "error" in r and "tcp_1" not in r:
            lines.append(f"| {m} | error: {r['error'][:80]} |  |  |  |  |  |  |  |  |  |")
            continue
        u = r.get("udp", {})
        ra = r.get("ratios", {})
        s = r.get("idle_sessions", {})
        sess = f"{s['per_session_mb']} ({s['sessions']})" if "per_session_mb" in s else f"error: {s.get('error', '?')[:60]}"
        idle = s.get("rss_mb_idle", "?")
        path = r.get("path", "?")[:40] + (f" -> {r['final_path']}" if r.get("final_path") else "")
        lines.append(
            f"| {m} | {path} | {r.get('setup_ms')}{'' if r.get('setup_after_signaling_ms') is None else ' (' + str(r['setup_after_signaling_ms']) + ')'} | {r['tcp_1']['mbps']:.0f} ({ra.get('tcp_1_vs_bare_quic')}, {ra.get('tcp_1_vs_direct')}) | "
            f"{r.get('tcp_8', {}).get('mbps', 0):.0f} | {udp_loss(u.get('500M_1350'))} / {udp_loss(u.get('500M_1450'))} | "
            f"{udp_loss(u.get('100M_1350'))} / {udp_loss(u.get('100M_1450'))} | "
            f"{r.get('latency', {}).get('p50_us', 0):.0f} / {r.get('latency', {}).get('p99_us', 0):.0f} (+{ra.get('added_p50_us')}; +{ra.get('p50_over_bare_quic_us')}) | "
            f"{r.get('cpu_s_per_gib')} | {idle} / {r.get('sender_rss_mb_one_session')} / {r.get('streams', {}).get('sender_rss_mb')} ({r.get('streams', {}).get('echoed')}/{r.get('streams', {}).get('open')} echoed) | {sess} |"
        )
    lines += ["", "UDP at 500 Mbit/s offered in detail: loss with the default socket buffers (packets the kernel dropped at a full socket receive buffer during the run, anywhere on the machine), and with 4 MB buffers on both iperf3 ends (`-w 4M`):", "",
              "| row | 1350 B loss (kernel rcvbuf drops) | 1450 B loss (kernel rcvbuf drops) | 1350 B loss, 4 MB buffers | 1450 B loss, 4 MB buffers |", "|---|---|---|---|---|"]
    rows = [("direct (no tunnel)", d)] + [(m, r) for m, r in res["modes"].items() if "udp" in r]
    for name, r in rows:
        u, w = r.get("udp", {}), r.get("udp_4m", {})
        def det(x):
            return f"{udp_loss(x)} ({x.get('kernel_rcvbuf_drops')})" if x and "error" not in x else "error"
        lines.append(f"| {name} | {det(u.get('500M_1350'))} | {det(u.get('500M_1450'))} | {udp_loss(w.get('500M_1350'))} | {udp_loss(w.get('500M_1450'))} |")
    def burst(b):
        if not b or "connect_p50_ms" not in b:
            return "| error |  |  |"
        return f"| {b['ok']}/{b['clients']} | {b['connect_p50_ms']} / {b['connect_p99_ms']} | {b['echo_p50_ms']} / {b['echo_p99_ms']} |"
    lines += ["", "Connect burst: that many TCP clients connect at once to the receiver's listener (direct: to the echo service), each echoes one byte; ms:", "",
              "| row | connected | connect p50 / p99 | connect + echo p50 / p99 |", "|---|---|---|---|",
              f"| direct (no tunnel) {burst(d.get('burst'))}"]
    for m, r in res["modes"].items():
        lines.append(f"| {m} {burst(r.get('burst'))}")
    lines += vs_ssh_table(res) + udp_app_table(res)
    return "\n".join(lines) + "\n"

