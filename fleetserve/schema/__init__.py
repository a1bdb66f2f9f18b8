"""Every type fleetserve passes between its layers, by subject; nothing here imports the rest of fleetserve.

- ``base``: the errors, strict models, whole and real numbers, rules for safe text;
- ``hardware``: hardware kinds (fleetserve/hardware/kinds.yaml);
- ``catalog``: catalog entries, variants and services;
- ``hostdata``: every host data key with its one default;
- ``plan``: the validated plan per host (service instances, model copies, caches, builder outputs);
- ``checks``: what preflight and the group preflight expect of hosts.

Catalog entries and host data are pydantic models, so a wrong type or an unknown key is refused with
the path of the value; the plan is frozen dataclasses of already-validated values.
"""
