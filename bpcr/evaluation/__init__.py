"""The challenge's metric, scoring with intervals and tests, the public/private split, leaderboards, reports, run checks and fusion.

Imports nothing at load time: each module is imported where it is used."""
