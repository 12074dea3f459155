"""Alembic's script folder for the board's schema (``env.py``, ``versions/``); run by
:func:`bpcr.serve.database.migrate` at every start, so a board made by an older bpcr is brought up to date."""
