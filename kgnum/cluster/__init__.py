"""Cluster engine: METIS partitions of the entities held by Dask workers. Not built yet."""
