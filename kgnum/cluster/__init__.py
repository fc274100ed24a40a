"""Cluster engine (planned): METIS partitions held by Dask workers. Built so far: ``partition``
(METIS via pymetis or random, saved and reused, with the edge-cut and traffic report)."""
