"""bpcr: submission and leaderboard kit for beauty and personal-care product retrieval."""

__version__ = "0.1.0"
