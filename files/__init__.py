"""Files fleetserve puts on hosts (unit template, verify scripts), shipped as fleetserve.files."""
