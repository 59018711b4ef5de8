"""The daemon: its loop (``loop``) and each step of it: config re-read, inbox claim, the training child
run, outcomes, the base-dir lock, systemd notification, and the service entry point (``service``).
May import every other ``core`` package and ``trainer``."""
