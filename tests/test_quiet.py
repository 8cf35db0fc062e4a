"""A quiet tool: a run's stderr is its progress lines; --verbose lets the frameworks speak."""

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROGRESS = re.compile(r"^\[\d+:\d\d\] ")


def test_a_run_prints_only_its_progress_lines(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "BFLSIM_VERBOSE")}
    done = subprocess.run(
        [sys.executable, "-m", "bflsim.cli", "run", str(ROOT / "experiments" / "quick_poisoning.toml"),
         "--set", "federation.rounds=1", "--out", str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=300, check=False)

    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(lines) >= 3 and [line for line in lines if not PROGRESS.match(line)] == []
    assert done.stdout.startswith("run folder: ")


def test_verbose_shows_tensorflow_logs_and_flowers_notice_once(monkeypatch):
    from bflsim.cli import set_verbosity
    from bflsim.fl.simulation import _OnceFilter
    from bflsim.progress import verbose

    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL", raising=False)
    set_verbosity(True)
    assert verbose() and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "0"
    monkeypatch.delenv("TF_CPP_MIN_LOG_LEVEL")
    set_verbosity(False)
    assert not verbose() and os.environ["TF_CPP_MIN_LOG_LEVEL"] == "2"
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "1")
    set_verbosity(False)
    assert os.environ["TF_CPP_MIN_LOG_LEVEL"] == "1"  # the user's own setting stays

    def passed(times):
        notice = _OnceFilter("DEPRECATED FEATURE", times=times)
        records = [logging.LogRecord("flwr", logging.WARNING, "", 0, msg, None, None)
                   for msg in ("DEPRECATED FEATURE: run_simulation", "other", "DEPRECATED FEATURE: again")]
        return [r.getMessage() for r in records if notice.filter(r)]

    assert passed(0) == ["other"]
    assert passed(1) == ["DEPRECATED FEATURE: run_simulation", "other"]
