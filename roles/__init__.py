"""pyinfra roles (`@deploy`): preflight -> jemalloc -> image -> model -> service -> verify.

Each role reads the host's validated plan (roles.common.host_plan) and calls pure operations from
fleetserve.operations. Tunables are the roles' data_defaults; host/group data or --data override them.
"""
