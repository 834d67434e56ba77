"""The retrieval index: a VLAD vector per image over a codebook learned from the collection,
which shortlists the images a query verifies (:mod:`.vlad` the vectors, :mod:`.table` their
tables, :mod:`.build` training and upkeep, :mod:`.plan` the choice per query, :mod:`.shortlist`
the Dask side)."""
