"""Results into words and pictures: the markdown tables, the chart, run metadata.

Every figure in a table is the median over a scenario's runs. Ratios are "times better
than the reference in the same run": value / reference where higher is better,
reference / value where lower is better, so above 1 always means better.
"""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path
from types import MappingProxyType

from bench.servers import ROOT, redis_binary

PACKAGES = (
    "tornado",
    "redis",
    "hiredis",
    "websockets",
    "python-socketio",
    "python-engineio",
    "aiohttp",
    "uvloop",
)


# -- metadata -----------------------------------------------------------------------


def git_info() -> dict:
    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    return {
        "commit": git("rev-parse", "HEAD"),
        "branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def package_versions() -> dict:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    try:
        out = subprocess.run(
            [redis_binary(), "--version"], capture_output=True, text=True, check=True
        ).stdout
        versions["redis-server"] = next(
            (w.split("=", 1)[1] for w in out.split() if w.startswith("v=")), out.strip()
        )
    except Exception:
        versions["redis-server"] = None
    return versions


# -- tables -------------------------------------------------------------------------

# The references the summary puts ours against, by key: the name in its column.
SUMMARY_REFERENCES = {"tornado": "bare Tornado", "websockets": "websockets", "floor": "floor"}
# The floor has a mode for rooms, run under a key of its own: in many-rooms it is the
# floor, and its "own" fan-out figure is the floor's.
SAME_SERVER = MappingProxyType({"floor-rooms": "floor"})
FLOOR_IN = MappingProxyType({floor: mode for mode, floor in SAME_SERVER.items()})


def fmt(value, spec: str) -> str:
    if value is None:
        return "-"
    try:
        return spec.format(value)
    except (TypeError, ValueError):
        return str(value)


def ratio(value, reference, better: str | None) -> float | None:
    if value is None or reference is None or not better:
        return None
    if better == "higher":
        return value / reference if reference else None
    return reference / value if value else None


def ratio_text(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}x"


def targets_of(s: dict) -> list[dict]:
    """A scenario's targets (results written before there could be several have one,
    `target`)."""
    if "targets" in s:
        return s["targets"]
    return [s["target"]] if s.get("target") else []


def target_metric(s: dict, target: dict) -> dict:
    """The metric a target is about: the headline unless it names another."""
    key = target.get("metric") or s["headline"]
    return next(m for m in s["metrics"] if m["key"] == key)


def target_base(results: dict, s: dict, target: dict, kind: str) -> tuple[float | None, str]:
    """What a relative target divides by, and its name: the server's own headline in
    scenario `of`, or reference `against`'s figure in this scenario (None if not in
    this run)."""
    if target.get("of"):
        other = next((o for o in results["scenarios"] if o["name"] == target["of"]), None)
        own = SAME_SERVER.get(kind, kind)
        base = other["median"].get(own, {}).get(other["headline"]) if other else None
        return base, target["of"]
    against = target["against"]
    label = results["servers"].get(against, {}).get("label", against)
    return s["median"].get(against, {}).get(target_metric(s, target)["key"]), label


def target_of(
    results: dict, s: dict, target: dict, kind: str
) -> tuple[float | None, float | None, str]:
    """One target for one server: (what it reached, the goal, how to say the goal).
    What is reached is the figure, or, for a relative target, the figure divided by
    `target_base` (None if either is not in this run)."""
    metric = target_metric(s, target)
    value = s["median"].get(kind, {}).get(metric["key"])
    word = "at least" if metric["better"] == "higher" else "at most"
    if not (target.get("of") or target.get("against")):
        return value, target["value"], f"{word} {fmt(target['value'], metric['fmt'])}"
    base, name = target_base(results, s, target, kind)
    reached = value / base if value is not None and base else None
    return reached, target["value"], f"{word} {target['value']:.2f}x {name}"


def target_text(results: dict, s: dict, target: dict, kind: str, labels: dict) -> str | None:
    """One sentence: the target, what this server reached, met or not. A target
    against a reference is for our servers only."""
    if kind not in s["median"]:
        return None
    if target.get("against") and (
        kind == target["against"] or results["servers"].get(kind, {}).get("reference")
    ):
        return None
    reached, goal, said = target_of(results, s, target, kind)
    metric = target_metric(s, target)
    value = fmt(s["median"][kind].get(metric["key"]), metric["fmt"])
    if target.get("of") or target.get("against"):
        base, name = target_base(results, s, target, kind)
        own = "its " if target.get("of") else ""
        if reached is None:
            return f"{labels[kind]}: {metric['label']} {value}; {name} not in this run, no ratio."
        base_text = fmt(base, metric["fmt"])
        shown = f"{metric['label']} {value} = {reached:.2f}x {own}{name} ({base_text})"
    else:
        shown = f"{metric['label']} {value}"
    if reached is None:
        return None
    met = reached >= goal if metric["better"] == "higher" else reached <= goal
    return f"{labels[kind]}: {shown}; target {said}: **{'met' if met else 'not met'}**."


def scenario_table(s: dict, labels: dict, results: dict | None = None) -> list[str]:
    metrics = s["metrics"]
    head = next(m for m in metrics if m["key"] == s["headline"])
    refs = [r for r in s["references"] if r in s["median"]]
    target = next((t for t in targets_of(s) if t.get("of")), None) if results else None
    of = target["of"] if target else None
    columns = ["server", head["label"]]
    if of:
        columns.append(f"vs own {of}")
    columns += [f"vs {labels[r]}" for r in refs]
    columns += ["runs (min-max)"]
    columns += [m["label"] for m in metrics if m["key"] != head["key"]]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for kind in s["servers"]:
        if kind in s["errors"] and kind not in s["median"]:
            error = s["errors"][kind].replace("|", "/").replace("\n", " ")[:200]
            lines.append(f"| {labels[kind]} | **FAILED**: {error} |" + " |" * (len(columns) - 2))
            continue
        med = s["median"].get(kind)
        if med is None:
            continue
        runs = [r.get(head["key"]) for r in s["runs"][kind] if r.get(head["key"]) is not None]
        spread = (
            f"{fmt(min(runs), head['fmt'])}-{fmt(max(runs), head['fmt'])} ({len(runs)})"
            if len(runs) > 1
            else f"({len(runs)})"
        )
        row = [labels[kind], fmt(med[head["key"]], head["fmt"])]
        if target:
            row.append(ratio_text(target_of(results, s, target, kind)[0]))
        for r in refs:
            row.append(
                ratio_text(ratio(med[head["key"]], s["median"][r][head["key"]], head["better"]))
            )
        row.append(spread)
        row += [fmt(med.get(m["key"]), m["fmt"]) for m in metrics if m["key"] != head["key"]]
        if kind in s["errors"]:
            row[0] += f" (**FAILED** later: {s['errors'][kind][:120]})"
        lines.append("| " + " | ".join(row) + " |")
    return lines


def summary_table(results: dict, labels: dict) -> list[str]:
    kinds = list(results["servers"])
    columns = ["scenario", "metric", *[labels[k] for k in kinds]]
    columns += [f"ours vs {name}" for name in SUMMARY_REFERENCES.values()]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for s in results["scenarios"]:
        head = next(m for m in s["metrics"] if m["key"] == s["headline"])
        med = s["median"]
        row = [s["name"], head["label"] + (" ↑" if head["better"] == "higher" else " ↓")]
        for k in kinds:
            if k in s["errors"] and k not in med:
                row.append("FAILED")
            elif k in med:
                row.append(fmt(med[k][head["key"]], head["fmt"]))
            else:
                row.append("")
        ours = med.get("ours", {}).get(head["key"])
        for ref in SUMMARY_REFERENCES:
            if not s["references"]:  # a scenario the reference servers cannot run
                row.append("ours only")
                continue
            theirs = med.get(ref, med.get(FLOOR_IN.get(ref, ""), {})).get(head["key"])
            row.append(ratio_text(ratio(ours, theirs, head["better"])))
        lines.append("| " + " | ".join(row) + " |")
    return lines


def targets(results: dict, labels: dict) -> list[str]:
    """The scenarios' targets and whether ours reached them, a line each."""
    lines = []
    for s in results["scenarios"]:
        for target in targets_of(s):
            text = target_text(results, s, target, "ours", labels)
            if text is not None:
                lines.append(f"- `{s['name']}`: {text}")
    return lines


def markdown(results: dict) -> str:
    labels = {k: v["label"] for k, v in results["servers"].items()}
    m = results["machine"]
    git = results["git"]
    plan = results["plan"]
    placement = results["placement"]
    pins = (
        f"servers and their redis-server pinned to CPU {placement['server_cpu']}, "
        f"load generator to CPU {placement['load_cpu']}"
        if placement["pinned"]
        else "NOT pinned (fewer than 2 CPUs): servers and load share the CPU"
    )
    out = [
        "# Benchmark results",
        "",
        f"Run {results['started_utc']} on commit `{git['commit'][:12]}`"
        + (" (with uncommitted changes)" if git["dirty"] else "")
        + f", {results['duration_s'] / 60:.1f} minutes"
        + ("" if results["full_run"] else f" — **partial run** ({' '.join(results['argv'])})")
        + ".",
        f"Machine: {m['cpus']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, "
        f"Linux {m['kernel']}, Python {m['python']}; {pins}.",
        "Versions: "
        + ", ".join(f"{k} {v}" for k, v in results["packages"].items() if v is not None)
        + ".",
        f"Each figure is the median of {plan['repeats']} runs (idle, idle-rooms, "
        "reconnect-storm and slow-consumer: 1 run; the runs of many-rooms share one set of "
        "connections), "
        f"{plan['warmup']:g} s warm-up then {plan['measure']:g} s measured per run, runs of "
        "different servers interleaved. The machine is shared and noisy: compare servers "
        "*within* this run (the ratios), not absolute figures across runs. "
        "Ratios: times better than the reference (above 1 = better). "
        "`other CPU0 %` is CPU time on the server's core used by anything but the "
        "server and its Redis (other tenants, interrupts): high values mean a noisy run. "
        "`load CPU %` near 100 means the load generator set the pace of the wall-clock "
        "rates (deliveries / s); the per-CPU-second figures do not depend on it. "
        "How to read this: docs/benchmarks.md.",
        "",
        "Servers:",
        "",
    ]
    out += [f"- **{v['label']}** (`{k}`): {v['describe']}" for k, v in results["servers"].items()]
    out += ["", "## Summary", "", *summary_table(results, labels), ""]
    if goals := targets(results, labels):
        out += ["Targets:", "", *goals, ""]
    for s in results["scenarios"]:
        params = ", ".join(f"{k}={v}" for k, v in s["params"].items())
        out += [f"## {s['title']} (`{s['name']}`)", "", s["about"], ""]
        if params:
            out += [f"Parameters: {params}.", ""]
        goals = [
            target_text(results, s, target, kind, labels)
            for target in targets_of(s)
            for kind in s["servers"]
        ]
        if goals := [g for g in goals if g]:
            out += ["Target:", "", *(f"- {g}" for g in goals), ""]
        out += [*scenario_table(s, labels, results), ""]
    return "\n".join(out)


# -- chart --------------------------------------------------------------------------

COLORS = {
    "ours": "#d62728",
    "ours-bare": "#ff9896",
    "tornado": "#1f77b4",
    "websockets": "#2ca02c",
    "floor": "#7f7f7f",
    "socketio": "#9467bd",
}


def chart(results: dict, path: Path) -> Path | None:
    """A grid of bar charts (and the slow-consumer RSS over time) as a PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    by_name = {s["name"]: s for s in results["scenarios"]}
    labels = {k: v["label"] for k, v in results["servers"].items()}
    panels = [
        (
            "Fan-out: deliveries per server CPU-second ↑",
            ["fanout-100", "fanout-1000", "many-rooms"],
            None,
        ),
        ("Echo: deliveries per server CPU-second ↑", ["echo-16", "echo-100"], None),
        ("Handshakes per server CPU-second ↑", ["handshakes"], None),
        ("RSS per idle connection, KB ↓", ["idle", "idle-rooms"], None),
        ("Idle CPU, % of a core ↓", ["idle", "idle-rooms"], "idle_cpu_pct"),
        ("Fan-out complete p99, ms ↓", ["fanout-100", "fanout-1000"], "complete_p99_ms"),
        ("Echo round trip p99, ms ↓", ["echo-16", "echo-100"], "rtt_p99_ms"),
        ("Cross-instance latency, ms ↓", ["cross-instance"], ("p50_ms", "p99_ms")),
    ]
    fig, axes = plt.subplots(3, 3, figsize=(18, 13))
    for ax, (title, names, key) in zip(axes.flat, panels, strict=False):
        _bars(ax, title, [by_name[n] for n in names if n in by_name], key, labels)
    _slow(axes.flat[8], by_name.get("slow-consumer"), labels)
    commit = results["git"]["commit"][:12]
    fig.suptitle(
        f"Benchmarks {results['started_utc']} · commit {commit} · medians · "
        "server on CPU 0, load on CPU 1",
        fontsize=13,
    )
    handles = [plt.Rectangle((0, 0), 1, 1, color=COLORS.get(k, "grey")) for k in results["servers"]]
    fig.legend(handles, [labels[k] for k in results["servers"]], loc="lower center", ncol=5)
    fig.tight_layout(rect=(0, 0.04, 1, 0.96))
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _bars(ax, title: str, scenarios: list[dict], key, labels: dict) -> None:
    ax.set_title(title, fontsize=11)
    if not any(s["median"] for s in scenarios):
        _empty(ax)
        return
    groups: list[tuple[str, str]] = []  # (scenario name, metric key)
    for s in scenarios:
        keys = key if isinstance(key, tuple) else (key or s["headline"],)
        groups += [(s, k) for k in keys]
    kinds = [k for k in labels if any(k in s["servers"] for s in scenarios)]
    width = 0.8 / max(1, len(kinds))
    for i, kind in enumerate(kinds):
        xs, ys = [], []
        for g, (s, k) in enumerate(groups):
            value = s["median"].get(kind, {}).get(k)
            if value is not None:
                xs.append(g + (i - (len(kinds) - 1) / 2) * width)
                ys.append(value)
        bars = ax.bar(xs, ys, width, color=COLORS.get(kind, "grey"))
        for bar, y in zip(bars, ys, strict=True):
            text = f"{y:,.0f}" if y >= 100 else f"{y:.3g}"
            ax.annotate(
                text,
                (bar.get_x() + bar.get_width() / 2, y),
                ha="center",
                va="bottom",
                fontsize=7,
                rotation=90 if len(kinds) * len(groups) > 6 else 0,
            )
    names = [
        s["name"] if len(groups) == len(scenarios) else k.removesuffix("_ms") for s, k in groups
    ]
    ax.set_xticks(range(len(groups)), names)
    ax.margins(y=0.25)
    ax.grid(axis="y", alpha=0.3)


def _slow(ax, s: dict | None, labels: dict) -> None:
    ax.set_title("Slow consumers: server RSS over time, MB ↓", fontsize=11)
    if not s or not s["runs"]:
        _empty(ax)
        return
    for kind, runs in s["runs"].items():
        series = runs[0].get("rss_series") or []
        if series:
            ax.plot(
                [t for t, _ in series],
                [mb for _, mb in series],
                color=COLORS.get(kind, "grey"),
                label=labels[kind],
            )
    ax.set_xlabel("seconds")
    ax.grid(alpha=0.3)


def _empty(ax) -> None:
    ax.text(0.5, 0.5, "not in this run", ha="center", va="center", color="grey")
    ax.set_xticks([])
    ax.set_yticks([])
