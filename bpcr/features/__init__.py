"""Global descriptors: backbones, the papers' poolings, saliency, whitening, the extract stage and its shards.

Imports nothing at load time: each module is imported where it is used."""
