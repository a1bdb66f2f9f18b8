"""Ways of handing accelerators to a container, one module each, named by kinds.yaml's `device_syntax`.

Each module has:

- ``NAME``: the `device_syntax` it implements;
- ``PRIVILEGED``: whether a service may run with ``device_mode: privileged`` this way;
- ``container_args(hardware, devices, device_mode)``: the engine's arguments that give the devices;
- ``container_env(hardware, devices, device_mode)``: environment the container needs for them;
- ``service_problems(hardware, device_mode, env)``: what a service's catalog entry may not ask (offline);
- ``report_script(hardware)``: shell printing ``@@section`` blocks about what the engine offers this way;
- ``parse_report(sections)``: those blocks as a dict (merged into the host report);
- ``problems(report, hardware)``: what the host lacks to hand devices over this way (preflight);
- optionally ``kind_problems(hardware)``: what a kind using this way must also say in kinds.yaml.
"""
