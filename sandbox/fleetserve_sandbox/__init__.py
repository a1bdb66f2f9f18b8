"""The sandbox fleet: real hosts (systemd-nspawn nodes) on one Linux machine, with simulated
accelerators, a local model hub, a local registry and a stand-in serving image."""
