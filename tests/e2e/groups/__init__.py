"""End-to-end tests of services spanning nodes, each on a multi-node sandbox layout of its own."""
