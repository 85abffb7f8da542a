"""Where the bench's two sides run.

loopback (default): both sides in this network namespace, on 127.0.0.1.
veth: two network namespaces of the bench's own, ppb-<pid>-s (the service
side: iperf3 server, echo service, peerport senders, sshd, the rendezvous
servers) and ppb-<pid>-c (the client side: iperf3 clients, peerport
receivers, the ssh client), joined by a veth pair with MTU 1500 and the
private addresses 10.201.0.1 (service) / 10.201.0.2 (client), which exist
only inside the two namespaces. Nothing is routed anywhere else: each
namespace has its loopback and the veth, no default route.
"""
import os, subprocess

from .tools import log

SVC_ADDR, CLI_ADDR, PREFIX = "10.201.0.1", "10.201.0.2", 30
MTU = 1500


def ip(*args):
    r = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if r.returncode:
        raise RuntimeError(f"ip {' '.join(args)}: {r.stderr.strip()}")


class Net:
    def __init__(self, kind):
        self.kind = kind
        self.created = []
        if kind == "loopback":
            self.svc_ns = self.cli_ns = None
            self.svc_addr = self.cli_addr = "127.0.0.1"
            self.label = "loopback"
            return
        if os.geteuid() != 0:
            raise SystemExit("--net veth needs root (network namespaces)")
        self.svc_ns, self.cli_ns = f"ppb-{os.getpid()}-s", f"ppb-{os.getpid()}-c"
        self.svc_addr, self.cli_addr = SVC_ADDR, CLI_ADDR
        self.label = f"veth, MTU {MTU}"
        try:
            for ns in (self.svc_ns, self.cli_ns):
                ip("netns", "add", ns)
                self.created.append(ns)
                ip("-n", ns, "link", "set", "lo", "up")
            # created inside the service namespace, its peer moved straight into the client's
            ip("-n", self.svc_ns, "link", "add", "ppbs0", "mtu", str(MTU), "type", "veth",
               "peer", "name", "ppbc0", "mtu", str(MTU), "netns", self.cli_ns)
            for ns, dev, addr in ((self.svc_ns, "ppbs0", SVC_ADDR), (self.cli_ns, "ppbc0", CLI_ADDR)):
                ip("-n", ns, "addr", "add", f"{addr}/{PREFIX}", "dev", dev)
                ip("-n", ns, "link", "set", dev, "up")
        except BaseException:
            self.close()
            raise
        log(f"net: namespaces {self.svc_ns} ({SVC_ADDR}) and {self.cli_ns} ({CLI_ADDR}), veth MTU {MTU}")

    @property
    def namespaces(self):
        return (self.svc_ns, self.cli_ns) if self.svc_ns else (None,)

    def close(self):
        """Delete the namespaces (the bench's processes in them are stopped first)."""
        for ns in reversed(self.created):
            try:
                ip("netns", "del", ns)
            except RuntimeError as e:
                log(f"net: {e}")
        self.created = []
