"""benchmarks/hard_authors_numbers.py: it prints the numbers docs/results.md quotes, and refuses a wrong folder."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "hard_authors_numbers.py"


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, cwd=ROOT)


def test_prints_the_numbers_the_docs_quote_for_all_three_arms():
    out = _run().stdout
    assert "gpae-K2: 10,002,432 env steps; greedy last 1.6%, mean over 61 evals 1.6%" in out
    assert "mappo: 9,994,240 env steps; greedy last 3.1%, mean over 61 evals 1.8%" in out
    assert "mappo-jaxmarl: 9,994,240 env steps; greedy last 10.9%, mean over 61 evals 8.6%" in out
    assert "gpae-K2 vs mappo greedy at gpae-K2's 61 evaluation points: above 23, below 31, equal 7" in out
    assert "mappo-jaxmarl vs mappo greedy at mappo-jaxmarl's 61 evaluation points: above 55, below 1, equal 5" in out


def test_a_folder_without_run_csvs_is_refused_by_name(tmp_path):
    done = _run("--root", str(tmp_path / "nowhere"))
    assert done.returncode == 2 and "--root" in done.stderr and "seed0.csv" in done.stderr
