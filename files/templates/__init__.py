"""The systemd unit template, shipped as fleetserve.files.templates."""
