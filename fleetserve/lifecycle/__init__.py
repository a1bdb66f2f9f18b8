"""The fleet's lifecycle, as commands: ``rollout`` (a change through a serving fleet, batch by batch),
``rollback`` (back to the previous release), ``rebuild`` (a reinstalled node fed by its peers),
``status`` (the fleet report) and ``teardown``.

Each reads the inventory and deploy file offline first (``fleet``: nothing touched when the data is
wrong), then makes whole pyinfra runs of the operator's deploy file through pyinfra's API
(``runner``), in a mode the deploy's ``serve()`` reads, showing progress as it goes (``progress``).
"""
