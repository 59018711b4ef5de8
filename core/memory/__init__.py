"""What the base dir remembers of promoted files: the memory set (their held-out rows, which the
promotion gate measures) and the replay buffer (their training rows, mixed into new files)."""
