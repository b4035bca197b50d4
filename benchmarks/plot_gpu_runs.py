"""Issue 12's strict-fp32 rows over the GPU runs, against their targets, as a PNG.

    python -m benchmarks.plot_gpu_runs [--out benchmarks/gpu_runs.png]

Reads benchmarks/gpu_runs.csv (gpudl / torch per row and run, copied from the compare tables
in benchmarks/RESULTS.md; add a column after each GPU run) and draws one group of bars a row,
one bar a run, the row's target as a line: below it, the target is met. Needs matplotlib (the
``examples`` or ``test`` extra).
"""

import argparse
import csv
import pathlib

HERE = pathlib.Path(__file__).resolve().parent


def read(path=HERE / "gpu_runs.csv"):
    """(run names, [(row, target, [ratio or None per run])])."""
    with open(path) as f:
        lines = [line for line in f if not line.startswith("#")]
    header, *body = list(csv.reader(lines))
    runs = header[2:]
    rows = [(row.replace(";", ","), float(target),
             [float(v) if v else None for v in values]) for row, target, *values in body]
    return runs, rows


def plot(runs, rows, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    width = 0.8 / len(runs)
    fig, ax = plt.subplots(figsize=(12, 5))
    for r, run in enumerate(runs):
        xs = [i + (r - (len(runs) - 1) / 2) * width for i in range(len(rows))]
        ys = [values[r] for _, _, values in rows]
        ax.bar([x for x, y in zip(xs, ys) if y is not None], [y for y in ys if y is not None],
               width, label=run)
    for i, (_, target, _) in enumerate(rows):
        ax.hlines(target, i - 0.45, i + 0.45, colors="black", linestyles="dashed",
                  label="issue 12's target" if i == 0 else None)
    ax.set_xticks(range(len(rows)), [name for name, _, _ in rows], rotation=25, ha="right")
    ax.set_ylabel("gpudl time / torch time (strict fp32)")
    ax.set_title("gpudl against PyTorch + cuDNN on an H200, by GPU run (lower is better)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot_gpu_runs",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "gpu_runs.png"))
    args = parser.parse_args(argv)
    print(plot(*read(), args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
