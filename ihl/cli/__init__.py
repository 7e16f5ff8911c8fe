"""The `ihl` command line: ``main`` builds the app from one module per command group."""
