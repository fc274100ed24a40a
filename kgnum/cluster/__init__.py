"""Cluster engine (``--backend dask``): METIS partitions held by Dask workers. ``partition``
(METIS via pymetis or random, saved and reused, with the edge-cut and traffic report), ``engine``
(the driver: parts on workers, rounds of pulled rows and pushed deltas, recovery of a lost
worker's part), ``store`` (a part's rows and Adagrad state on its worker) and ``checkpoint``
(the parts' checkpoints, assembled into one model)."""
