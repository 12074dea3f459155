"""The refine stage and its methods: textual refinement, query expansion, k-reciprocal, diffusion, duplicate groups, DBA.

Imports nothing at load time: each module is imported where it is used."""
