"""What a run reports: metrics.jsonl and TensorBoard (one record per step and per epoch) and the console lines.
Rank 0 writes; on the other ranks every call does nothing."""

from __future__ import annotations

import json
import sys
import time

from trainer.checkpoint import METRICS, TENSORBOARD, RunFolder
from trainer.loggers import open_logger


class RunLog:
    def __init__(self, folder: RunFolder, writing: bool, started: float):
        self.folder, self.writing, self.started = folder, writing, started
        self.metrics, self.tb = None, None

    @classmethod
    def open(cls, folder: RunFolder, config: dict, step: int, rank: int, started: float) -> RunLog:
        """Rank 0: config.yaml written, metrics.jsonl continued from `step` (later records of a crash dropped);
        `started`: when the run started (perf_counter), for the wall time of the end line."""
        run_log = cls(folder, rank == 0, started)
        if not run_log.writing:
            return run_log
        folder.write_config(config)
        folder.fetch_logs()
        path = folder.local / METRICS
        if path.exists():
            kept = [line for line in path.read_text().splitlines() if json.loads(line).get("step", 0) <= step]
            path.write_text("".join(line + "\n" for line in kept))
        run_log.metrics = open(path, "a")
        run_log.tb = open_logger(config["logger"], folder.local / TENSORBOARD, config)
        return run_log

    def write(self, record: dict) -> None:
        """One line of metrics.jsonl; its numbers also as TensorBoard scalars at the record's step."""
        if not self.writing:
            return
        self.metrics.write(json.dumps(record) + "\n")
        self.metrics.flush()
        for key, value in record.items():
            if key not in ("step", "epoch") and isinstance(value, (int, float)):
                self.tb.add_scalar(key, value, record["step"])

    def epoch_end(self, record: dict, epochs: int, fell_back: int, seconds: float) -> None:
        """The epoch's record, logs copied to a remote run folder, one console line."""
        if not self.writing:
            return
        self.write(record)
        self.folder.sync_logs()
        knn = f", kNN top-1 {record['knn_top1']:.3f}" if "knn_top1" in record else ""
        fallback = f", {fell_back} fallbacks" if fell_back else ""
        print(f"epoch {record['epoch'] + 1}/{epochs}: loss {record['epoch_loss']:.4f}{knn}{fallback}, "
              f"{seconds:.1f} s, checkpoint {record['checkpoint']}", file=sys.stderr, flush=True)

    def run_end(self, last: dict, stopped_at: int, epochs: int, fallback_fraction: float) -> None:
        """The end-of-run line (after at least one epoch of this invocation)."""
        if not self.writing:
            return
        knn = f", kNN top-1 {last['knn_top1']:.3f}" if "knn_top1" in last else ""
        state = "finished" if stopped_at >= epochs else "stopped"
        print(f"run {state} at epoch {stopped_at}/{epochs}: loss {last['epoch_loss']:.4f}{knn}, "
              f"fallback fraction {fallback_fraction:.4f}, checkpoint {last['checkpoint']}, "
              f"wall time {time.perf_counter() - self.started:.1f} s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.metrics is not None:
            self.metrics.close()
            self.tb.close()
            self.folder.sync_logs()
