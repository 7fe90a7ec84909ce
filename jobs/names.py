"""The lab's names, declared once and read by every layer: serving graphs, benchmark modes in
the order they run, node groups, run profiles. Part of the results contract
(`<run id>/<graph>/<mode>/...`), so shipped into the Jobs with the code that writes it.
"""
GRAPHS = ("agg", "disagg")
MODES = ("concurrency_sweep", "multi_turn", "sequence_distribution", "prefix_cache")
GPU_GROUPS = ("prefill", "decode")  # the GPU node groups; a run records those its graph uses
NODE_GROUPS = ("system", *GPU_GROUPS)
PROFILES = ("full", "quick")  # full = the benchmark plan as configured; quick = same shapes, short
