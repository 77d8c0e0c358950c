"""gpu-check.txt: the report's summary, a line per step."""

from __future__ import annotations


def summary(report: dict) -> str:
    env, steps = report["environment"], report["steps"]
    lines = [
        f"gpu-check ({report['mode']}{', quick' if report.get('quick') else ''}): "
        f"{'PASSED' if report['ok'] else 'FAILED'} in {report['seconds']:.0f} s (budget {report['budget_s']:.0f} s)",
        f"machine     {env.get('gpu', 'cpu')}  python {env['python']}  torch {env['torch']} (CUDA {env['cuda']})  "
        f"transformers {env['transformers']}",
        f"peak        dense bf16 matmul {report['dense_bf16_peak_tflops']:.3g} TFLOP/s (measured here)",
    ]
    for name, step in steps.items():
        head = f"{name:<12}{'ok  ' if step.get('ok') else 'FAIL'} {step.get('seconds', 0):6.1f} s"
        if name == "tests":
            head += (
                f"  {step.get('tests', 0)} tests, {step.get('failures', 0)} failures, {step.get('errors', 0)} "
                f"errors on {step['device']}"
            )
        elif name.startswith("bench") and "speedup" in step:
            shape = step["shape"]
            extra = f", extrapolated {step['speedup_extrapolated']:.0f}x" if step.get("speedup_extrapolated") else ""
            head += (
                f"  {shape['layers']}x{shape['width']} ctx {shape['context']} {step['dtype']}: fast "
                f"{step['fast_seconds']:.2f} s, speed-up {step['speedup']:.1f}x at {step['reference_context']} "
                f"tokens{extra}; {step['tflops']:.3g} TFLOP/s = {100 * step['fraction_of_bf16_peak']:.2g}% of bf16 "
                f"peak; peak mem {step['peak_memory_mb']:.0f} MB"
            )
            if "overlap" in step:
                head += f"; stage overlap {step['overlap']['overlap_ms']:.1f} ms"
            graphs = step["graphs"]
            head += (
                f"; cuda_graphs {graphs['seconds']:.2f} s ({graphs['speedup']:.2f}x the fast path, "
                f"{graphs['cache']['captured']} captured, {graphs['cache']['failed']} failed)"
            )
        elif name == "long" and "seconds" in step and step.get("ok") is not None and "hvps" in step:
            head += (
                f"  2048 tokens exact: {step['seconds']:.1f} s, {step['hvps']} HVPs, peak mem "
                f"{step['peak_memory_mb']:.0f} MB"
            )
        elif name == "service" and step.get("latency_ms"):
            head += (
                f"  {step['succeeded']}/{step['requests']} requests: latency p50 {step['latency_ms']['p50']:.0f} ms, "
                f"p95 {step['latency_ms']['p95']:.0f} ms; queue overhead p50 {step['queue_overhead_ms']['p50']:.0f} ms"
            )
        if step.get("error"):
            head += f"  error: {step['error']}"
        if step.get("skipped"):
            head += f"  skipped: {step['skipped']}"
        lines.append(head)
    return "\n".join(lines)
