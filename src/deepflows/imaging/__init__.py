"""Microscopy: OME-Zarr I/O, tiled inference with Dask, synthetic defocus and focus-quality scoring."""
