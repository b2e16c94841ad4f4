"""Fault tests: the database restarting under load, providers failing or hanging; real processes."""
