"""pyinfra roles (`@deploy`), shipped as ``fleetserve.roles``: preflight -> group network -> helper files
-> shared mount -> image -> jemalloc -> model -> group content -> service -> verify (`serve` chains them;
the group roles only on hosts that serve a group, the shared mount only on hosts with host data
shared_mount).

Each role takes the host's validated plan (``fleetserve.roles.common.host_plan``) and calls pure
operations from ``fleetserve.operations``; each says which facts its operations read on a converged
host (``reads(plan)``), so the run reads them all in one round trip (``fleetserve.facts.batch``). Every
tunable a role uses is a host data key validated by the planner, with its one default in
``fleetserve.schema.hostdata.HostData`` (``fleetserve keys``).
"""
