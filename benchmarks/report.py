"""The report of a run: the table, the README's markdown, the chart and
results.json."""

from __future__ import annotations

import pathlib



def passed(record: dict, peer: str):
  target = record["targets"].get(peer)
  return None if target is None else record["ratios"][peer] >= target


def rows(result: dict):
  """(record, ours: its systems entry or None, peer, ratio, target or None) of each
  ratio a case's comparisons hold."""
  for record in result.get("comparisons", []):
    ours = next(iter(v for k, v in record["systems"].items() if k not in record["ratios"]),
                None)
    for peer, ratio in record["ratios"].items():
      yield record, ours, peer, ratio, record["targets"].get(peer)


def table(results: dict) -> str:
  lines = [f"{'case':<11} {'comparison':<38} {'ours':>12} {'peer':<24} {'ratio':>7} "
           f"{'target':>7}"]
  for case, result in results["cases"].items():
    if "error" in result:
      lines.append(f"{case:<11} ERROR: {result['error'].splitlines()[0]}")
      continue
    for record, ours, peer, ratio, target in rows(result):
      ours_text = f"{ours['value']:.1f}" if ours else ""
      verdict = "" if target is None else (" ok" if ratio >= target else " MISS")
      lines.append(f"{case:<11} {record['name']:<38} {ours_text:>12} {peer:<24} "
                   f"{ratio:>6.2f}x {'' if target is None else f'{target:.2f}':>7}{verdict}")
    if case == "export":
      for name, info in result["exports"].items():
        lines.append(f"{case:<11} {name:<38} {info['export_s']:>10.1f} s  peak "
                     f"{info['peak_rss_mb']:.0f} MB, {info['size_mb']:.0f} MB on disk")
    if case == "serving":
      for name, latency in result["latency_ms"].items():
        lines.append(f"{case:<11} grpc overhead, {name} model{'':<17} "
                     f"{latency['grpc_overhead']:>10.2f} ms (target <= 2 ms)")
      for name, cold in result["cold_start"].items():
        lines.append(f"{case:<11} cold start {name:<27} {cold['total_s']:>10.1f} s  (load "
                     f"{cold['load_s']:.1f} s + {cold['warmup_requests']} warmup requests)")
  return "\n".join(lines)


def markdown(results: dict) -> str:
  m = results["machine"]
  out = [f"Measured {results['finished'][:10]} on {m['cpu']}, {m['cores']} cores, "
         f"{m['memory_read_gb_s']:.1f} GB/s memory read "
         f"({'quick' if results['quick'] else 'base sizes'}, "
         f"median of {results['repeats']} runs in turns; `benchmarks/results.json`).", "",
         "| case | ours | against | ratio | target |", "|---|---|---|---|---|"]
  for result in results["cases"].values():
    for record, ours, peer, ratio, target in rows(result):
      value = f"{ours['value']:,.1f} {record['unit']}" if ours else ""
      mark = "" if target is None else (" ✓" if ratio >= target else " ✗")
      out.append(f"| {record['name']} | {value} | {peer} | {ratio:.2f}{mark} | "
                 f"{'' if target is None else f'≥ {target:g}'} |")
  return "\n".join(out)


def chart(results: dict, path: pathlib.Path) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  rows = []
  for case, result in results["cases"].items():
    for record in result.get("comparisons", []):
      for peer, ratio in record["ratios"].items():
        rows.append((case, f"{record['name']} / {peer}", ratio, record["targets"].get(peer)))
  cases = list(dict.fromkeys(r[0] for r in rows))
  if not rows:
    rows, cases = [("none", "no comparisons", 0.0, None)], ["none"]
  heights = [max(1, sum(r[0] == c for r in rows)) for c in cases]
  figure, axes = plt.subplots(len(cases), 1, figsize=(9, 1.2 + 0.45 * sum(heights)),
                              gridspec_kw={"height_ratios": heights}, squeeze=False)
  for axis, case in zip(axes[:, 0], cases):
    mine = [r for r in rows if r[0] == case]
    y = list(range(len(mine)))[::-1]
    colors = ["#4c72b0" if r[3] is None else ("#55a868" if r[2] >= r[3] else "#c44e52")
              for r in mine]
    axis.barh(y, [r[2] for r in mine], color=colors)
    for yy, r in zip(y, mine):
      if r[3] is not None:
        axis.plot([r[3], r[3]], [yy - 0.4, yy + 0.4], color="black", linewidth=2)
      axis.text(r[2], yy, f" {r[2]:.2f}", va="center", fontsize=8)
    axis.axvline(1.0, color="gray", linestyle="--", linewidth=0.8)
    axis.set_yticks(y)
    axis.set_yticklabels([r[1] for r in mine], fontsize=8)
    axis.set_title(case, fontsize=9, loc="left")
    axis.set_xlim(0, max(max(r[2] for r in mine), max((r[3] or 0) for r in mine), 1.0) * 1.25)
  m = results["machine"]
  figure.suptitle(f"ours / peer (> 1: ours faster; black: target) — {m['cpu']}, {m['cores']} "
                  f"cores{' — quick' if results['quick'] else ''}", fontsize=9)
  figure.tight_layout()
  figure.savefig(path, dpi=110)
  plt.close(figure)
