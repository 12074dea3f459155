"""A TOML config run as a chain of stages, and the commands built on it (predict, sweep).

Imports nothing at load time: each module is imported where it is used."""
