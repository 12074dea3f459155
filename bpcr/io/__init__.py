"""The kit's file formats and safe writing: IDs, text and .npy readers, atomic groups of files, folders, runs, feature stores.

Imports nothing at load time: each module is imported where it is used."""
