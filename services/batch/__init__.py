"""Batches: many ``propose_trades`` computations on one or more packs, on a Dask cluster.

``engine`` owns the Dask side: a ``LocalCluster`` (one process per core, one thread and one BLAS
thread each) or an existing scheduler, each pack sent to the workers once, estimation shared by
every proposal with the same pack, symbols and estimation settings, and results handed back as
they finish. It computes proposals only; validation, access, metadata and history stay with the
capability runner, which the agent's ``run_batch`` wraps around it.
"""
