"""The `steerlab` command: one thin command group per area; each parses arguments and calls the library."""
