#!/usr/bin/env python3
"""Tiny STUN-like UDP reflector.
serve IP PORT...      : answer every datagram with "ip:port" of its sender
probe IP PORT1 PORT2  : from ONE local socket ask both ports, print the mappings and the NAT verdict
"""
import select, socket, sys

def serve(ip, ports):
    socks = []
    for p in ports:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((ip, int(p)))
        socks.append(s)
    while True:
        for s in select.select(socks, [], [])[0]:
            data, addr = s.recvfrom(2048)
            s.sendto(f"{addr[0]}:{addr[1]}".encode(), addr)

def probe(ip, ports):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", 0))
    s.settimeout(1.0)
    seen = []
    for p in ports:
        got = "timeout"
        for _ in range(3):
            s.sendto(b"probe", (ip, int(p)))
            try:
                got = s.recvfrom(2048)[0].decode()
                break
            except socket.timeout:
                pass
        seen.append(got)
    local = s.getsockname()[1]
    if "timeout" in seen:
        verdict = "no-udp"
    elif seen[0] == seen[1]:
        verdict = "endpoint-independent" + (" port-preserving" if seen[0].endswith(f":{local}") else "")
    else:
        verdict = "endpoint-dependent (symmetric)"
    print(f"local :{local} -> {ip}:{ports[0]} saw {seen[0]}, {ip}:{ports[1]} saw {seen[1]}: {verdict}")

if __name__ == "__main__":
    {"serve": lambda: serve(sys.argv[2], sys.argv[3:]),
     "probe": lambda: probe(sys.argv[2], sys.argv[3:5])}[sys.argv[1]]()
