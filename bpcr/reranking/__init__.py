"""The rerank stage: SIFT matching and geometric verification of each query's shortlist.

Imports nothing at load time: each module is imported where it is used."""
