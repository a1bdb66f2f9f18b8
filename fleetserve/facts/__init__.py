"""pyinfra facts: each gathers everything one role needs in one round trip."""
