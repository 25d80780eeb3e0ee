"""The ugd command (``cli.main``, Typer) and the application layer above the kernel.

``cli.run.generate_to_dir`` runs a :class:`cli.spec.RunSpec` to a folder, in-process or
on Ray (``cli.distributed.RayExecutor``); ``cli.tune`` searches sampler knobs;
``cli.bench`` holds the benchmark-suite protocols and cell cache. See docs/architecture.md.
"""
