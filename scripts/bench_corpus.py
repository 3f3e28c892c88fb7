"""Benchmark of the corpus builder (a script, not a test): speed and peak memory of the default `rules` run.

Renders scene worlds of 1,000 and 10,000 images, then builds the corpus of each
in its own subprocess (so each peak RSS is its own), and prints side by side:
captions/s of the rules pipeline (with and without minimal-pair rendering; per wall
second and per CPU second, as shared machines make wall time noisy) and
peak RSS at 1,000 vs 10,000 images, next to the RSS right after the imports.

    python scripts/bench_corpus.py [--work /tmp/bench_corpus] [--sizes 1000,10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, re, shutil, sys, time
from hf_negationclip.corpus import CorpusConfig, run_corpus
def peak_mb():
    # VmHWM is this process's own peak; getrusage's ru_maxrss would carry the parent's peak across fork+exec
    return int(re.search(r"VmHWM:\s+(\d+)", open("/proc/self/status").read()).group(1)) / 1024
world, out, distractors = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
rss_imports = peak_mb()
shutil.rmtree(out, ignore_errors=True)
t, cpu = time.perf_counter(), time.process_time()
summary = run_corpus(CorpusConfig(world_dir=world, output_dir=out, distractors=distractors, show_progress=False))
seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
accepted = sum(v for k, v in summary["counts"].items() if k.endswith("/accepted"))
decided = accepted + sum(v for k, v in summary["counts"].items() if k.endswith("/rejected"))
print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "accepted": accepted, "decided": decided,
                  "pairs": sum(s["with_distractors"] for s in summary["splits"].values()),
                  "rss_imports_mb": rss_imports, "rss_peak_mb": peak_mb()}))
"""


def run_child(world: Path, out: Path, distractors: bool) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(world), str(out), "1" if distractors else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default=None, help="folder for the worlds and corpora (default: a temp folder)")
    parser.add_argument("--sizes", default="1000,10000", help="world sizes, comma-separated")
    args = parser.parse_args()
    from hf_negationclip.world import write_world

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_corpus_"))
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        world = work / f"world_{n}"
        write_world(world, n, seed=0, show_progress=False)  # resumes: an existing world is kept
        for distractors in (True, False):
            r = run_child(world, work / f"corpus_{n}_{int(distractors)}", distractors)
            rows.append({"images": n, "distractors": distractors, **r})
            print(
                f"{n:>6} images  distractors={'on ' if distractors else 'off'}  {r['decided']:>6} jobs  "
                f"{r['accepted']:>6} accepted ({r['pairs']:>5} minimal pairs)  {r['seconds']:6.1f} s  "
                f"{r['accepted'] / r['seconds']:7.0f} captions/s ({r['accepted'] / r['cpu_seconds']:5.0f} per CPU-s)  peak RSS {r['rss_peak_mb']:6.0f} MB "
                f"(after imports {r['rss_imports_mb']:4.0f} MB, +{r['rss_peak_mb'] - r['rss_imports_mb']:4.0f} MB)",
                flush=True,
            )
    on = {r["images"]: r for r in rows if r["distractors"]}
    if len(on) >= 2:
        small, large = min(on), max(on)
        grow = lambda r: r["rss_peak_mb"] - r["rss_imports_mb"]  # noqa: E731
        print(
            f"\npeak RSS {large} vs {small} images: {on[large]['rss_peak_mb']:.0f} / {on[small]['rss_peak_mb']:.0f} MB "
            f"= x{on[large]['rss_peak_mb'] / on[small]['rss_peak_mb']:.2f} for x{large / small:.0f} the images; "
            f"above the imports: +{grow(on[large]):.0f} vs +{grow(on[small]):.0f} MB"
        )
    (work / "bench_corpus.json").write_text(json.dumps(rows, indent=2))
    print(f"results: {work / 'bench_corpus.json'}")


if __name__ == "__main__":
    main()
