"""Nearest-neighbour search: indexes, the papers' distances, exact scans, similarity fusion, k-NN graphs.

Imports nothing at load time: each module is imported where it is used."""
