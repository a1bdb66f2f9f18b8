"""pyinfra facts, one module per resource as the operations are (host, image, weights, peer, service,
group), each fact with the shell it runs and the parser of what that prints side by side.

``base`` holds what every fact shares (sections, JSON, key=value files); ``batch`` reads many facts
in one round trip and keeps what a host answered until an operation changes that host, so a
converged host costs one command (docs/design.md, "One round trip").
"""
