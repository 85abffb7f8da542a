"""Helpers of scripts/bench (standard library only): processes, network
namespaces, load generators (tools), the ssh -L / socat / WireGuard
baselines (baselines) and the markdown report (report)."""
