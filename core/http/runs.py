"""``GET /api/runs`` and ``GET /api/runs/{id}``: run folders, each with its run.json and loss curve.

The curve is read from the run's TensorBoard events (``runs/<id>/tensorboard/``), which HF's
TensorBoard callback flushes at every logged step: ``train/loss`` and ``eval/loss`` by step.
``latest`` names the newest run (the ``runs/latest`` link), so a page can follow the file training now.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException
from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

from core.http.access import HttpContext, read_access
from core.runs.run import LATEST_LINK, list_runs, read_run

router = APIRouter(prefix="/api", tags=["runs"])

CURVES = {"train": "train/loss", "eval": "eval/loss"}


def loss_curve(tensorboard_dir: Path) -> dict[str, list[list[float]]]:
    """``{"train": [[step, loss], ...], "eval": [...]}`` from the TensorBoard events in a folder.

    Read again only when a file in the folder changed (name, size, mtime): every open dashboard
    asks for the curve of the run training now after each step, and parsing the events is the
    costly part.
    """
    if not tensorboard_dir.is_dir():
        return {name: [] for name in CURVES}
    key = tuple(sorted((p.name, info.st_size, info.st_mtime_ns) for p in tensorboard_dir.iterdir() for info in [p.stat()]))
    cached = _curves.get(tensorboard_dir)
    if cached is not None and cached[0] == key:
        return cached[1]
    events = EventAccumulator(str(tensorboard_dir), size_guidance={SCALARS: 0})
    events.Reload()
    tags = set(events.Tags().get(SCALARS, []))
    curve = {
        name: [[point.step, point.value] for point in events.Scalars(tag)] if tag in tags else []
        for name, tag in CURVES.items()
    }
    _curves[tensorboard_dir] = (key, curve)
    return curve


_curves: dict[Path, tuple[tuple, dict]] = {}  # TensorBoard folder -> (its files' signatures, curve)


def _run_dir(ctx: HttpContext, run_id: str) -> Path:
    runs = ctx.layout.runs
    if run_id == LATEST_LINK:
        link = runs / LATEST_LINK
        run_id = link.resolve().name if link.is_symlink() else ""
    if not run_id or "/" in run_id or run_id.startswith(".") or not (runs / run_id).is_dir():
        raise HTTPException(404, detail=f"no run {run_id!r} in {runs}; GET /api/runs lists them")
    return runs / run_id


@router.get("/runs", summary="Every run, newest first (id, phase, status, losses)")
def get_runs(ctx: HttpContext = Depends(read_access)) -> dict:
    keys = ("id", "phase", "status", "started_at", "finished_at", "steps", "final_loss", "best_eval_loss")
    return {"runs": [{k: run.record.get(k) for k in keys} for run in reversed(list_runs(ctx.layout.runs))]}


@router.get("/runs/{run_id}", summary="One run's run.json and its loss curve ('latest': the newest run)")
def get_run(run_id: str, ctx: HttpContext = Depends(read_access)) -> dict:
    path = _run_dir(ctx, run_id)
    run = read_run(path)
    if run is None:
        raise HTTPException(404, detail=f"{path} has no readable run.json")
    record = {k: v for k, v in run.record.items() if k != "config"}
    return {"id": run.id, "run": record, "loss_curve": loss_curve(run.tensorboard)}
