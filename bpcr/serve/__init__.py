"""`bpcr serve`: a team's own leaderboard server (models, migrations, members, submissions, pages, the app)."""
