"""Benchmarking sub-networks, the Pareto plot, and budget selection."""

import csv
import json

import pytest
import torch

import adn
from adn.cli import main as cli_main
from adn.cli.bench import select_main
from adn.deploy.bench import pareto_front, select_subnet
from adn.evaluation.plots import plot_pareto
from helpers import ADN, run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(skip, latency, gflops, acc1=None):
    return {"skip": skip, "latency_ms": latency, "gflops": gflops, "params_m": 1.0, "acc1": acc1, "acc5": None}


# Synthetic results: FTT is dominated (slower and less accurate than TTF).
ROWS = [
    _row("FFF", 10.0, 4.0, 78.0),
    _row("FFT", 8.0, 3.5, 77.0),
    _row("FTT", 7.5, 3.0, 75.5),
    _row("TTF", 7.0, 3.2, 76.0),
    _row("TTT", 6.0, 2.5, 75.0),
]


def test_pareto_front():
    assert [r["skip"] for r in pareto_front(ROWS, "latency_ms")] == ["TTT", "TTF", "FFT", "FFF"]
    assert [r["skip"] for r in pareto_front(ROWS, "gflops")] == ["TTT", "FTT", "TTF", "FFT", "FFF"]
    assert pareto_front([{**r, "acc1": None} for r in ROWS]) == []


@pytest.mark.parametrize(
    "budget, expected",
    [
        ({"max_latency_ms": 100}, "FFF"),
        ({"max_latency_ms": 7.9}, "TTF"),  # FTT costs more latency but is less accurate
        ({"max_latency_ms": 6.0}, "TTT"),  # the bound is inclusive
        ({"max_gflops": 3.1}, "FTT"),
        ({"max_gflops": 3.6, "max_latency_ms": 7.2}, "TTF"),  # both budgets hold
    ],
)
def test_select_subnet_picks_most_accurate_within_budget(budget, expected):
    assert select_subnet(ROWS, **budget)["skip"] == expected


def test_select_subnet_ties_and_no_accuracy_go_to_most_compute():
    tied = [_row("TT", 5.0, 2.0, 70.0), _row("FT", 6.0, 3.0, 70.0), _row("FF", 9.0, 4.0, 71.0)]
    assert select_subnet(tied, max_latency_ms=8)["skip"] == "FT"
    no_acc = [{**r, "acc1": None} for r in ROWS]
    assert select_subnet(no_acc, max_latency_ms=7.6)["skip"] == "TTF"  # most GFLOPs (3.2), not the slowest (FTT)
    assert select_subnet(no_acc, max_gflops=3.1)["skip"] == "FTT"


def test_select_subnet_errors():
    with pytest.raises(ValueError, match="cheapest is TTT at 6 ?ms"):
        select_subnet(ROWS, max_latency_ms=5)
    with pytest.raises(ValueError, match="cheapest is TTT at 2.5 ?GFLOPs"):
        select_subnet(ROWS, max_gflops=1)
    with pytest.raises(ValueError, match="no budget"):
        select_subnet(ROWS)
    with pytest.raises(FileNotFoundError, match="adn bench"):
        select_subnet("/nonexistent/bench.json", max_gflops=1)


def test_select_cli_reads_bench_json(tmp_path, capsys):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"model": "x", "results": ROWS}))
    assert select_main(["--results", str(path), "--max-latency-ms", "7.9"]) == 0
    assert capsys.readouterr().out.startswith("TTF")
    assert cli_main(["select", "--results", str(path), "--max-gflops", "0.1"]) == 2
    assert "no sub-network fits" in capsys.readouterr().err


def test_plot_pareto_with_accuracy(tmp_path):
    path = plot_pareto(ROWS, tmp_path / "p.png", title="synthetic")
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def test_bench_subnets_api():
    model = adn.create_model("resnet20", num_classes=10)
    rows = adn.bench_subnets(
        model, batch_size=2, min_run_time=0.01, rounds=2, num_threads=1, configs=["FFF", "TTT"], progress=False
    )
    assert [r["skip"] for r in rows] == ["FFF", "TTT"]
    full, base = rows
    assert full["gflops"] > base["gflops"] > 0 and full["params_m"] > base["params_m"]
    for r in rows:
        assert 0 < r["latency_ms"] <= r["latency_p90_ms"]
        assert r["throughput"] == pytest.approx(2e3 / r["batch_latency_ms"])
        assert r["acc1"] is None
    assert torch.is_grad_enabled() and not model.training


@pytest.mark.slow
def test_bench_cli_end_to_end(tmp_path):
    """As a user: ``adn bench`` on a tiny model writes a table, CSV, JSON and a PNG; ``adn select`` reads it."""
    proc = run(
        [
            *ADN,
            "bench",
            "--model",
            "resnet20",
            "--num-classes",
            "10",
            "--batch-size",
            "2",
            "--min-run-time",
            "0.01",
            "--threads",
            "1",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert proc.returncode == 0, proc.stderr
    assert all(f"\n{adn.format_skip(s)} " in proc.stdout for s in adn.subnets(3))  # 8 table rows
    with open(tmp_path / "resnet20-bench.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8 and float(rows[0]["gflops"]) > float(rows[-1]["gflops"])
    meta = json.loads((tmp_path / "resnet20-bench.json").read_text())
    assert meta["model"] == "resnet20" and len(meta["results"]) == 8
    assert (tmp_path / "resnet20-bench.png").read_bytes()[:8] == PNG_SIGNATURE
    import matplotlib.image

    assert matplotlib.image.imread(tmp_path / "resnet20-bench.png").ndim == 3
    cheapest = min(meta["results"], key=lambda r: r["gflops"])
    proc = run(
        [*ADN, "select", "--results", str(tmp_path / "resnet20-bench.json"), "--max-gflops", str(cheapest["gflops"])]
    )
    assert proc.returncode == 0 and proc.stdout.startswith(cheapest["skip"])


def test_bench_cli_rejects_bad_input(tmp_path, capsys):
    assert cli_main(["bench", "--model", "nope"]) == 2
    assert "unknown model" in capsys.readouterr().err
    assert cli_main(["bench", "--model", "resnet20", "--skip-cfgs", "TT", "--output-dir", str(tmp_path)]) == 2
    assert "3 stages" in capsys.readouterr().err
    assert cli_main(["bench", "--model", "resnet20", "--batch-size", "0"]) == 2
    assert "--batch-size must be positive" in capsys.readouterr().err
