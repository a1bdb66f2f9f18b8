"""fleetserve's local test fleet: nspawn hosts with simulated accelerators, a model hub, a registry, a stand-in vLLM.

Its own distribution (fleetserve-sandbox); it adds `fleetserve sandbox ...` through the entry-point
group `fleetserve.cli`, and the product imports nothing from it.
"""
