"""A dataset as the kit reads it: preparing image folders, descriptions, image decoding, manifests, ground truth.

Imports nothing at load time: each module is imported where it is used."""
