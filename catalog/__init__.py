"""The built-in catalog entries, shipped inside the package as fleetserve.catalog_entries."""
