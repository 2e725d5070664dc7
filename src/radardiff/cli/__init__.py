"""The command-line interface: one thin command per verb."""
