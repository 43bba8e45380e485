"""Compare-and-set storms: N processes released together, each writing a feature of its
own (``storm``) or all writing the same update (``same``)."""

from __future__ import annotations

from ..common import (
    Bench,
    progress,
    table,
)


def run(b: Bench, mode: str) -> None:
    from ...testing.storm import run_storm

    sizes = (4,) if b.quick else (4, 8, 16)
    rows = []
    for backend, url in b.backends():
        for n in sizes:
            progress(f"{'storm' if mode == 'distinct' else 'same-update storm'}: "
                      f"{n} processes on {backend}")
            r = run_storm(url, n, mode=mode)
            shared_lost = int(mode == "distinct" and r.shared_stored != r.shared_max_sent)
            rows.append({"backend": backend, "processes": n,
                         "seconds_to_quiescence": round(r.seconds_to_quiescence, 4),
                         "attempts_per_write": round(r.attempts_per_write, 3),
                         "writes": r.writes, "write_attempts": r.write_attempts,
                         "cas_conflicts": r.cas_conflicts,
                         "writes_per_update": r.writes if mode == "same" else None,
                         "lost_updates": r.lost + shared_lost, "gave_up": r.gave_up,
                         "fingerprint_ok": r.fingerprint_ok,
                         "fingerprint_stale_at_end": r.fingerprint_stale_at_end})
    if mode == "distinct":
        b.results["storm"] = {"rows": rows}
        b.emit(table("Compare-and-set storm (each process writes its own feature + a shared one)",
                     [("backend", "backend"), ("procs", "processes"),
                      ("quiescence s", "seconds_to_quiescence"),
                      ("attempts/write", "attempts_per_write"), ("writes", "writes"),
                      ("conflicts", "cas_conflicts"), ("lost", "lost_updates"),
                      ("gave up", "gave_up"), ("stale sha left", "fingerprint_stale_at_end"),
                      ("fingerprint ok", "fingerprint_ok")], rows))
    else:
        b.results["same"] = {"rows": rows}
        b.emit(table("Same-update storm (every process writes the same 20-feature update)",
                     [("backend", "backend"), ("procs", "processes"),
                      ("data writes/update", "writes_per_update"),
                      ("write attempts", "write_attempts"), ("conflicts", "cas_conflicts"),
                      ("quiescence s", "seconds_to_quiescence"), ("lost", "lost_updates")],
                     rows))
