"""``GET /metrics``: the daemon's numbers for Prometheus, read from the base dir at each scrape.

The file counters count the event log (``status/events.jsonl``), read incrementally
(:class:`EventTail`) and followed across its rotations; a server started later counts from the
current log file, which Prometheus sees as a counter reset.
"""

from __future__ import annotations

import shutil
import threading
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from core.base.locking import pid_alive
from core.daemon.inbox import Inbox
from core.http.access import HttpContext, read_access
from core.state.events import EventTail
from core.state.status import DaemonState, StatusFile, StatusFileError, TrainingStatus

router = APIRouter(tags=["metrics"])

# Which events count as which outcome of a file.
OUTCOME_EVENTS = {
    "snapshot_promoted": "trained",
    "file_failed": "failed",
    "validation_failed": "invalid",
    "promotion_rejected": "rejected",
    "file_duplicate": "duplicate",
}


class BaseDirCollector(Collector):
    """Collects the metrics of one base dir (``ctx.layout``) on every scrape."""

    def __init__(self, ctx: HttpContext) -> None:
        self.ctx = ctx
        self.tail = EventTail(ctx.layout.events_file)
        self.outcomes = dict.fromkeys(sorted(set(OUTCOME_EVENTS.values())), 0)
        self.last_promotion: str | None = None
        self._lock = threading.Lock()

    def _count_events(self) -> None:
        with self._lock:
            if self.tail.count == 0:
                self.outcomes = dict.fromkeys(self.outcomes, 0)
            for _, event in self.tail.read_new():
                if (outcome := OUTCOME_EVENTS.get(event.get("type"))) is not None:
                    self.outcomes[outcome] += 1
                if event.get("type") in ("snapshot_promoted", "rollback"):
                    self.last_promotion = event.get("ts")

    def _status(self) -> TrainingStatus:
        try:
            return StatusFile(self.ctx.layout.status_file).read() or TrainingStatus()
        except StatusFileError:
            return TrainingStatus(state=DaemonState.ERROR)

    def collect(self):
        self._count_events()
        files = CounterMetricFamily("trainctl_files", "Inbox files finished, by outcome", labels=["outcome"])
        for outcome, count in self.outcomes.items():
            files.add_metric([outcome], count)
        yield files
        status = self._status()
        state = GaugeMetricFamily("trainctl_state", "1 for the daemon's current state", labels=["state"])
        for name in DaemonState:
            state.add_metric([name.value], 1.0 if status.state is name else 0.0)
        yield state
        yield GaugeMetricFamily("trainctl_queue_length", "Files waiting in the inbox",
                                value=len(Inbox(self.ctx.layout).scan().candidates))
        for name, value, text in (
            ("trainctl_current_step", status.current_step, "Optimizer steps done on the current file"),
            ("trainctl_total_steps", status.total_steps, "Optimizer steps planned for the current file"),
            ("trainctl_tokens_per_second", status.tokens_per_second, "Training throughput"),
            ("trainctl_last_loss", status.loss, "Latest logged training loss"),
            ("trainctl_eval_loss", status.eval_loss, "Latest held-out evaluation loss"),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, text, value=float(value))
        if self.last_promotion is not None:
            age = datetime.now(timezone.utc) - datetime.fromisoformat(self.last_promotion)
            yield GaugeMetricFamily("trainctl_seconds_since_last_promotion",
                                    "Seconds since current_model last changed", value=age.total_seconds())
        yield GaugeMetricFamily("trainctl_disk_free_bytes", "Free space on the base dir's file system",
                                value=shutil.disk_usage(self.ctx.layout.root).free)
        yield GaugeMetricFamily("trainctl_paused", "1 while claiming is paused",
                                value=float(self.ctx.layout.pause_file.exists()))
        yield GaugeMetricFamily("trainctl_daemon_up", "1 while the daemon process runs",
                                value=float(pid_alive(status.daemon_pid)))


def build_registry(ctx: HttpContext) -> CollectorRegistry:
    """A registry of this server's own (not the process-global one, so two servers never clash)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BaseDirCollector(ctx))
    return registry


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def get_metrics(request: Request, ctx: HttpContext = Depends(read_access)) -> Response:
    return Response(generate_latest(request.app.state.registry), media_type=CONTENT_TYPE_LATEST)
