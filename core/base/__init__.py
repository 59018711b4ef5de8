"""The small shared base: atomic writes and deletes, locks, errors, hashing, time stamps, fault hooks.

Imports nothing from the project; ``trainer/`` may import it."""
