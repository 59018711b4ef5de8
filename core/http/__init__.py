"""The daemon's HTTP face: a JSON API, the dashboard at ``/`` and ``/metrics`` for Prometheus.

``server`` binds the port and runs uvicorn in a thread of the daemon (never in the training child);
``app`` assembles one FastAPI router per resource (``status``, ``queue``, ``snapshots``, ``runs``,
``events``, ``files``, ``metrics``); ``access`` is the bearer-token check; ``feed`` is the one
poller of the event log and status that every open event stream shares. Handlers call the same
functions as the CLI. May import ``core.base``, ``core.state``, ``core.snapshots``, ``core.runs``,
the inbox and queue helpers of ``core.daemon``, and ``trainer``.
"""
