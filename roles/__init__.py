"""pyinfra roles (`@deploy`): preflight -> group network -> shared mount -> image -> jemalloc -> model
-> group content -> service -> verify (the group roles only on hosts that serve a group, the shared
mount only on hosts with host data shared_mount).

Each role takes the host's validated plan (roles.common.host_plan) and calls pure operations from
fleetserve.operations. Every tunable a role uses is a host data key validated by the planner, with
its one default in fleetserve.schema.hostdata.HostData (table: docs/inventory.md).
"""
