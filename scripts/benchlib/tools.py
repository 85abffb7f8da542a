"""Processes, network namespaces and the load generators of scripts/bench.

Everything the bench starts is registered in CHILDREN and stopped by PID at
the end (kill_children), also on an error, Ctrl-C or SIGTERM. Client-side
work (iperf3 clients, ping-pong, connect bursts) runs in the client's network
namespace: `with in_ns(ns):` moves the calling thread into it, so sockets
created and processes started there belong to it (ns None = this namespace).
"""
import contextlib, ctypes, json, os, socket, subprocess, sys, threading, time

OBSERVE = False  # --observe: senders and receivers serve --metrics and --dashboard, watched
CHILDREN = []  # every Popen the bench started, stopped by PID at the end
CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def _setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"setns: {os.strerror(e)}")


def enter_ns(ns):
    """Move the calling thread into network namespace `ns` for good (a watcher thread)."""
    if ns:
        fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def in_ns(ns):
    """The calling thread in network namespace `ns` (named by `ip netns`) for the block."""
    if not ns:
        yield
        return
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        enter_ns(ns)
        try:
            yield
        finally:
            _setns(home)
    finally:
        os.close(home)


def free_port(kind=socket.SOCK_STREAM, ns=None, host="127.0.0.1"):
    with in_ns(ns):
        s = socket.socket(socket.AF_INET, kind)
        s.bind((host, 0))
        p = s.getsockname()[1]
        s.close()
    return p


def listening(port, ns=None):
    """Is a TCP socket listening on `port` in namespace ns (read from /proc, no connection made)?"""
    with in_ns(ns):
        with open("/proc/thread-self/net/tcp") as f:
            rows = f.read().splitlines()[1:]
    return any(r.split()[3] == "0A" and int(r.split()[1].split(":")[1], 16) == port for r in rows)


