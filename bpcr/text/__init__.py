"""The textual side of paper 001: TF-IDF over product descriptions and the text index.

Imports nothing at load time: each module is imported where it is used."""
