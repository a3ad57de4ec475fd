"""Learning rules as values (see :mod:`neurorate.rules.registry`)."""