def wait_listening(port, ns=None, timeout=20, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if listening(port, ns):
            return
        if proc is not None and proc.p.poll() is not None:
            break
        time.sleep(0.05)
    tail = "" if proc is None else "; stderr:\n" + "\n".join(l for _, l in proc.lines[-20:])
    raise RuntimeError(f"nothing listens on port {port}{tail}")


def proc_cpu(pid):
    """CPU seconds of one process and of its children it has reaped (utime+stime+cutime+cstime)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in parts[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid):
    """CPU seconds of a process tree: each live process, plus children reaped so far
    (a socat fork child that has ended counts in its parent's cutime)."""
    total, todo, seen = 0.0, [pid], set()
    while todo and len(seen) < 10000:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        total += proc_cpu(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return total


def watch(proc):
    """--observe: scrape the process's metrics every second and keep its
    dashboard's event stream open, until it exits."""
    import urllib.request
    enter_ns(proc.ns)  # this thread only: the views listen on the process's loopback

    def url(what):
        end = time.monotonic() + 30
        while time.monotonic() < end and proc.p.poll() is None:
            for _, l in list(proc.lines):
                if f"{what} at http://" in l:
                    return l.split(f"{what} at ")[1].split()[0]
            time.sleep(0.05)
        return None

    def scrape(u):
        while proc.p.poll() is None:
            try:
                urllib.request.urlopen(u, timeout=5).read()
                proc.scrapes += 1
            except OSError:
                pass
            time.sleep(1)

    def stream(u):
        while proc.p.poll() is None:
            try:
                with urllib.request.urlopen(u + "api/events", timeout=10) as r:
                    for _ in r:
                        proc.events += 1
            except OSError:
                time.sleep(0.5)

    m, d = url("metrics"), url("dashboard")
    if m:
        threading.Thread(target=scrape, args=(m,), daemon=True).start()
    if d:
        threading.Thread(target=stream, args=(d,), daemon=True).start()


class Proc:
    """A child process (in network namespace ns) with its stderr collected; stopped on close."""

    def __init__(self, args, env=None, ns=None):
        self.lines, self.out = [], []
        self.scrapes = self.events = 0
        self.ns = ns
        observed = OBSERVE and len(args) > 2 and args[1] in ("sender", "receiver")
        if observed:
            args = [*args, "--metrics", "127.0.0.1:0", "--dashboard", "127.0.0.1:0"]
        with in_ns(ns):
            self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env={**os.environ, "RUST_LOG": "warn,peerport=info", **(env or {})})
        CHILDREN.append(self.p)
        self.t0 = time.monotonic()
        threading.Thread(target=self._read, args=(self.p.stderr, self.lines), daemon=True).start()
        threading.Thread(target=self._read, args=(self.p.stdout, self.out), daemon=True).start()
        if observed:
            threading.Thread(target=watch, args=(self,), daemon=True).start()

    @staticmethod
    def _read(f, into):
        for line in f:
            into.append((time.monotonic(), line.rstrip("\n")))

    def wait_line(self, needle, src=None, timeout=40):
        src = self.lines if src is None else src
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for t, l in list(src):
                if needle in l:
                    return t, l
            if self.p.poll() is not None and not any(needle in l for _, l in src):
                break
            time.sleep(0.02)
        raise RuntimeError(f"`{needle}` not seen; stderr:\n" + "\n".join(l for _, l in self.lines[-20:]))

    def cpu_seconds(self):
        return proc_cpu(self.p.pid)

    def rss_mb(self):
        with open(f"/proc/{self.p.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return None

    def close(self):
        stop(self.p)


def stop(p):
    """SIGTERM, then SIGKILL after 5 s: one process, by its PID."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def spawn(args, ns=None):
    """A quiet child process (a server) in namespace ns, registered for kill_children."""
    with in_ns(ns):
        p = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    CHILDREN.append(p)
    return p


def kill_children():
    for p in reversed(CHILDREN):
        try:
            stop(p)
        except Exception:  # noqa: BLE001  (keep stopping the others)
            pass


def rcvbuf_errors(namespaces=(None,)):
    """The kernel's count of UDP packets dropped at a full socket receive buffer
    (summed over the given network namespaces)."""
    total = 0
    try:
        for ns in namespaces:
            with in_ns(ns):
                with open("/proc/thread-self/net/snmp") as f:
                    rows = [l.split() for l in f if l.startswith("Udp:")]
            total += int(rows[1][rows[0].index("RcvbufErrors")])
        return total
    except (OSError, ValueError, IndexError):
        return None


def iperf(port, secs, parallel=1, udp_rate=None, length=None, window=None, host="127.0.0.1", ns=None, drop_ns=(None,)):
    """An iperf3 client (in namespace ns) against host:port; UDP when udp_rate is given."""
    args = ["iperf3", "-c", host, "-p", str(port), "-t", str(secs), "-J", "-P", str(parallel)]
    if udp_rate:
        args += ["-u", "-b", udp_rate, "-l", str(length)]
    if window:  # socket buffers of both iperf3 ends (the server applies it too)
        args += ["-w", window]
    if udp_rate:
        # Let the previous run's backlog drain first: a stale packet of the
        # old flow reaching iperf3's new UDP listener is taken as the new
        # client's handshake, and the reply goes to the old client.
        time.sleep(2)
    # iperf3 serves one test at a time: a client that comes while the
    # server still ends the last one is refused as busy; try it again
    for attempt in range(3):
        drops0 = rcvbuf_errors(drop_ns)
        with in_ns(ns):
            r = subprocess.run(args, capture_output=True, text=True, timeout=secs + 30)
        drops1 = rcvbuf_errors(drop_ns)
        j = json.loads(r.stdout or "{}")
        if "busy" in j.get("error", "") and attempt < 2:
            time.sleep(1)
            continue
        break
    if "error" in j:
        raise RuntimeError(j["error"])
    end = j["end"]
    if udp_rate:
        s = end["sum"]
        return {"mbps": s["bits_per_second"] / 1e6, "loss_pct": s.get("lost_percent", 0.0),
                "lost_packets": s.get("lost_packets"), "packets": s.get("packets"),
                "kernel_rcvbuf_drops": None if drops0 is None or drops1 is None else drops1 - drops0,
                "received_mbps": end.get("sum_received", s)["bits_per_second"] / 1e6 if "sum_received" in end else None}
    return {"mbps": end["sum_received"]["bits_per_second"] / 1e6}


def echo_server(host="127.0.0.1", ns=None):
    """A TCP echo service (threads of this process) listening in namespace ns."""
    with in_ns(ns):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, 0))
        s.listen(2048)

    def serve(c):
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                d = c.recv(65536)
                if not d:
                    break
                c.sendall(d)
        except OSError:
            pass
        c.close()

    def accept():
        while True:
            c, _ = s.accept()
            threading.Thread(target=serve, args=(c,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return s.getsockname()[1]


def pingpong(port, n, host="127.0.0.1", ns=None):
    with in_ns(ns):
        c = socket.create_connection((host, port))
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(b"x"); c.recv(1)  # warm up (and the stream exists)
    lat = []
    for _ in range(n):
        t = time.perf_counter_ns()
        c.sendall(b"x")
        if not c.recv(1):
            raise RuntimeError("echo closed")
        lat.append((time.perf_counter_ns() - t) / 1000)
    c.close()
    lat.sort()
    return {"p50_us": lat[len(lat) // 2], "p99_us": lat[int(len(lat) * 0.99)]}


def many_streams(port, n, ns=None):
    socks = []
    with in_ns(ns):
        for i in range(n):
            c = socket.create_connection(("127.0.0.1", port), timeout=20)
            socks.append(c)
    ok = 0
    for i, c in enumerate(socks):
        msg = f"{i:06d}".encode()
        c.sendall(msg)
        if c.recv(6) == msg:
            ok += 1
    return socks, ok


def connect_burst(port, n, host="127.0.0.1", ns=None):
    """n clients connect at once (non-blocking connect() calls issued back to
    back, so the SYNs arrive together) and each echoes one byte: p50/p99 of
    the connect and of connect + echo, in ms. A small listen backlog shows up
    as 1 s SYN retransmits in p99."""
    import errno, resource, selectors
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    sel = selectors.DefaultSelector()
    start, conn_t, echo_t = {}, {}, {}
    socks = []
    with in_ns(ns):
        for _ in range(n):
            c = socket.socket()
            c.setblocking(False)
            t = time.perf_counter()
            err = c.connect_ex((host, port))
            if err not in (0, errno.EINPROGRESS):
                c.close()
                continue
            start[c] = t
            socks.append(c)
            sel.register(c, selectors.EVENT_WRITE)
    deadline = time.monotonic() + 30
    while sel.get_map() and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=1):
            c, now = key.fileobj, time.perf_counter()
            if ev & selectors.EVENT_WRITE:
                if c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    sel.unregister(c)
                    continue
                conn_t[c] = now - start[c]
                c.send(b"x")
                sel.modify(c, selectors.EVENT_READ)
            else:
                try:
                    got = c.recv(1)
                except OSError:
                    got = b""
                if got:
                    echo_t[c] = now - start[c]
                sel.unregister(c)
    for c in socks:
        c.close()
    if not echo_t:
        return {"clients": n, "ok": 0}
    conn = sorted(conn_t.values())
    echo = sorted(echo_t.values())
    q = lambda v, f: round(v[min(len(v) - 1, int(len(v) * f))] * 1000, 1)
    return {"clients": n, "ok": len(echo), "connect_p50_ms": q(conn, 0.5), "connect_p99_ms": q(conn, 0.99),
            "echo_p50_ms": q(echo, 0.5), "echo_p99_ms": q(echo, 0.99)}
