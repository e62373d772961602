"""The seeds tables of results/seeds-cpu-*/README.md: one row per `bench extract` run, then mean ± std (sample
std) over them, from each run's metrics.json and the rows `python -m bench.tools.offtemplate --out X.md` saved in X.json
("—" for a task with no off-template phrasings; no mean row for a single run).

    python scripts/seeds_table.py results/seeds-cpu-ioi-smollm2-135m/offtemplate.json RUN... > table.md
"""
import json
import statistics
import sys
from pathlib import Path

PERCENT = ("cut", "full_test", "full_held", "full_off", "test", "held", "off")


def row(run: Path, off: list[dict]) -> dict:
    m = json.loads((run / "metrics.json").read_text())
    c = json.loads((run / "circuit.json").read_text())
    mine = [r for r in off if Path(r["run"]).name == run.name]
    full, cut = m["full"], m["pruned"]
    return {"seed": json.loads((run / "config.json").read_text())["args"]["seed"],
            "cut": 100 * (1 - cut["non_embedding"] / full["non_embedding"]), "heads": len(c["heads"]),
            "mlps": len(c["mlps"]), "full_test": 100 * full["test_accuracy"],
            "full_held": 100 * full["heldout_accuracy"],
            "full_off": 100 * statistics.mean(r["full_accuracy"] for r in mine) if mine else None,
            "test": 100 * cut["test_accuracy"], "held": 100 * cut["heldout_accuracy"],
            "off": 100 * statistics.mean(r["pruned_accuracy"] for r in mine) if mine else None,
            "worst": min(100 * (r["pruned_accuracy"] - r["full_accuracy"]) for r in mine) if mine else None,
            "search_s": m["search"]["wall_s"], "fit_s": m["fit"]["wall_s"]}


def line(r: dict, fmt) -> str:
    d = {k: fmt(k) for k in r}
    d.update({k: v if v == "—" else v + "%" for k, v in d.items() if k in PERCENT})
    return (f"| {d['seed']} | {d['cut']} | {d['heads']} | {d['mlps']} | {d['full_test']} / {d['full_held']} / "
            f"{d['full_off']} | {d['test']} ({d['d_test']}) | {d['held']} ({d['d_held']}) | {d['off']} "
            f"({d['d_off']}) | {d['worst']} | {d['search_s']} | {d['fit_s']} |")


def main(offtemplate: str, runs: list[str]) -> None:
    off = json.loads(Path(offtemplate).read_text())
    rows = [row(Path(r), off) for r in runs]
    for r in rows:
        r.update(d_test=r["test"] - r["full_test"], d_held=r["held"] - r["full_held"],
                 d_off=None if r["off"] is None else r["off"] - r["full_off"])
    print("| seed | non-emb. cut | heads | MLPs | full test / held-out / off-template | circuit test (Δ) | circuit "
          "held-out (Δ) | circuit off-template (Δ) | worst phrasing Δ | search s | fit s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(line(r, lambda k, r=r: "—" if r[k] is None else f"{r[k]:+.1f}" if k.startswith(("d_", "worst"))
                   else f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k])))
    if len(rows) < 2:
        return  # no spread to give
    stats = {k: None if any(r[k] is None for r in rows) else
             (statistics.mean(r[k] for r in rows), statistics.stdev(r[k] for r in rows))
             for k in rows[0] if k != "seed"}
    stats["seed"] = ("mean ± std", 0)
    print(line(stats, lambda k: "—" if stats[k] is None else stats[k][0] if k == "seed" else
               f"{stats[k][0]:{'+' if k.startswith(('d_', 'worst')) else ''}.1f} ± {stats[k][1]:.1f}"))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
