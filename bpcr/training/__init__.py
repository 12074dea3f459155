"""Fine-tuning a backbone on the catalogue (paper 004): pseudo-labels, pair losses, augmentation, the training loop.

Imports nothing at load time: each module is imported where it is used."""
